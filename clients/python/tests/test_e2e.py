"""End to end with a real hmr2-worker (tiny model, CPU, no detector: every frame is one
whole-frame person): tracked videos, results, the model hash, the CLI, the example and the
README's snippet. The worker binary comes from HMR2_WORKER_BIN (default
target/debug/hmr2-worker); a missing one fails these tests with what to build."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from hmr2_client import Client, VideoProgress
from hmr2_client.aio import AsyncClient

from conftest import ROOT, Worker, stick_figure, unique
from test_cli import cli, make_mp4
from test_vectors import schema

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "upload_video.py"
#: Bounds every wait for a worker's answer (the tiny model answers a frame in milliseconds).
WAIT_S = 120


def test_a_tracked_video_comes_back_whole_with_progress(worker: Worker, clip_dir: Path) -> None:
    with worker.client() as c:
        video = c.submit_video("walk", clip_dir, fps=10, include=["vertices"])
        seen: List[VideoProgress] = []
        out = c.wait_video(video, timeout=WAIT_S, on_progress=seen.append)
        done = out.done
        assert (done.status, done.frames, done.ok_frames, done.error_frames, done.missing_frames) == ("ok", 8, 8, 0, 0)
        assert [f.frame_number for f in out.frames] == list(range(8)) and not out.unreadable
        # One whole-frame person per frame: one track through the clip.
        assert [(t.track_id, t.first_frame, t.last_frame, t.frames) for t in done.tracks] == [(1, 0, 7, 8)]
        for f in out.frames:
            assert f.status == "ok" and [p.track_id for p in f.people] == [1]
            p = f.people[0]
            assert p.box_source == "frame" and p.box == [0.0, 0.0, 192.0, 144.0]
            assert len(p.keypoints_2d) == 44 and len(p.body_pose) == 23 and len(p.betas) == 10
            assert p.vertices is not None and len(p.vertices) == 6890
        assert seen[0] == VideoProgress("walk", 0, 0, 8, False)
        assert seen[-1] == VideoProgress("walk", 8, 0, 8, True)
        # Every frame's own result, each job once, in frame order.
        results = c.video_results("walk")
        assert [r.frame_number for r in results.results] == list(range(8))
        assert {r.status for r in results.results} == {"ok"}
        assert all(r.image_size == [192, 144] and len(r.people) == 1 for r in results.results)
        assert not results.unreadable
    # What the types write back of a real worker's output is what the schemas describe.
    for name, objs in (
        ("video-frame", [f.to_dict() for f in out.frames]),
        ("video-done", [done.to_dict()]),
        ("result", [r.to_dict() for r in results.results]),
    ):
        validator = schema(f"{name}.schema.json")
        for obj in objs:
            assert not [e.message for e in validator.iter_errors(obj)], name


def test_results_and_errors_of_single_frames(worker: Worker) -> None:
    with worker.client() as c:
        good = c.add_frame(stick_figure(3), job_id=unique("solo"), boxes=[[20, 10, 120, 130]])
        bad = c.add_frame(b"\xff\xd8 not a jpeg", job_id=unique("broken"))
        stream = c.layout.shard(0).results
        wanted = {good, bad}
        got: Dict[str, object] = {}
        for reply in c.results(stream, follow=True, timeout=WAIT_S):
            r = reply.result
            if r is not None and r.entry_id in wanted:
                got[r.entry_id] = r
                if len(got) == 2:
                    break
        ok, broken = got[good], got[bad]
        assert ok.status == "ok" and ok.people[0].box_source == "job" and ok.people[0].box == [20, 10, 120, 130]  # type: ignore[attr-defined]
        assert broken.status == "error" and broken.error.code == "invalid_image"  # type: ignore[attr-defined]


def test_the_model_hash(worker: Worker) -> None:
    with worker.client() as c:
        info = c.model_info()
    assert info is not None
    assert info.keypoint_names is not None and len(info.keypoint_names) == 44
    assert info.faces is not None and len(info.faces) == 13776 and len(info.faces[0]) == 3
    assert info.parents is not None and len(info.parents) == 24
    assert info.topology in ("smpl", "synthetic")
    assert info.meta and info.detector is None


def test_the_asyncio_client_end_to_end(worker: Worker, clip_dir: Path) -> None:
    async def main() -> None:
        async with AsyncClient.connect(worker.urls, prefix=worker.prefix) as c:
            video = await c.submit_video("walk-async", sorted(clip_dir.iterdir())[:5], fps=10)
            out = await c.wait_video(video, timeout=WAIT_S)
            assert out.done.status == "ok" and [f.frame_number for f in out.frames] == [0, 1, 2, 3, 4]
            replies = [r async for r in c.results(video_id="walk-async")]
            assert sorted(r.result.frame_number for r in replies if r.result) == [0, 1, 2, 3, 4]
            info = await c.model_info()
            assert info is not None and len(info.keypoint_names or []) == 44

    asyncio.run(asyncio.wait_for(main(), WAIT_S))


def test_a_sharded_queue_on_redis_cluster(redis_cluster: List[str], workdir: Path, clip_dir: Path) -> None:
    w = Worker(redis_cluster, unique("e2e-cluster"), workdir, shards=3, cluster=True)
    try:
        with w.client() as c:
            ids = ["cam-a", "cam-b", "cam-c", "cam-d"]
            assert len({c.layout.video_keys(v).shard for v in ids}) >= 2
            frames = sorted(clip_dir.iterdir())[:4]
            videos = [c.submit_video(v, frames, fps=10) for v in ids]
            for v in videos:
                out = c.wait_video(v, timeout=WAIT_S)
                assert out.done.status == "ok" and len(out.frames) == 4 and out.stream.startswith(f"{{{w.prefix}:{v.shard}}}")
            assert len(c.video_results("cam-a").results) == 4
            assert c.model_info() is not None
    finally:
        w.stop()


def test_the_cli_waits_and_writes_the_tracked_output(worker: Worker, clip_dir: Path, tmp_path: Path) -> None:
    mp4 = make_mp4(clip_dir, tmp_path / "walk.mp4", fps=10)
    out = tmp_path / "tracks.json"
    done = cli("--url", worker.urls[0], "--prefix", worker.prefix, "submit", str(mp4), "--out", str(out), timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^ok: 8 frames \(8 ok, 0 failed, 0 missing\), 1 tracks", done.stdout, re.M), done.stdout
    written = json.loads(out.read_text())
    assert written["done"]["status"] == "ok" and len(written["frames"]) == 8
    assert written["frames"][3]["people"][0]["track_id"] == 1


def test_the_upload_video_example(worker: Worker, clip_dir: Path, tmp_path: Path) -> None:
    mp4 = make_mp4(clip_dir, tmp_path / "walk.mp4", fps=10)
    out = tmp_path / "walk.json"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(mp4), "--url", worker.urls[0], "--prefix", worker.prefix, "--out", str(out)],
        capture_output=True, text=True, timeout=WAIT_S, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 frames at 10 fps" in done.stdout
    assert "ok: 8 frames ok, 0 failed, 0 missing; 1 tracks" in done.stdout
    # The per-track summary: track 1 from frame 0 to 7, seen in 8, interpolated in none.
    assert re.search(r"^\s+1\s+0\s+7\s+8\s+0$", done.stdout, re.M), done.stdout
    written = json.loads(out.read_text())
    assert [f["frame_number"] for f in written["frames"]] == list(range(8))
    assert written["done"]["tracks"][0]["track_id"] == 1


def readme_block() -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("<!-- test: python-readme -->")
    assert lines[start + 1] == "```python", "the marker must come right before a ```python block"
    end = lines.index("```", start + 2)
    block = lines[start + 2 : end]
    assert len(block) < 20, f"the README's Python example is {len(block)} lines"
    return "\n".join(block) + "\n"


def test_the_readme_python_example(worker: Worker, clip_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "readme_example.py"
    script.write_text(readme_block())
    env = dict(os.environ, HMR2_URL=worker.urls[0], HMR2_PREFIX=worker.prefix, HMR2_FRAMES=str(clip_dir))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=WAIT_S,
                          env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "0/8 frames answered" and "8/8 frames answered" in out
    assert "ok 8 frames, 1 tracks" in out
    assert out.index("ok 8 frames, 1 tracks") + 1 < len(out) and out[out.index("ok 8 frames, 1 tracks") + 1].startswith("0 [(1, [")
    assert sum(1 for line in out if line.startswith("clip-7:") and line.endswith(" ok")) == 8
    mesh = json.loads((ROOT / "models" / "artifacts" / "hmr2-tiny.mesh.json").read_text())
    assert out[-1] == str(mesh["keypoint_names"][:3])
