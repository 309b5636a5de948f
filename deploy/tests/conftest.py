"""Shared helpers of the deploy tests: paths, YAML/TOML loading, the metric contract, PromQL names."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import ports  # noqa: E402  (scripts/ports.py)
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROM = DEPLOY / "prometheus"
RULES = PROM / "rules" / "hmr2-worker.rules.yml"
RULE_TESTS = sorted((PROM / "tests").glob("*.test.yml"))
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "hmr2-worker.json"
OPERATIONS = ROOT / "docs" / "operations.md"
DEFAULT_TOML = ROOT / "config" / "default.toml"
K8S_TOML = K8S / "base" / "worker.toml"
IMAGE_TOML = DEPLOY / "worker.toml"

# The metric contract (shared/DESIGN.md §5, plus the drift counter and baseline gauge, the
# readiness inputs, Redis errors and unread shard streams the worker adds, and the videos of §13;
# src/metrics.rs):
# name -> type. Histograms are used through their _bucket/_sum/_count series.
METRICS = {
    "hmr2_gpu_memory_used_bytes": "gauge",
    "hmr2_gpu_memory_total_bytes": "gauge",
    "hmr2_gpu_utilization_ratio": "gauge",
    "hmr2_torch_allocated_bytes": "gauge",
    "hmr2_torch_reserved_bytes": "gauge",
    "hmr2_torch_baseline_allocated_bytes": "gauge",
    "hmr2_job_peak_allocated_bytes": "histogram",
    "hmr2_gpu_cache_releases_total": "counter",
    "hmr2_gpu_oom_total": "counter",
    "hmr2_gpu_memory_drift_total": "counter",
    "hmr2_jobs_total": "counter",
    "hmr2_stage_duration_seconds": "histogram",
    "hmr2_job_queue_wait_seconds": "histogram",
    "hmr2_job_duration_seconds": "histogram",
    "hmr2_batch_size": "histogram",
    "hmr2_queue_length": "gauge",
    "hmr2_queue_pending": "gauge",
    "hmr2_queue_lag": "gauge",
    "hmr2_worker_ready": "gauge",
    "hmr2_build_info": "gauge",
    "hmr2_people_per_frame": "histogram",
    "hmr2_worker_ready_input": "gauge",
    "hmr2_redis_errors_total": "counter",
    "hmr2_queue_unread_shards": "gauge",
    # Videos (DESIGN §13): finished by status (ok, expired, dead_lettered), first frame recorded
    # to output written, tracks per video, and the queue-wide open (frames still coming) and
    # waiting (complete, not yet tracked) counts every worker reports alike.
    "hmr2_videos_total": "counter",
    "hmr2_video_duration_seconds": "histogram",
    "hmr2_tracks_per_video": "histogram",
    "hmr2_videos_open": "gauge",
    "hmr2_videos_waiting": "gauge",
}
# Queue-wide gauges: every worker reports the same value, so a fleet's figure is the max over its
# workers, never the sum.
QUEUE_WIDE = {"hmr2_queue_length", "hmr2_queue_pending", "hmr2_queue_lag", "hmr2_queue_unread_shards",
              "hmr2_videos_open", "hmr2_videos_waiting"}

# Metrics a worker on a CPU does not export, with the reason. Anything else the dashboard or the
# alerts use must be in the worker's /metrics.
GPU_ONLY = {
    name: "GPU-only: NVML / CUDA caching-allocator figure, absent on a CPU worker (DESIGN §5)"
    for name in (
        "hmr2_gpu_memory_used_bytes",
        "hmr2_gpu_memory_total_bytes",
        "hmr2_gpu_utilization_ratio",
        "hmr2_torch_allocated_bytes",
        "hmr2_torch_reserved_bytes",
        "hmr2_torch_baseline_allocated_bytes",
        "hmr2_job_peak_allocated_bytes",
        "hmr2_gpu_cache_releases_total",
        "hmr2_gpu_oom_total",
        "hmr2_gpu_memory_drift_total",
    )
}
# Worker metrics with no series until something goes wrong: a counter labelled by what went wrong
# has nothing to count on a healthy worker, so a live scrape may lack it.
ONLY_ON_ERROR = {
    "hmr2_redis_errors_total": "one series per (op, code), born with the first Redis error of that kind",
}
NOT_FROM_WORKER = {
    "DCGM_FI_DEV_FB_USED": "exported by NVIDIA's DCGM exporter, not by the worker",
    "up": "written by Prometheus for every scrape",
}
# Series of the cluster, not of the workers: what the alerts that must fire with no worker running
# read (KEDA 2.14+ operator metrics; kube-state-metrics). Name -> who exports it.
CLUSTER_METRICS = {
    "keda_scaler_metrics_value": "KEDA operator: the value each trigger reads (here XLEN of the job stream)",
    "keda_scaler_detail_errors_total": "KEDA operator: errors of each trigger (2.14+ name)",
    "keda_scaled_object_errors_total": "KEDA operator: errors of each ScaledObject (2.14+ name)",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kube_pod_status_phase": "kube-state-metrics",
    "kube_pod_status_unschedulable": "kube-state-metrics",
}
NOT_FROM_WORKER.update(CLUSTER_METRICS)

_NAME = re.compile(r"\b(hmr2_[a-z0-9_]+|DCGM_[A-Z0-9_]+|keda_[a-z0-9_]+|kube_[a-z0-9_]+|up)\b")
_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def metric_names(expr: str) -> set[str]:
    """Metric families a PromQL expression reads (histogram series map to their family)."""
    names = set()
    for n in _NAME.findall(expr):
        base = _SUFFIX.sub("", n)
        names.add(base if METRICS.get(base) == "histogram" else n)
    return names


def load_yaml_docs(path: Path) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_yaml(path: Path):
    with open(path) as f:
        return yaml.safe_load(f)


def load_toml(path: Path) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def setting(path: Path, section: str, key: str):
    """A setting of a worker config file, else its default from config/default.toml."""
    value = load_toml(path).get(section, {}).get(key)
    return value if value is not None else load_toml(DEFAULT_TOML)[section][key]


def listen_port(path: Path) -> int:
    return int(str(setting(path, "http", "listen")).rsplit(":", 1)[1])


def alert_rules() -> list[dict]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    """(where, expr) of every query in the dashboard, rows' nested panels included."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f'panel "{p.get("title")}" {t.get("refId")}', t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    return out


