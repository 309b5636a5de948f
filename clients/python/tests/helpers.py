"""What the tests write as a worker would: results, tracked frames, a video's end."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, Optional

from hmr2_client import Client, SubmittedVideo

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) + b"\xff\xd9"


def image(n: int) -> bytes:
    return b"\xff\xd8" + n.to_bytes(4, "little") + b"frame"


def result(job_id: Optional[str], video_id: Optional[str], n: Optional[int], status: str = "ok", **extra: Any) -> str:
    r: Dict[str, Any] = {"v": 1, "job_id": job_id, "entry_id": f"{n}-0", "status": status, "people": []}
    if video_id is not None:
        r["video_id"] = video_id
    if n is not None:
        r["frame_number"] = n
    if status == "error":
        r["error"] = {"code": "invalid_image", "message": "image cannot be decoded"}
    r.update(extra)
    return json.dumps(r)


EYE = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def tracked_frame(video_id: str, n: int, status: str = "ok") -> Dict[str, Any]:
    person = {
        "track_id": 1,
        "box": [float(n), 10.0, n + 50.0, 200.0],
        "box_source": "frame",
        "global_orient": EYE,
        "body_pose": [EYE] * 23,
        "betas": [0.25] * 10,
        "pred_cam_t_full": [0.0, 0.1, 20.0],
        "focal_length": 5000.0,
        "keypoints_2d": [[float(n), 20.0]] * 44,
        "keypoints_3d": [[0.1, 0.2, 0.3]] * 44,
        "interpolated": n == 2,
    }
    f: Dict[str, Any] = {"v": 1, "video_id": video_id, "frame_number": n, "status": status, "people": [person]}
    if status == "error":
        f.update(error={"code": "invalid_image", "message": "bad"}, people=[])
    return f


def done_entry(video_id: str, frames: int, errors: int = 0) -> str:
    return json.dumps(
        {
            "v": 1,
            "video_id": video_id,
            "status": "ok",
            "frames": frames,
            "ok_frames": frames - errors,
            "error_frames": errors,
            "missing_frames": 0,
            "fps": 30.0,
            "tracks": [{"track_id": 1, "first_frame": 0, "last_frame": frames - 1, "frames": frames - errors, "interpolated_frames": 1}],
            "timings_ms": {"tracking": 2.5, "total": 900.0},
        }
    )


class FakeWorker(threading.Thread):
    """Answers a submitted video as a worker would: per-frame results (one twice, one an
    error, among another video's), then the tracked output at once."""

    def __init__(self, client: Client, video: SubmittedVideo, delay: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.c, self.video, self.delay = client, video, delay
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            v, r = self.video, self.c.redis
            time.sleep(self.delay)
            for n in range(v.frames):
                status = "error" if n == 1 else "ok"
                r.xadd(v.results, {"job_id": f"{v.video_id}:{n}", "result": result(f"{v.video_id}:{n}", v.video_id, n, status)})
                r.xadd(v.results, {"job_id": f"other:{n}", "result": result(f"other:{n}", "other", n)})
                if n == 0:
                    r.xadd(v.results, {"job_id": f"{v.video_id}:0", "result": result(f"{v.video_id}:0", v.video_id, 0)})
                time.sleep(0.05)
            pipe = r.pipeline(transaction=False)
            for n in range(v.frames):
                f = tracked_frame(v.video_id, n, "error" if n == 1 else "ok")
                pipe.xadd(v.output, {"frame": json.dumps(f)})
                if n == 0:
                    pipe.xadd(v.output, {"frame": json.dumps(tracked_frame("other", 0))})
                    pipe.xadd(v.output, {"frame": b'{"v":1'})
            pipe.xadd(v.output, {"done": done_entry("other", 1)})
            pipe.xadd(v.output, {"done": done_entry(v.video_id, v.frames, errors=1)})
            pipe.execute()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
