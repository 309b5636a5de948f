"""Live: a real worker (tiny model, CPU) on a throwaway password-protected Redis, scraped every second
by a real Prometheus that loads the alert rules. Through Prometheus's HTTP API, every dashboard
query and every alert expression must evaluate without error, and every metric they use must be in
the worker's /metrics (GPU-only ones may be absent on a CPU, and error counters on a healthy
worker: conftest.GPU_ONLY and conftest.ONLY_ON_ERROR say why).

The worker is started as Kubernetes starts it: `run --config deploy/k8s/base/worker.toml` with the
Redis URL, password included, in HMR2_REDIS__URL; flags then point it at this machine.
A binary with videos (a `track` subcommand) also gets a three-frame tracked video, tracked inside
the worker (track.in_worker, the default): its output must come, counted, and every video metric
the dashboard and the alerts use must then be exported like the others.
Skipped, with the reason, when the worker binary is not built or has no `run` yet."""

import base64
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import (
    DASHBOARD,
    DEPLOY,
    GPU_ONLY,
    K8S_TOML,
    NOT_FROM_WORKER,
    ONLY_ON_ERROR,
    ROOT,
    RULES,
    alert_rules,
    dashboard_exprs,
    dashboard_variable_selectors,
    free_port,
    grafana_to_promql,
    metric_names,
    setting,
    worker_bin_or_skip,
)

MODEL = ROOT / "models" / "artifacts" / "hmr2-tiny.pt"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
JOB = "hmr2-worker"  # the job name the alert rules select on
VIDEO_ID = "live-video"
VIDEO_FRAMES = 3
# The metrics of videos (DESIGN §13), which a binary from before videos does not have.
VIDEO_METRICS = {"hmr2_videos_total", "hmr2_video_duration_seconds", "hmr2_tracks_per_video",
                 "hmr2_videos_open", "hmr2_videos_waiting"}


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


