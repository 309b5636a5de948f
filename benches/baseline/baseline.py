"""The old service's way of working, as the benchmark baseline.

    .venv/bin/python benches/baseline/baseline.py --frames DIR --count N --model FILE
        [--device cpu|cuda] [--redis-url URL] [--prefix P] [--json OUT]

It does per frame what the old Flask endpoint (``POST /pose/hybrid``) did per request, with Redis
in place of HTTP so it reads the same jobs the Rust worker reads:

1. pop one job: ``XREADGROUP ... COUNT 1`` (the old service took one frame per request);
2. parse the job JSON, base64-decode ``image_base64``, decode with PIL into an RGB numpy array;
3. the HMR2 crop of every box (or the whole frame) with the reference implementation
   ``models/crop.py`` (scikit-image Gaussian over the whole frame when the crop shrinks it, then a
   bilinear warp: what 4D-Humans' ``ViTDetDataset`` does);
4. the same TorchScript model through ``torch.jit.load``, fp32, batch 1 (one person at a time),
   under ``no_grad``; outputs to the CPU; on CUDA ``torch.cuda.empty_cache()`` after every frame;
5. full-frame camera and 2D keypoints in numpy, the result JSON, then ``XADD`` to the results
   stream + ``XACK`` + ``XDEL`` in one MULTI/EXEC.

With ``--frames DIR`` (written by ``hmr2 bench --save-frames DIR``) it first enqueues
``--count`` jobs made of those frames, exactly as the Rust bench does (base64 in the job JSON, the
same boxes), on a throwaway ``redis-server`` unless ``--redis-url``. The clock starts after the
model is loaded and warmed up, and stops after the last result is published.
"""

import argparse
import base64
import contextlib
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.crop import crop  # noqa: E402  (the reference HMR2 crop)

try:
    import redis
except ImportError:  # e.g. the GPU machine, which has no network to install redis-py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import resp as redis  # noqa: E402  (the same calls over a minimal RESP client)

FOCAL_LENGTH = 5000.0
MODEL_IMAGE_SIZE = 256.0
STAGES = ("pop", "parse", "decode", "crop", "forward", "post", "publish")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway ``redis-server`` without persistence on a free port; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (make setup installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hmr2-baseline-redis-") as d:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}"
            client = redis.Redis.from_url(url)
            for _ in range(500):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.01)
            else:
                raise RuntimeError(f"redis-server on port {port} did not start")
            client.close()
            yield url
        finally:
            proc.kill()
            proc.wait()


def load_frames(folder: Path) -> List[Dict]:
    """The frames of ``folder``: ``frames.json`` (files and boxes) when present, else every
    .jpg/.jpeg/.png without boxes."""
    index = folder / "frames.json"
    if index.exists():
        entries = json.loads(index.read_text())["frames"]
    else:
        names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        entries = [{"file": n, "boxes": []} for n in names]
    if not entries:
        raise SystemExit(f"no frames in {folder}")
    return [{"bytes": (folder / e["file"]).read_bytes(), "boxes": e.get("boxes") or []} for e in entries]


def enqueue(r: redis.Redis, jobs_key: str, frames: List[Dict], count: int) -> None:
    """``count`` jobs cycling through ``frames``, as the Rust bench enqueues them."""
    encoded = [base64.b64encode(f["bytes"]).decode("ascii") for f in frames]
    for start in range(0, count, 64):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(count, start + 64)):
            k = i % len(frames)
            job = {"v": 1, "job_id": f"baseline:{i}", "video_id": "baseline", "frame_number": i}
            if frames[k]["boxes"]:
                job["boxes"] = frames[k]["boxes"]
            job["image_base64"] = encoded[k]
            pipe.xadd(jobs_key, {"job": json.dumps(job)})
        pipe.execute()


def cam_full(pred_cam: np.ndarray, center: Sequence[float], box_size: float, w: int, h: int):
    """Full-frame camera translation and focal length (shared/HMR2_FACTS.md "Camera")."""
    s, tx, ty = (float(v) for v in pred_cam)
    focal = FOCAL_LENGTH / MODEL_IMAGE_SIZE * max(w, h)
    bs = box_size * s + 1e-9
    t = np.array([2 * (center[0] - w / 2) / bs + tx, 2 * (center[1] - h / 2) / bs + ty, 2 * focal / bs])
    return t, focal


def project(points: np.ndarray, t: np.ndarray, focal: float, w: int, h: int) -> np.ndarray:
    p = points + t
    z = np.where(np.abs(p[:, 2:3]) < 1e-9, 1e-9, p[:, 2:3])
    return p[:, :2] / z * focal + np.array([w / 2, h / 2])


