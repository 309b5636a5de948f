"""Frames from a video file, with ffmpeg (found on PATH)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Union

__all__ = ["FfmpegError", "extract_frames", "probe_fps"]

PathLike = Union[str, "os.PathLike[str]"]


class FfmpegError(RuntimeError):
    """ffmpeg (or ffprobe) is missing, or failed on the file."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FfmpegError(
            f"`{name}` was not found on PATH; it is needed to read frames from a video file. "
            "Install ffmpeg (Debian/Ubuntu: `apt-get install ffmpeg`, macOS: `brew install ffmpeg`), "
            "or give a directory of JPEG/PNG frames instead."
        )
    return path


def _run(args: List[str], what: str) -> str:
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    except OSError as e:
        raise FfmpegError(f"{what}: cannot run {args[0]}: {e}") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise FfmpegError(f"{what}: {os.path.basename(args[0])} exited with {done.returncode}: {tail}")
    return done.stdout


def probe_fps(video: PathLike) -> float:
    """The frame rate of the first video stream of ``video`` (ffprobe's average rate, else its
    base rate)."""
    if not Path(video).is_file():
        raise FileNotFoundError(f"{os.fspath(video)}: no such file")
    out = _run(
        [
            _tool("ffprobe"),
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=avg_frame_rate,r_frame_rate",
            "-of",
            "json",
            os.fspath(video),
        ],
        f"reading the frame rate of {os.fspath(video)}",
    )
    streams = json.loads(out or "{}").get("streams") or []
    if not streams:
        raise FfmpegError(f"{os.fspath(video)}: no video stream")
    for key in ("avg_frame_rate", "r_frame_rate"):
        rate = streams[0].get(key, "0/0")
        try:
            fps = Fraction(rate)
        except (ValueError, ZeroDivisionError):
            continue
        if fps > 0:
            return float(fps)
    raise FfmpegError(f"{os.fspath(video)}: the video stream has no frame rate")


def extract_frames(video: PathLike, out_dir: PathLike, *, fps: Optional[float] = None, quality: int = 2) -> List[Path]:
    """Writes the frames of ``video`` as JPEG files ``000001.jpg``, ``000002.jpg``, ... into
    ``out_dir`` (created if missing) and returns them in order. Every frame of the file is
    kept as it is (no frame dropped or repeated), or, with ``fps``, the video is resampled to
    that rate. ``quality`` is ffmpeg's JPEG scale (2 = high, 31 = low)."""
    if not Path(video).is_file():
        raise FileNotFoundError(f"{os.fspath(video)}: no such file")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be above 0, got {fps!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = [_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", os.fspath(video)]
    if fps is not None:
        args += ["-vf", f"fps={fps}"]
    else:
        args += ["-vsync", "0"]
    args += ["-q:v", str(quality), "-f", "image2", os.fspath(out / "%06d.jpg")]
    _run(args, f"extracting the frames of {os.fspath(video)}")
    files = sorted((p for p in out.glob("*.jpg") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not files:
        raise FfmpegError(f"{os.fspath(video)}: ffmpeg wrote no frame")
    return files