def wait_for(what: str, check, timeout: float, procs=(), logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for p, log in zip(procs, logs):
            if p.poll() is not None:
                pytest.fail(f"{what}: {p.args[0]} exited with {p.returncode}:\n{tail(log)}")
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n" + "\n".join(tail(l) for l in logs))


def tail(path: Path, lines: int = 40) -> str:
    try:
        return f"--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Stack:
    """Redis, the worker and Prometheus, each a child process with its log in a temp folder."""

    def __init__(self, tmp: Path, binary: Path):
        self.tmp, self.binary = tmp, binary
        self.procs: list[subprocess.Popen] = []
        self.prefix = f"deploy-live-{secrets.token_hex(4)}"
        self.password = secrets.token_hex(16)
        self.redis_port, self.worker_port, self.prom_port = free_port(), free_port(), free_port()
        self.worker_log = tmp / "worker.log"
        # Whether this binary has videos (a `track` subcommand): set by the fixture.
        self.videos = False

    def spawn(self, args, log: Path, **kw) -> subprocess.Popen:
        p = subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT, **kw)
        self.procs.append(p)
        return p

    def redis(self, *args: str, stdin: bytes | None = None) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.redis_port), "--no-auth-warning", "-a", self.password, *args],
            input=stdin, capture_output=True, check=True,
        )
        return out.stdout.decode().strip()

    def start(self):
        log = self.tmp / "redis.log"
        redis = self.spawn(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--requirepass", self.password],
            log,
        )
        wait_for("redis", lambda: self._redis_ok(), 20, [redis], [log])

        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env["HMR2_REDIS__URL"] = f"redis://:{self.password}@127.0.0.1:{self.redis_port}/0"
        env["HMR2_QUEUE__GAUGE_INTERVAL_MS"] = "500"
        # The mounted config reads the detector from the model volume; here, the tiny one.
        env["HMR2_DETECTOR__PATH"] = str(ROOT / "models" / "detector-tiny.pt")
        self.worker = self.spawn(
            [str(self.binary), "run", "--config", str(K8S_TOML), "--model", str(MODEL), "--device", "cpu",
             "--prefix", self.prefix, "--listen", f"127.0.0.1:{self.worker_port}", "--log-format", "text"],
            self.worker_log, env=env,
        )
        wait_for("the worker's /readyz", lambda: self.worker_get("/readyz")[0] == 200, 180,
                 [self.worker], [self.worker_log])

        self.enqueue_jobs()

        prom_dir = self.tmp / "prometheus"
        (prom_dir / "data").mkdir(parents=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{self.worker_port}"]}]}],
        }
        (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = self.tmp / "prometheus.log"
        prom = self.spawn(
            [PROMETHEUS, f"--config.file={prom_dir / 'prometheus.yml'}", f"--storage.tsdb.path={prom_dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.prom_port}"],
            log,
        )
        wait_for("Prometheus /-/ready", lambda: http_get(self.prom_url("/-/ready"))[0] == 200, 60, [prom], [log])
        # Enough 1 s scrapes for rate() and friends, and the results' metrics included.
        wait_for(
            "ten scrapes of the worker",
            lambda: self.query_values(f'count_over_time(hmr2_build_info{{job="{JOB}"}}[1m])') >= [10],
            60, [prom, self.worker], [log, self.worker_log],
        )

    def _redis_ok(self) -> bool:
        try:
            return self.redis("PING") == "PONG"
        except subprocess.CalledProcessError:
            return False

    def enqueue_jobs(self):
        """Three frames with a box, one invalid job and a video, so histograms and outcomes have
        samples."""
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (320, 240), (90, 120, 150)).save(buf, format="PNG")
        image = base64.b64encode(buf.getvalue()).decode()
        # A flat frame: the detector finds nobody in it, so these three carry a box (HMR2 runs on
        # it and its metrics get samples); the video's frames below go through the detector.
        jobs = [{"v": 1, "job_id": f"live-{i}", "frame_number": i, "image_base64": image,
                 "boxes": [[40, 30, 200, 220]]} for i in range(3)]
        jobs.append({"v": 1, "job_id": "live-bad", "image_base64": "***not base64***"})
        if self.videos:
            jobs += [
                {"v": 1, "job_id": f"{VIDEO_ID}-{i}", "video_id": VIDEO_ID, "frame_number": i, "image_base64": image,
                 "video": {"frames": VIDEO_FRAMES, "fps": 30}}
                for i in range(VIDEO_FRAMES)
            ]
        for job in jobs:
            self.redis("-x", "XADD", f"{self.prefix}:jobs", "*", "job", stdin=json.dumps(job).encode())
        wait_for(
            "results of the enqueued jobs",
            lambda: int(self.redis("XLEN", f"{self.prefix}:results") or 0) >= len(jobs),
            120, [self.worker], [self.worker_log],
        )
        if self.videos:
            # Its frames answered, the video is tracked and written as one whole: frames, then done.
            wait_for(
                "the tracked video's output",
                lambda: int(self.redis("XLEN", self.video_output()) or 0) >= VIDEO_FRAMES + 1,
                120, [self.worker], [self.worker_log],
            )

    def video_output(self) -> str:
        """The video's output stream by default: <results stream>:video:<video_id>."""
        return f"{self.prefix}:results:video:{VIDEO_ID}"

    def worker_get(self, path: str) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{self.worker_port}{path}")

    def prom_url(self, path: str, **params) -> str:
        q = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"http://127.0.0.1:{self.prom_port}{path}{q}"

    def query(self, promql: str) -> dict:
        status, body = http_get(self.prom_url("/api/v1/query", query=promql))
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return {"status": "error", "error": f"HTTP {status}: {body[:300]}"}

    def query_values(self, promql: str) -> list[float]:
        r = self.query(promql)
        if r.get("status") != "success":
            return []
        return sorted(float(s["value"][1]) for s in r["data"]["result"])

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    binary = worker_bin_or_skip("run")
    if not MODEL.exists():
        pytest.skip(f"{MODEL} is missing: run scripts/setup")
    for tool in ("redis-server", "redis-cli"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (scripts/setup)")
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("prometheus is not installed (scripts/setup-deploy)")
    s = Stack(tmp_path_factory.mktemp("live"), binary)
    s.videos = subprocess.run([str(binary), "track", "--help"], capture_output=True).returncode == 0
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def exported(stack) -> tuple[set[str], str]:
    """Metric names in the worker's /metrics, and the text."""
    status, text = stack.worker_get("/metrics")
    assert status == 200
    names = set()
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+)", line) or re.match(r"([a-zA-Z_:][\w:]*)", line)
        if m:
            names.add(m.group(1))
    return names, text


def test_probe_endpoints_answer(stack):
    assert stack.worker_get("/healthz")[0] == 200
    assert stack.worker_get("/readyz")[0] == 200


def test_every_dashboard_query_evaluates(stack):
    dash = json.loads(DASHBOARD.read_text())
    failures = []
    queries = [(w, grafana_to_promql(e)) for w, e in dashboard_exprs(dash)]
    queries += [(f"variable ${n}", grafana_to_promql(sel)) for n, sel, _ in dashboard_variable_selectors(dash)]
    for where, promql in queries:
        r = stack.query(promql)
        if r.get("status") != "success":
            failures.append(f"{where}: {r.get('error')}\n    {promql}")
    assert not failures, "dashboard queries Prometheus rejects:\n" + "\n".join(failures)
    # The instance variable lists this worker.
    (sel,) = [s for n, s, _ in dashboard_variable_selectors(dash) if n == "instance"]
    r = stack.query(grafana_to_promql(sel))
    assert {s["metric"]["instance"] for s in r["data"]["result"]} == {f"127.0.0.1:{stack.worker_port}"}


def test_every_alert_expression_evaluates_and_the_rules_run(stack):
    failures = []
    for rule in alert_rules():
        r = stack.query(rule["expr"])
        if r.get("status") != "success":
            failures.append(f"{rule['alert']}: {r.get('error')}")
    assert not failures, "\n".join(failures)

    def all_evaluated():
        status, body = http_get(stack.prom_url("/api/v1/rules"))
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]] if status == 200 else []
        done = rules and all(not r.get("lastEvaluation", "").startswith("0001") for r in rules)
        return rules if done else None

    rules = wait_for("every rule to be evaluated once", all_evaluated, 30)
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad, f"rules Prometheus cannot evaluate: {bad}"