def dashboard_variable_selectors(dash: dict) -> list[tuple[str, str, str]]:
    """(variable, series selector, label) of every label_values() variable."""
    out = []
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
        m = re.fullmatch(r"\s*label_values\((.+),\s*([a-zA-Z_]+)\)\s*", q)
        assert m, f"variable {v['name']}: only label_values(selector, label) is supported: {q}"
        out.append((v["name"], m.group(1), m.group(2)))
    return out


GRAFANA_SUBSTITUTIONS = [
    (re.compile(r"\$\{?__rate_interval\}?"), "1m"),
    (re.compile(r"\$\{?__interval\}?"), "15s"),
    (re.compile(r"\$\{?__range\}?"), "5m"),
    (re.compile(r"\$\{?(namespace|job|instance|gpu)\}?"), ".*"),
]


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus would receive it with every variable at "All"."""
    for pattern, value in GRAFANA_SUBSTITUTIONS:
        expr = pattern.sub(value, expr)
    # Regex replacements such as "$1" in label_replace are PromQL, not Grafana variables.
    leftover = re.findall(r"\$\{?[A-Za-z_]\w*", expr)
    assert not leftover, f"unknown dashboard variables {leftover} in {expr}"
    return expr


def free_port() -> int:
    """A free loopback port outside the ephemeral range (`scripts/ports.py`)."""
    return ports.free_port()


def worker_bin() -> Path:
    return Path(os.environ.get("HMR2_WORKER_BIN", ROOT / "target" / "debug" / "hmr2-worker"))


def worker_bin_or_skip(subcommand: str) -> Path:
    """The worker binary, or skip when it is not built or lacks `subcommand`."""
    path = worker_bin()
    if not path.exists():
        pytest.skip(f"worker binary {path} is not built (cargo build, or set HMR2_WORKER_BIN)")
    probe = subprocess.run([str(path), subcommand, "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{path} has no `{subcommand}` subcommand yet: {probe.stderr.strip()[:200]}")
    return path
