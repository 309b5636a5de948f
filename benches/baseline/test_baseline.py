"""The baseline runs: five frames through a throwaway redis-server give five results."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline  # noqa: E402

MODEL = baseline.ROOT / "models/artifacts/hmr2-tiny.pt"


@pytest.fixture
def redis_url():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make setup installs it)")
    with baseline.redis_server() as url:
        yield url


def textured(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) % 64 * 4], axis=-1)
    noise = rng.integers(-20, 20, size=(h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def test_baseline_answers_every_job(tmp_path: Path, redis_url: str):
    if not MODEL.exists():
        pytest.skip("the tiny model is missing (run `make setup`)")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        textured(320, 180, i).save(frames / f"frame-{i:03}.jpg", quality=90)
    index = [
        {"file": "frame-000.jpg", "boxes": []},
        {"file": "frame-001.jpg", "boxes": [[100, 20, 180, 170]]},
        {"file": "frame-002.jpg", "boxes": []},
    ]
    (frames / "frames.json").write_text(json.dumps({"frames": index}))

    report = baseline.main(
        ["--frames", str(frames), "--count", "5", "--model", str(MODEL), "--redis-url", redis_url,
         "--prefix", "t", "--json", str(tmp_path / "report.json")]
    )

    assert report["frames"] == 5 and report["frames_per_s"] > 0
    assert json.loads((tmp_path / "report.json").read_text())["frames"] == 5
    r = redis.Redis.from_url(redis_url)
    entries = r.xrange("t:results")
    assert len(entries) == 5
    results = [json.loads(fields[b"result"]) for _, fields in entries]
    assert [x["job_id"] for x in results] == [f"baseline:{i}" for i in range(5)]
    for x in results:
        assert x["status"] == "ok" and x["image_size"] == [320, 180]
        (person,) = x["people"]
        assert len(person["keypoints_2d"]) == 44 and len(person["body_pose"]) == 23
    assert results[1]["people"][0]["box"] == [100.0, 20.0, 180.0, 170.0]
    # Every job was acknowledged and deleted, as the old service's reply ended the request.
    assert r.xlen("t:jobs") == 0
    assert r.xpending("t:jobs", "t-baseline")["pending"] == 0


def test_the_fallback_client_does_the_same(tmp_path: Path, redis_url: str, monkeypatch):
    """Without redis-py (the GPU machine) the baseline speaks RESP through benches/baseline/resp.py."""
    if not MODEL.exists():
        pytest.skip("the tiny model is missing (run `make setup`)")
    import resp

    monkeypatch.setattr(baseline, "redis", resp)
    frames = tmp_path / "frames"
    frames.mkdir()
    textured(160, 120, 7).save(frames / "a.png")
    report = baseline.main(
        ["--frames", str(frames), "--count", "2", "--model", str(MODEL), "--redis-url", redis_url, "--prefix", "f"]
    )
    assert report["frames"] == 2
    r = redis.Redis.from_url(redis_url)
    results = [json.loads(f[b"result"]) for _, f in r.xrange("f:results")]
    assert [x["status"] for x in results] == ["ok", "ok"]
    assert r.xlen("f:jobs") == 0