def test_metrics_used_by_dashboard_and_alerts_exist(stack, exported):
    names, _ = exported
    dash = json.loads(DASHBOARD.read_text())
    exprs = [e for _, e in dashboard_exprs(dash)] + [s for _, s, _ in dashboard_variable_selectors(dash)]
    exprs += [r["expr"] for r in alert_rules()]
    used = set().union(*(metric_names(e) for e in exprs))
    info = stack.query(f'hmr2_build_info{{job="{JOB}"}}')["data"]["result"]
    on_cpu = info and info[0]["metric"].get("device", "").startswith("cpu")
    allowed_absent = dict(NOT_FROM_WORKER) | ONLY_ON_ERROR
    if on_cpu:
        allowed_absent.update(GPU_ONLY)
    if not stack.videos:
        allowed_absent.update({n: "a binary from before videos (no `track` subcommand)" for n in VIDEO_METRICS})
    missing = {n for n in used - set(allowed_absent) if n not in names}
    assert not missing, f"used by the dashboard or the alerts but not exported by the worker: {sorted(missing)}"
    # And Prometheus has ingested them under the alerting job.
    status, body = http_get(stack.prom_url("/api/v1/label/__name__/values"))
    ingested = set(json.loads(body)["data"])
    for n in used - set(allowed_absent):
        assert n in ingested or f"{n}_bucket" in ingested, f"{n} not in Prometheus"


def test_a_video_is_tracked_inside_the_worker_and_counted(stack):
    """The video's output is its frames in order, then `done` with status ok; Prometheus then sees
    it finished ok, and nothing open or waiting: what the Videos row and HMR2VideosNotTracked read."""
    if not stack.videos:
        pytest.skip("the worker binary has no `track` subcommand: it predates videos")
    lines = stack.redis("XRANGE", stack.video_output(), "-", "+").splitlines()
    fields = [(lines[i], lines[i + 1]) for i in range(len(lines)) if lines[i] in ("frame", "done")]
    assert [f for f, _ in fields] == ["frame"] * VIDEO_FRAMES + ["done"], fields
    frames = [json.loads(v) for f, v in fields if f == "frame"]
    assert [f["frame_number"] for f in frames] == list(range(VIDEO_FRAMES))
    done = json.loads(fields[-1][1])
    assert (done["video_id"], done["status"], done["frames"]) == (VIDEO_ID, "ok", VIDEO_FRAMES), done
    wait_for(
        "hmr2_videos_total{status=\"ok\"} in Prometheus",
        lambda: stack.query_values(f'sum(hmr2_videos_total{{job="{JOB}", status="ok"}})') >= [1.0], 30,
    )
    for gauge in ("hmr2_videos_open", "hmr2_videos_waiting"):
        wait_for(f"{gauge} back to 0", lambda: stack.query_values(f'max({gauge}{{job="{JOB}"}})') == [0.0], 30)
    assert stack.query_values(f'sum(hmr2_stage_duration_seconds_count{{job="{JOB}", stage="track"}})') >= [1.0]


def test_queue_wait_histogram_reaches_the_alert_threshold(exported):
    """HMR2JobsWaitingTooLong compares a p99 with 60 s: histogram_quantile can only report that
    if the worker's buckets go that far."""
    _, text = exported
    les = [float(x) for x in re.findall(r'hmr2_job_queue_wait_seconds_bucket\{[^}]*le="([^"]+)"', text) if x != "+Inf"]
    assert les, "no hmr2_job_queue_wait_seconds buckets"
    threshold = 60
    assert max(les) >= threshold, f"largest finite bucket {max(les)} s < the alert's {threshold} s"


def test_container_healthcheck_script_against_the_worker(stack):
    script = str(DEPLOY / "healthcheck")
    env = dict(os.environ, HMR2_HTTP__LISTEN=f"127.0.0.1:{stack.worker_port}")
    assert subprocess.run([script], env=env, capture_output=True).returncode == 0
    assert subprocess.run([script, "/readyz"], env=env, capture_output=True).returncode == 0
    assert subprocess.run([script, "/no-such-page"], env=env, capture_output=True).returncode != 0
    closed = dict(os.environ, HMR2_HTTP__LISTEN=f"127.0.0.1:{free_port()}")
    assert subprocess.run([script], env=closed, capture_output=True).returncode != 0


def test_password_from_the_secret_is_not_logged(stack):
    assert stack.password not in stack.worker_log.read_text(errors="replace")


def test_sigterm_exits_cleanly_within_the_grace_period(stack):
    """Kubernetes' terminationGracePeriodSeconds is sized on this (runs last: stops the worker)."""
    grace = setting(K8S_TOML, "shutdown", "grace_seconds")
    stack.worker.send_signal(signal.SIGTERM)
    try:
        code = stack.worker.wait(grace + 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not exit within {grace + 5}s of SIGTERM\n{tail(stack.worker_log)}")
    assert code == 0, tail(stack.worker_log)
