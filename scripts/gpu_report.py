"""Helpers of scripts/gpu-check.sh, standard library only (the GPU host has no extra packages):

    gpu_report.py wait-ready URL TIMEOUT_S
    gpu_report.py scrape URL OUT.jsonl            (every second until killed)
    gpu_report.py wait-results REDIS_URL STREAM N TIMEOUT_S
    gpu_report.py report DIR                      (markdown on stdout)
"""

import json
import re
import socket
import sys
import time
import urllib.request
from pathlib import Path

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def parse(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            get(url)
            return
        except Exception:
            time.sleep(0.5)
    sys.exit(f"{url} not ready after {timeout}s")


def scrape(url: str, out: str) -> None:
    with open(out, "a") as f:
        while True:
            try:
                f.write(json.dumps({"t": time.time(), "m": parse(get(url))}) + "\n")
                f.flush()
            except Exception:
                pass
            time.sleep(1)


def resp(sock, *args) -> object:
    """A minimal RESP client: enough for XLEN."""
    cmd = f"*{len(args)}\r\n" + "".join(f"${len(str(a))}\r\n{a}\r\n" for a in args)
    sock.sendall(cmd.encode())
    line = sock.makefile("rb").readline().decode().strip()
    if line[0] == ":":
        return int(line[1:])
    raise RuntimeError(line)


def wait_results(url: str, stream: str, n: int, timeout: float) -> None:
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)))
    start = time.time()
    first = None
    done = 0
    while time.time() - start < timeout:
        done = resp(sock, "XLEN", stream)
        if done and first is None:
            first = time.time()
        if done >= n:
            break
        time.sleep(0.2)
    end = time.time()
    print(json.dumps({"results": done, "wanted": n, "seconds_total": round(end - start, 2),
                      "frames_per_s_from_first_result": round(done / max(end - (first or start), 1e-9), 1)}))


def quantile(hist: dict, name: str, q: float) -> float:
    buckets = sorted((float(re.search(r'le="([^"]+)"', k).group(1).replace("+Inf", "inf")), v)
                     for k, v in hist.items() if k.startswith(name + "_bucket"))
    if not buckets:
        return float("nan")
    total = buckets[-1][1]
    for le, c in buckets:
        if c >= q * total:
            return le
    return float("inf")


def report(d: str) -> None:
    d = Path(d)
    print(f"# GPU check report\n\nGenerated {time.strftime('%Y-%m-%d %H:%M:%S')} by `scripts/gpu-check.sh`.\n")
    if (d / "check.txt").exists():
        print("## check\n\n```\n" + (d / "check.txt").read_text().strip() + "\n```\n")
    if (d / "drain.json").exists():
        print("## Worker run\n\n```\n" + (d / "drain.json").read_text().strip() + "\n```\n")
    batches = []
    for line in (d / "worker.log").read_text().splitlines() if (d / "worker.log").exists() else []:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("message") == "batch memory":
            batches.append(e)
    if batches:
        alloc = [b["allocated"] for b in batches]
        res = [b["reserved"] for b in batches]
        sizes = [b["frames"] for b in batches]
        print("## Allocator after every batch\n")
        print(f"{len(batches)} batches, sizes min {min(sizes)} / max {max(sizes)} / mean {sum(sizes)/len(sizes):.1f}.")
        print(f"allocated: first {alloc[0]/2**20:.1f} MiB, min {min(alloc)/2**20:.1f}, max {max(alloc)/2**20:.1f}, last {alloc[-1]/2**20:.1f} MiB"
              f" -> {'flat' if max(alloc) - min(alloc) < 16 * 2**20 else 'NOT flat'} after warm-up.")
        print(f"reserved: min {min(res)/2**20:.1f}, max {max(res)/2**20:.1f}, last {res[-1]/2**20:.1f} MiB.")
        peak = max(b["peak_allocated"] for b in batches)
        print(f"peak allocated in a batch: {peak/2**20:.1f} MiB.\n")
        print("| batch | frames | allocated MiB | reserved MiB | peak MiB |\n|---|---|---|---|---|")
        step = max(1, len(batches) // 40)
        for b in batches[::step]:
            print(f"| {b['batch']} | {b['frames']} | {b['allocated']/2**20:.1f} | {b['reserved']/2**20:.1f} | {b['peak_allocated']/2**20:.1f} |")
        print()
    scrapes = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()] if (d / "metrics.jsonl").exists() else []
    if scrapes:
        last = scrapes[-1]["m"]
        used = [v for s in scrapes for k, v in s["m"].items() if k.startswith("hmr2_gpu_memory_used_bytes")]
        print("## From /metrics (scraped every second)\n")
        if used:
            print(f"NVML used: min {min(used)/2**30:.2f} GiB, max {max(used)/2**30:.2f} GiB over {len(scrapes)} scrapes.")
        ooms = sum(v for k, v in last.items() if k.startswith("hmr2_gpu_oom_total"))
        drift = sum(v for k, v in last.items() if k.startswith("hmr2_gpu_memory_drift_total"))
        rel = sum(v for k, v in last.items() if k.startswith("hmr2_gpu_cache_releases_total"))
        print(f"OOMs: {ooms:.0f}; drift events: {drift:.0f}; cache releases: {rel:.0f}.")
        print(f"batch size p50 {quantile(last, 'hmr2_batch_size', 0.5)}, p95 {quantile(last, 'hmr2_batch_size', 0.95)}.\n")
        print("| stage | total s | count | mean ms |\n|---|---|---|---|")
        for stage in ["decode", "preprocess", "inference", "postprocess", "publish"]:
            s = last.get(f'hmr2_stage_duration_seconds_sum{{stage="{stage}"}}', 0.0)
            c = last.get(f'hmr2_stage_duration_seconds_count{{stage="{stage}"}}', 0.0)
            print(f"| {stage} | {s:.2f} | {c:.0f} | {1e3 * s / c if c else 0:.2f} |")
        print()
    if (d / "bench.txt").exists():
        print("## bench\n\n```\n" + (d / "bench.txt").read_text().strip() + "\n```\n")
    if (d / "detector-post.txt").exists():
        print("## Detector post-processing\n\n" + (d / "detector-post.txt").read_text().strip() + "\n")


def main() -> None:
    cmd, *args = sys.argv[1:]
    if cmd == "wait-ready":
        wait_ready(args[0], float(args[1]))
    elif cmd == "scrape":
        scrape(args[0], args[1])
    elif cmd == "wait-results":
        wait_results(args[0], args[1], int(args[2]), float(args[3]))
    elif cmd == "report":
        report(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
