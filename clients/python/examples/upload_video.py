"""From an mp4 to tracked people: extract the frames with ffmpeg, submit them as one tracked
video, wait for the tracked output, write it as JSON and print a summary per track.

    python examples/upload_video.py clip.mp4 --url redis://127.0.0.1:6379 --out clip-tracks.json

Needs ffmpeg on PATH, the hmr2-client package (pip install ./clients/python) and workers on the
queue (same --prefix and --shards as theirs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

from hmr2_client import Client, VideoProgress, extract_frames, probe_fps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", type=Path, help="an mp4 (or any file ffmpeg reads)")
    ap.add_argument("--url", default="redis://127.0.0.1:6379", help="Redis URL; commas separate cluster seeds")
    ap.add_argument("--prefix", default="hmr2", help="the workers' queue.prefix")
    ap.add_argument("--shards", type=int, default=1, help="the workers' queue.shards")
    ap.add_argument("--out", type=Path, help="where to write the tracked output (default: <video>.tracks.json)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the tracked output")
    args = ap.parse_args()

    fps = probe_fps(args.video)
    video_id = f"{args.video.stem}-{uuid.uuid4().hex[:8]}"  # one id per upload
    with Client.connect(args.url, prefix=args.prefix, shards=args.shards) as client:
        with tempfile.TemporaryDirectory() as frames_dir:
            frames = extract_frames(args.video, frames_dir)  # every frame, as JPEG, in order
            print(f"{args.video}: {len(frames)} frames at {fps:g} fps -> video {video_id}")
            video = client.submit_video(video_id, frames, fps)

        def progress(p: VideoProgress) -> None:
            print(f"\r{p.answered}/{p.total} frames answered ({p.failed} failed)", end="", file=sys.stderr)

        out = client.wait_video(video, timeout=args.timeout, on_progress=progress)
        print(file=sys.stderr)

    path = args.out or args.video.with_suffix(".tracks.json")
    path.write_text(json.dumps(out.to_dict()))
    done = out.done
    print(f"{done.status}: {done.ok_frames} frames ok, {done.error_frames} failed, "
          f"{done.missing_frames} missing; {len(done.tracks)} tracks; written to {path}")
    print(f"{'track':>5} {'first':>6} {'last':>6} {'seen':>6} {'interpolated':>12}")
    for t in done.tracks:
        seen = t.frames - t.interpolated_frames
        print(f"{t.track_id:>5} {t.first_frame:>6} {t.last_frame:>6} {seen:>6} {t.interpolated_frames:>12}")
    return 0 if done.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
