"""``python -m hmr2_client`` without a worker: what it sends, and what it says when it cannot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from hmr2_client import Client, Video, parse_job

from conftest import unique


def cli(*args: str, env: Dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "hmr2_client", *args], capture_output=True, text=True, timeout=timeout, env=full,
        stdin=subprocess.DEVNULL,
    )


def make_mp4(frames_dir: Path, out: Path, fps: int = 10) -> Path:
    """An mp4 (MPEG-4 part 2) of the frames of ``frames_dir``, made with ffmpeg."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not on PATH (apt-get install ffmpeg): the video-file paths cannot run")
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-framerate", str(fps),
         "-i", str(frames_dir / "frame-%03d.jpg"), "-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p", str(out)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return out


def jobs(c: Client, video_id: str) -> List[bytes]:
    """The jobs of the video ``video_id`` on its shard's job stream."""
    tag = f'"video_id":"{video_id}"'.encode()
    return [e[1][b"job"] for e in c.redis.xrange(c.layout.video_keys(video_id).jobs, "-", "+") if tag in e[1][b"job"]]


def test_submit_a_directory_of_frames(redis_node: str, clip_dir: Path) -> None:
    prefix = unique("cli")
    done = cli("submit", str(clip_dir), "--fps", "12", "--video-id", "walk", "--url", redis_node, "--prefix", prefix)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "walk"
    assert "8 frames at 12 fps" in done.stderr and f"{prefix}:results:video:walk" in done.stderr
    with Client.connect(redis_node, prefix=prefix) as c:
        sent = [parse_job(j, True) for j in jobs(c, "walk")]
    assert [j.job_id for j in sent] == [f"walk:{n}" for n in range(8)]
    assert all(j.video == Video(8, 12.0) for j in sent)


def test_submit_reads_the_queue_from_the_workers_environment(redis_cluster: List[str], clip_dir: Path) -> None:
    prefix = unique("cli")
    env = {"HMR2_REDIS__URL": ",".join(redis_cluster), "HMR2_QUEUE__PREFIX": prefix, "HMR2_QUEUE__SHARDS": "3"}
    env["HMR2_URL"] = ""
    done = cli("submit", str(clip_dir), "--fps", "5", "--video-id", "env-walk", "--vertices", env=env)
    assert done.returncode == 0, done.stderr
    with Client.connect(redis_cluster, prefix=prefix, shards=3) as c:
        sent = [parse_job(j, True) for j in jobs(c, "env-walk")]
    assert len(sent) == 8 and sent[0].include == ("vertices",)


def test_submit_a_video_file_extracts_its_frames_with_ffmpeg(redis_node: str, clip_dir: Path, tmp_path: Path) -> None:
    mp4 = make_mp4(clip_dir, tmp_path / "walk.mp4", fps=10)
    prefix = unique("cli")
    done = cli("--url", redis_node, "--prefix", prefix, "submit", str(mp4))
    assert done.returncode == 0, done.stderr
    video_id = done.stdout.strip()
    assert video_id.startswith("walk-")
    with Client.connect(redis_node, prefix=prefix) as c:
        sent = [parse_job(j, True) for j in jobs(c, video_id)]
        assert len(sent) == 8 and sent[0].video == Video(8, 10.0)
        # Resampled to a lower rate: fewer frames, the rate asked for.
        done = cli("--url", redis_node, "--prefix", prefix, "submit", str(mp4), "--fps", "5", "--video-id", "half")
        assert done.returncode == 0, done.stderr
        half = [parse_job(j, True) for j in jobs(c, "half")]
        assert len(half) == 4 and half[0].video == Video(4, 5.0)


def test_clear_errors(redis_node: str, clip_dir: Path, tmp_path: Path) -> None:
    no_fps = cli("--url", redis_node, "submit", str(clip_dir))
    assert no_fps.returncode == 2 and "--fps is required" in no_fps.stderr
    missing = cli("--url", redis_node, "submit", str(tmp_path / "nothing"), "--fps", "3")
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really a video")
    no_ffmpeg = cli("--url", redis_node, "submit", str(video), env={"PATH": str(tmp_path)})
    assert no_ffmpeg.returncode == 2
    assert "was not found on PATH" in no_ffmpeg.stderr and "ffmpeg" in no_ffmpeg.stderr
    model = cli("--url", redis_node, "--prefix", unique("none"), "model")
    assert model.returncode == 1 and "has a worker started" in model.stderr
    down = cli("--url", "redis://127.0.0.1:1", "submit", str(clip_dir), "--fps", "3")
    assert down.returncode == 1 and "Redis" in down.stderr
