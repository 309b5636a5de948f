"""``python -m hmr2_client``: submit a video (a directory of frames, or a video file read with
ffmpeg) as one tracked video, optionally wait for its tracked output; print the model's
information."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO

import redis

from ._core import VideoOutput, VideoProgress, WaitTimeout
from .client import Client
from .frames import FfmpegError, extract_frames, probe_fps
from .job import JobError

DEFAULT_URL = "redis://127.0.0.1:6379"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def format_tracks(out: VideoOutput) -> str:
    """A table of the video's tracks: id, first and last frame, frames seen, interpolated."""
    rows = [("track", "first", "last", "frames", "interpolated")]
    for t in out.done.tracks:
        rows.append((str(t.track_id), str(t.first_frame), str(t.last_frame), str(t.frames), str(t.interpolated_frames)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def _progress_printer(stream: TextIO):  # type: ignore[no-untyped-def]
    def show(p: VideoProgress) -> None:
        of = f"/{p.total}" if p.total is not None else ""
        failed = f", {p.failed} failed" if p.failed else ""
        state = "done" if p.done else "answered"
        stream.write(f"\r{state}: {p.answered}{of} frames{failed}   ")
        if p.done:
            stream.write("\n")
        stream.flush()

    return show


def _connection_options(p: argparse.ArgumentParser, sub: bool) -> None:
    """The queue's options, on the main parser and again on each command (so they may come
    before or after it; a command's copy leaves the value alone unless given)."""
    default: Dict[str, Any] = {"default": argparse.SUPPRESS if sub else None}
    p.add_argument(
        "--url",
        action="append",
        help="Redis URL; repeat (or separate with commas) for Redis Cluster seeds "
        f"(default: $HMR2_URL, else $HMR2_REDIS__URL, else {DEFAULT_URL})",
        **default,
    )
    p.add_argument("--prefix", help="the queue's prefix (default: $HMR2_QUEUE__PREFIX, else hmr2)", **default)
    p.add_argument("--shards", type=int, help="the queue's shards (default: $HMR2_QUEUE__SHARDS, else 1)", **default)
    p.add_argument("--cluster", action="store_true", help="the URL is a Redis Cluster seed", **default)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hmr2_client",
        description="Submit a video (a directory of frames, or a video file read with ffmpeg) to "
        "hmr2-worker as one tracked video, and wait for its tracked output; print the model's "
        "information.",
    )
    _connection_options(p, sub=False)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("submit", help="submit a video as one tracked video")
    s.add_argument("input", help="a directory of JPEG/PNG frames (name order), or a video file (read with ffmpeg)")
    s.add_argument("--fps", type=float, help="frame rate; required for a directory; for a video file, resample to it "
                   "(default: the file's own rate, every frame kept)")
    s.add_argument("--video-id", help="the video's id (default: the input's name and a random suffix)")
    s.add_argument("--vertices", action="store_true", help="ask for the 6890 mesh vertices of each person")
    s.add_argument("--reply-to", help="stream for the tracked output (under the shard's results stream)")
    s.add_argument("--base64", action="store_true", help="send images as base64 inside the JSON, not as raw bytes")
    s.add_argument("--wait", action="store_true", help="wait for the tracked output and print the tracks")
    s.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait with --wait (default 3600)")
    s.add_argument("--out", type=Path, help="write the tracked output (JSON) to this file (implies --wait)")
    _connection_options(s, sub=True)

    m = sub.add_parser("model", help="print the model information the workers published")
    _connection_options(m, sub=True)
    return p


def _client(args: argparse.Namespace) -> Client:
    urls: List[str] = []
    for u in args.url or [_env("HMR2_URL", _env("HMR2_REDIS__URL", DEFAULT_URL))]:
        urls += [x for x in u.split(",") if x.strip()]
    prefix = args.prefix or _env("HMR2_QUEUE__PREFIX", "hmr2")
    shards = args.shards if args.shards is not None else int(_env("HMR2_QUEUE__SHARDS", "1"))
    cluster: Optional[bool] = args.cluster
    if cluster is None and os.environ.get("HMR2_REDIS__CLUSTER", "").lower() in ("1", "true", "yes"):
        cluster = True
    return Client.connect(urls, prefix=prefix, shards=shards, cluster=cluster)


def _submit(args: argparse.Namespace, client: Client) -> int:
    src = Path(args.input)
    err = sys.stderr
    video_id = args.video_id or f"{src.stem or 'video'}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="hmr2-frames-") as tmp:
        if src.is_dir():
            if args.fps is None:
                err.write("error: --fps is required with a directory of frames\n")
                return 2
            frames: object = src
            fps = args.fps
        elif src.is_file():
            fps = args.fps if args.fps is not None else probe_fps(src)
            err.write(f"extracting the frames of {src} with ffmpeg ...\n")
            frames = extract_frames(src, tmp, fps=args.fps)
        else:
            err.write(f"error: {src}: no such file or directory\n")
            return 2

        def sent(n: int, total: int) -> None:
            err.write(f"\rsent {n}/{total} frames   ")
            err.flush()

        video = client.submit_video(
            video_id,
            frames,
            fps,
            include=["vertices"] if args.vertices else (),
            reply_to=args.reply_to,
            raw=not args.base64,
            on_progress=sent,
        )
    err.write(
        f"\nvideo {video.video_id}: {video.frames} frames at {video.fps:g} fps on shard {video.shard}; "
        f"tracked output on {video.output}\n"
    )
    print(video.video_id)
    if not (args.wait or args.out):
        return 0
    out = client.wait_video(video, timeout=args.timeout, on_progress=_progress_printer(err))
    d = out.done
    print(
        f"{d.status}: {d.frames} frames ({d.ok_frames} ok, {d.error_frames} failed, {d.missing_frames} missing), "
        f"{len(d.tracks)} tracks, tracking {d.timings_ms.tracking:.0f} ms"
    )
    print(format_tracks(out))
    if args.out:
        args.out.write_text(json.dumps(out.to_dict()))
        err.write(f"tracked output written to {args.out}\n")
    return 0 if d.status == "ok" else 1


def _model(client: Client) -> int:
    info = client.model_info()
    if info is None:
        sys.stderr.write(f"no model information on {client.layout.model}: has a worker started on this queue?\n")
        return 1
    summary = {
        "meta": info.meta,
        "detector": info.detector,
        "topology": info.topology,
        "faces": len(info.faces) if isinstance(info.faces, list) else None,
        "keypoint_names": info.keypoint_names,
        "joint_names": info.joint_names,
    }
    print(json.dumps(summary, indent=1))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with _client(args) as client:
            if args.command == "submit":
                return _submit(args, client)
            return _model(client)
    except (JobError, FfmpegError, FileNotFoundError, ValueError, TypeError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except WaitTimeout as e:
        sys.stderr.write(f"\nerror: {e}\n")
        return 3
    except redis.RedisError as e:
        sys.stderr.write(f"\nerror: Redis: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