def process(model, device: torch.device, job: Dict, timings: Dict[str, float]) -> Dict:
    """One job, the old way. Fills ``timings`` (seconds per stage)."""
    t = time.perf_counter()
    data = base64.b64decode(job["image_base64"])
    timings["parse"] += time.perf_counter() - t

    t = time.perf_counter()
    with Image.open(io.BytesIO(data)) as im:
        image = np.asarray(im.convert("RGB"))
    h, w = image.shape[:2]
    timings["decode"] += time.perf_counter() - t

    people = []
    for box in job.get("boxes") or [[0.0, 0.0, float(w), float(h)]]:
        t = time.perf_counter()
        patch, info = crop(image, box)
        timings["crop"] += time.perf_counter() - t

        t = time.perf_counter()
        with torch.no_grad():
            out = model(torch.from_numpy(patch).unsqueeze(0).to(device))
            out = {k: v.cpu().numpy()[0] for k, v in out.items()}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        timings["forward"] += time.perf_counter() - t

        t = time.perf_counter()
        cam_t, focal = cam_full(out["pred_cam"], info["center"], info["box_size"], w, h)
        kp3d = out["keypoints_3d"]
        people.append(
            {
                "box": [float(v) for v in box],
                "box_center": info["center"],
                "box_size": info["box_size"],
                "pred_cam": out["pred_cam"].tolist(),
                "pred_cam_t_full": cam_t.tolist(),
                "focal_length": focal,
                "global_orient": out["global_orient"].tolist(),
                "body_pose": out["body_pose"].tolist(),
                "betas": out["betas"].tolist(),
                "keypoints_3d": kp3d.tolist(),
                "keypoints_2d": project(kp3d, cam_t, focal, w, h).tolist(),
            }
        )
        timings["post"] += time.perf_counter() - t
    return {
        "v": 1,
        "job_id": job.get("job_id"),
        "video_id": job.get("video_id"),
        "frame_number": job.get("frame_number"),
        "status": "ok",
        "image_size": [w, h],
        "people": people,
        "worker": f"{platform.node()}/{os.getpid()}",
        "device": str(device),
        "model": "baseline",
    }


def percentile(sorted_values: List[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), int(np.ceil(p / 100 * len(sorted_values)))))
    return sorted_values[rank - 1]


def run(url: str, args: argparse.Namespace) -> Dict:
    r = redis.Redis.from_url(url)
    jobs_key, results_key, group = f"{args.prefix}:jobs", f"{args.prefix}:results", f"{args.prefix}-baseline"
    if args.frames is not None:
        enqueue(r, jobs_key, load_frames(args.frames), args.count)
    try:
        r.xgroup_create(jobs_key, group, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise

    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load, as the old service
        model = torch.jit.load(str(args.model), map_location=device).eval()
    # The old service was up and had served requests before the ones measured: model, crop
    # (scikit-image's import) and decoder are warm.
    crop(np.zeros((720, 1280, 3), dtype=np.uint8), [0, 0, 1280, 720])
    with torch.no_grad():
        for _ in range(3):
            model(torch.zeros(1, 256, 256, 3, dtype=torch.uint8, device=device))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()

    timings = {k: 0.0 for k in STAGES}
    latencies: List[float] = []
    done = 0
    t0 = time.perf_counter()
    while done < args.count:
        t = time.perf_counter()
        reply = r.xreadgroup(group, "baseline", {jobs_key: ">"}, count=1, block=1000)
        if not reply:
            break  # the stream ran dry
        entry_id, fields = reply[0][1][0]
        job = json.loads(fields[b"job"])
        timings["pop"] += time.perf_counter() - t
        result = process(model, device, job, timings)
        result["timings_ms"] = {"total": (time.perf_counter() - t) * 1e3}
        tp = time.perf_counter()
        pipe = r.pipeline(transaction=True)
        pipe.xadd(results_key, {"job_id": result["job_id"] or "", "result": json.dumps(result)})
        pipe.xack(jobs_key, group, entry_id)
        pipe.xdel(jobs_key, entry_id)
        pipe.execute()
        timings["publish"] += time.perf_counter() - tp
        latencies.append((time.perf_counter() - t) * 1e3)
        done += 1
    wall = time.perf_counter() - t0
    latencies.sort()
    report = {
        "frames": done,
        "seconds": wall,
        "frames_per_s": done / wall if wall > 0 else 0.0,
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
        },
        "stage_ms_per_frame": {k: v * 1e3 / max(done, 1) for k, v in timings.items()},
        "device": str(device),
        "model": str(args.model),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "method": "XREADGROUP COUNT 1, base64, PIL, models/crop.py, torch.jit batch 1 fp32, "
        "XADD+XACK+XDEL; clock from after warm-up to the last result published",
    }
    if args.cleanup:
        r.delete(jobs_key, results_key)
    r.close()
    return report


def main(argv: Optional[List[str]] = None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=Path, help="frames to enqueue first (from `hmr2 bench --save-frames`)")
    ap.add_argument("--count", type=int, default=200, help="jobs to process")
    ap.add_argument("--model", type=Path, default=ROOT / "models/artifacts/hmr2-tiny.pt")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--redis-url", help="Redis to use (default: a throwaway redis-server)")
    ap.add_argument("--prefix", default=f"baseline-{os.getpid()}", help="key prefix of the streams")
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("--cleanup", action="store_true", help="delete the streams afterwards")
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error("--count must be at least 1")
    if args.redis_url:
        report = run(args.redis_url, args)
    else:
        with redis_server() as url:
            report = run(url, args)
    s = report["stage_ms_per_frame"]
    print(
        f"python baseline: {report['frames']} frames in {report['seconds']:.2f} s = "
        f"{report['frames_per_s']:.2f} frames/s on {report['device']} "
        f"(latency p50 {report['latency_ms']['p50']:.1f} ms; per frame: "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in s.items())
        + ")"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
