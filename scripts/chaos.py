"""Chaos and soak runs against real processes: several workers drain one stream while being
killed (SIGKILL) and restarted at random, or run undisturbed while host and Redis memory are
sampled. Prints the figures and exits non-zero when a job is lost or a duplicate differs.

    .venv/bin/python scripts/chaos.py chaos --jobs 20000 --workers 4 --kill-every 3
    .venv/bin/python scripts/chaos.py chaos --jobs 300 --workers 2 --kill-every 0 --crasher
    .venv/bin/python scripts/chaos.py soak  --jobs 20000 --workers 4

`--crasher` adds one job that kills whichever worker process holds it (the harness sends
SIGKILL the moment the job is delivered, up to `--max-deliveries` times, as a job that makes the
process abort would): that job must end dead-lettered as `too_many_deliveries`, and every other
job must get its result; none may be dead-lettered for having been in flight beside it.

Needs the worker binary (default target/release/hmr2-worker), redis-server and the tiny model.
"""

import argparse
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import redis
from PIL import Image

from ports import free_port  # scripts/ports.py, beside this file

ROOT = Path(__file__).resolve().parent.parent


def frames(n_distinct: int, size=(320, 240)) -> list:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n_distinct):
        x = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None]
        y = np.linspace(0, 255, size[1], dtype=np.float32)[:, None, None]
        img = (x * 0.6 + y * 0.3 + rng.normal(0, 20, (size[1], size[0], 3)) + i * 30) % 256
        buf = io.BytesIO()
        Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def crasher_image(side: int = 3000) -> bytes:
    """A large smooth PNG: a slow decode, so the job is held for a while by whoever runs it."""
    x = np.linspace(0, 255, side, dtype=np.float32)[None, :, None]
    img = np.broadcast_to(x, (side, side, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


class Crasher(threading.Thread):
    """Kills (SIGKILL) the worker that holds the crasher entry, every time it is delivered, up
    to `limit` deliveries; after that the entry must be dead-lettered, not run."""

    def __init__(self, fleet, port: int, jobs: str, group: str, entry: str, limit: int):
        super().__init__(daemon=True)
        self.fleet, self.jobs, self.group, self.entry, self.limit = fleet, jobs, group, entry, limit
        self.r = redis.Redis(port=port)
        self.kills = 0
        self.in_flight = 0
        self.stop = threading.Event()

    def run(self):
        seen = None
        while not self.stop.is_set():
            try:
                p = self.r.xpending_range(self.jobs, self.group, self.entry, self.entry, 1)
            except redis.ResponseError:
                p = []
            if p and p[0]["times_delivered"] <= self.limit:
                key = (p[0]["consumer"].decode(), p[0]["times_delivered"])
                if key != seen:
                    for slot, proc in list(self.fleet.procs.items()):
                        if proc.poll() is None and self.fleet.consumer(slot) == key[0]:
                            held = [c for c in self.r.xinfo_consumers(self.jobs, self.group)
                                    if c["name"].decode() == key[0]]
                            self.in_flight += held[0]["pending"] if held else 0
                            proc.send_signal(signal.SIGKILL)
                            proc.wait()
                            self.kills += 1
                            self.fleet.start(slot)
                            seen = key
            time.sleep(0.005)


def rss_kib(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Fleet:
    def __init__(self, args, url: str, prefix: str, logdir: Path):
        self.args, self.url, self.prefix, self.logdir = args, url, prefix, logdir
        self.procs = {}
        self.ports = {}
        self.started = 0

    def start(self, slot: int):
        env = dict(os.environ)
        port = self.ports[slot] = free_port()
        env.update(
            HMR2_REDIS__URL=self.url,
            HMR2_QUEUE__PREFIX=self.prefix,
            HMR2_QUEUE__MAX_BATCH=str(self.args.max_batch),
            HMR2_QUEUE__BLOCK_MS="200",
            HMR2_QUEUE__CLAIM_IDLE_MS=str(self.args.claim_idle_ms),
            HMR2_QUEUE__CLAIM_INTERVAL_MS="500",
            HMR2_QUEUE__MAX_DELIVERIES=str(self.args.max_deliveries),
            HMR2_MODEL__PATH=str(self.args.model),
            HMR2_MODEL__DEVICE="cpu",
            HMR2_HTTP__LISTEN=f"127.0.0.1:{port}",
            HMR2_PIPELINE__DECODE_THREADS="1",
            HMR2_LOG__FORMAT="json",
        )
        self.started += 1
        log = open(self.logdir / f"worker-{slot}-{self.started}.log", "wb")
        self.procs[slot] = subprocess.Popen(
            [str(self.args.bin), "run"], env=env, stdout=subprocess.DEVNULL, stderr=log
        )

    def ready(self, slot: int) -> bool:
        """Whether the worker in `slot` answers /readyz with 200 (warmed up, group created)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[slot]}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> None:
        """Waits until every worker is ready: kills before that would test start-up, not
        recovery, and the group would not exist yet. Bounded by `timeout`, not by this machine's
        speed."""
        deadline = time.time() + timeout
        while not all(self.ready(s) for s in self.procs):
            dead = [s for s, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise SystemExit(f"worker(s) {dead} exited during start-up; logs in {self.logdir}")
            if time.time() > deadline:
                raise SystemExit(f"workers not ready after {timeout:.0f}s; logs in {self.logdir}")
            time.sleep(0.2)

    def consumer(self, slot: int) -> str:
        return f"{socket.gethostname()}/{self.procs[slot].pid}"

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def run(args) -> int:
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="hmr2-chaos-"))
    srv = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    r = redis.Redis(port=port)
    for _ in range(100):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    prefix = f"{args.mode}-{os.getpid()}"
    jobs, results, group = f"{prefix}:jobs", f"{prefix}:results", f"{prefix}-workers"
    imgs = frames(16)
    t0 = time.time()
    pipe = r.pipeline(transaction=False)
    for i in range(args.jobs):
        pipe.xadd(jobs, {"job": json.dumps({"v": 1, "job_id": f"j{i}"}), "image": imgs[i % len(imgs)]})
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()
    crasher_id = None
    if args.crasher:
        crasher_id = r.xadd(jobs, {"job": json.dumps({"v": 1, "job_id": "crasher"}),
                                   "image": crasher_image()}).decode()
        # Good jobs after it too, so it is fetched beside others.
        for i in range(args.jobs, args.jobs + 20):
            r.xadd(jobs, {"job": json.dumps({"v": 1, "job_id": f"j{i}"}), "image": imgs[i % len(imgs)]})
        args.jobs += 20
    print(f"enqueued {args.jobs} jobs in {time.time() - t0:.1f}s", flush=True)

    fleet = Fleet(args, url, prefix, tmp)
    for slot in range(args.workers):
        fleet.start(slot)
    t_ready = time.time()
    fleet.wait_ready(args.ready_timeout)
    print(f"{args.workers} workers ready in {time.time() - t_ready:.1f}s", flush=True)
    crasher = None
    if crasher_id:
        crasher = Crasher(fleet, port, jobs, group, crasher_id, args.max_deliveries)
        crasher.start()
    rng = random.Random(args.seed)
    kills, in_flight_at_kills = 0, 0
    rss, redis_mem = [], []
    next_kill = time.time() + args.kill_every
    start = time.time()
    last_report = 0.0
    try:
        while True:
            done = r.xlen(results)
            now = time.time()
            if done >= args.jobs + (1 if crasher_id else 0) and r.xlen(jobs) == 0:
                break
            if now - start > args.timeout:
                print(f"timeout: {done} of {args.jobs} results", flush=True)
                break
            if args.mode == "chaos" and args.kill_every > 0 and now >= next_kill:
                slot = rng.randrange(args.workers)
                proc = fleet.procs[slot]
                if proc.poll() is None:
                    consumer = fleet.consumer(slot)
                    try:
                        pend = [c for c in r.xinfo_consumers(jobs, group) if c["name"].decode() == consumer]
                    except redis.ResponseError:  # NOGROUP: nothing can be pending yet
                        pend = []
                    in_flight_at_kills += pend[0]["pending"] if pend else 0
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills += 1
                fleet.start(slot)
                next_kill = now + args.kill_every * rng.uniform(0.5, 1.5)
            rss.append(sum(rss_kib(p.pid) for p in fleet.procs.values() if p.poll() is None))
            redis_mem.append(int(r.info("memory")["used_memory"]))
            if now - last_report >= 5:
                print(f"  {done}/{args.jobs} results, {kills} kills, {(done / max(now - start, 1e-9)):.0f} frames/s", flush=True)
                last_report = now
            time.sleep(0.25)
    finally:
        if crasher:
            crasher.stop.set()
            crasher.join()
        fleet.stop_all()
    elapsed = time.time() - start

    entries = r.xrange(results)
    by_job = {}
    for _, f in entries:
        res = json.loads(f[b"result"])
        by_job.setdefault(res["job_id"], []).append(res)
    lost = [f"j{i}" for i in range(args.jobs) if f"j{i}" not in by_job]
    crasher_result = by_job.pop("crasher", [None])[0]
    not_ok = [j for j, rs in by_job.items() if rs[0]["status"] != "ok"]
    dead = [json.loads(f[b"job"]).get("job_id") if b"job" in f else None
            for _, f in r.xrange(f"{prefix}:dead")]
    dups = {j: rs for j, rs in by_job.items() if len(rs) > 1}
    differing = [j for j, rs in dups.items() if any(x["people"] != rs[0]["people"] for x in rs[1:])]
    try:
        pending = r.xpending(jobs, group)["pending"]
    except redis.ResponseError:  # no stream or no group: nothing pending
        pending = 0
    warm = max(1, len(rss) // 5)
    figures = {
        "mode": args.mode,
        "jobs": args.jobs,
        "workers": args.workers,
        "seconds": round(elapsed, 1),
        "frames_per_s": round(len(by_job) / elapsed, 1),
        "kills": kills,
        "lost": len(lost),
        "errors": len(not_ok),
        "error_codes": sorted({by_job[j][0]["error"]["code"] for j in not_ok}),
        "duplicates": len(dups),
        "in_flight_at_kills": in_flight_at_kills,
        "duplicates_differing": len(differing),
        "pending_left": pending,
        "dead_letters": dead,
        "crasher": None if not crasher_id else {
            "kills": crasher.kills,
            "result": (crasher_result or {}).get("error", {}).get("code"),
        },
        "fleet_rss_mib_after_warmup": round(rss[warm] / 1024, 1) if rss else None,
        "fleet_rss_mib_end": round(rss[-1] / 1024, 1) if rss else None,
        "fleet_rss_mib_by_fifth": [round(rss[min(len(rss) - 1, k * len(rss) // 5)] / 1024, 1) for k in range(1, 6)] if rss else [],
        "redis_used_mib_after_warmup": round(redis_mem[warm] / 2**20, 1) if redis_mem else None,
        "redis_used_mib_peak_after_warmup": round(max(redis_mem[warm:]) / 2**20, 1) if redis_mem else None,
        "redis_used_mib_end": round(redis_mem[-1] / 2**20, 1) if redis_mem else None,
        "logs": str(tmp),
    }
    srv.terminate()
    srv.wait()
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    if crasher:
        in_flight_at_kills += crasher.in_flight
    ok = not lost and not not_ok and not differing and pending == 0 and len(dups) <= in_flight_at_kills
    if crasher_id:
        # Only the crasher is dead-lettered, after max_deliveries kills; nobody else pays.
        ok = ok and dead == ["crasher"] and crasher.kills == args.max_deliveries \
            and (crasher_result or {}).get("error", {}).get("code") == "too_many_deliveries"
    elif dead:
        ok = False
    print("PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["chaos", "soak"])
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills (chaos)")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--claim-idle-ms", type=int, default=2000)
    ap.add_argument(
        "--max-deliveries", type=int, default=10,
        help="kills every few seconds abandon each worker's in-flight jobs; allow for that",
    )
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--ready-timeout", type=float, default=600,
                    help="seconds the first workers may take to load the model and get ready")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--crasher", action="store_true",
                    help="add one job that kills the worker holding it (see above)")
    ap.add_argument("--bin", type=Path, default=ROOT / "target/release/hmr2-worker")
    ap.add_argument("--model", type=Path, default=ROOT / "models/artifacts/hmr2-tiny.pt")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if not args.bin.exists():
        ap.error(f"{args.bin} is missing: cargo build --release")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
