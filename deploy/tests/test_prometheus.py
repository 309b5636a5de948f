"""Prometheus assets: alert rules cover what operators need, each is unit-tested both ways, each has
a runbook, the Kubernetes copy of the rules is current, and the scrape configs hang together.
(promtool itself runs in deploy/tests/run: check config, check rules, test rules.)"""

import os
import re
import shutil
import subprocess
import urllib.parse

import pytest
import yaml

from conftest import (
    CLUSTER_METRICS,
    K8S,
    METRICS,
    NOT_FROM_WORKER,
    OPERATIONS,
    PROM,
    QUEUE_WIDE,
    RULE_TESTS,
    RULES,
    alert_rules,
    load_yaml,
    load_yaml_docs,
    metric_names,
)

PROMETHEUSRULE = K8S / "components" / "prometheus-operator" / "prometheusrule.yaml"

# What the alerts must watch -> the alert that does.
REQUIRED_ALERTS = {
    "VRAM near total": "HMR2GpuMemoryNearTotal",
    "allocator drift": "HMR2GpuAllocatorDrift",
    "OOMs": "HMR2GpuOutOfMemory",
    "dead letters rising": "HMR2DeadLettersRising",
    "queue lag growing": "HMR2QueueLagGrowing",
    "oldest job too old": "HMR2JobsWaitingTooLong",
    "no ready workers": "HMR2NoReadyWorkers",
    "worker down": "HMR2WorkerDown",
    "results cannot be published (Redis out of memory)": "HMR2ResultsCannotBePublished",
    "jobs cannot be read (ACL without XREADGROUP)": "HMR2JobsCannotBeRead",
    "Redis refuses commands (NOPERM)": "HMR2RedisPermissionDenied",
    "producers shard wider than the workers read": "HMR2UnreadShards",
    # Videos (DESIGN §13).
    "videos expiring before their last frame": "HMR2VideosExpiring",
    "complete videos with no tracker running": "HMR2VideosNotTracked",
    "videos that cannot be tracked (dead-lettered)": "HMR2VideoDeadLettered",
    # Alerts that still fire when no worker runs (zero replicas, pods Pending).
    "backlog while no worker is available": "HMR2BacklogWithoutWorkers",
    "worker pods unschedulable": "HMR2WorkerPodsUnschedulable",
    "worker pods stuck Pending": "HMR2WorkerPodsPending",
    "autoscaler (KEDA) errors": "HMR2AutoscalerErrors",
    "KEDA blind while no worker runs (fallback does not lift zero)": "HMR2AutoscalerBlindAtZero",
}

# Alerts that must work with no worker running: they may read no hmr2_* series (every one of
# those vanishes with the last worker), and must read these cluster series.
NO_WORKER_ALERTS = {
    "HMR2BacklogWithoutWorkers": {"keda_scaler_metrics_value", "kube_deployment_status_replicas_available"},
    "HMR2WorkerPodsUnschedulable": {"kube_pod_status_unschedulable"},
    "HMR2WorkerPodsPending": {"kube_pod_status_phase"},
    "HMR2AutoscalerErrors": {"keda_scaler_detail_errors_total", "keda_scaled_object_errors_total"},
    "HMR2AutoscalerBlindAtZero": {
        "keda_scaler_detail_errors_total",
        "keda_scaled_object_errors_total",
        "kube_deployment_status_replicas_available",
    },
}

# The runbook's path in the repository: the base of every runbook_url as shipped
# (make-prometheusrule replaces it with the URL an operator gives).
REPO_RUNBOOK = "docs/operations.md"
# What a made-up runbook host looks like: example domains and placeholder organisations.
PLACEHOLDER = re.compile(r"example\.(com|org|net)|\b(example|your|my)-?org\b|<org>|\bacme\b", re.IGNORECASE)
# Queue gauges carry the job stream in `stream`.
STREAM_METRICS = {"hmr2_queue_lag", "hmr2_queue_length", "hmr2_queue_pending"}


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_required_alerts_exist():
    names = {r["alert"] for r in alert_rules()}
    missing = {what: a for what, a in REQUIRED_ALERTS.items() if a not in names}
    assert not missing, f"alerts missing: {missing}"
    assert len(names) == len(alert_rules()), "alert names must be unique"


def runbook_urls(text: str) -> list[str]:
    return re.findall(r'runbook_url: "([^"]*)"', text)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_is_labelled_annotated_and_has_a_runbook(rule):
    """runbook_url links the alert's own section of docs/operations.md: as shipped, by its path in
    the repository; once make-prometheusrule has set an operator's base, by an absolute https URL
    (an alert leaves Prometheus: Alertmanager, a pager, a chat message)."""
    assert rule["labels"]["severity"] in {"warning", "critical"}
    ann = rule["annotations"]
    for key in ("summary", "description", "runbook_url"):
        assert ann.get(key), f"{rule['alert']} lacks annotation {key}"
    url = urllib.parse.urlsplit(ann["runbook_url"])
    if url.scheme:
        assert url.scheme == "https" and url.netloc, f"{rule['alert']}: runbook_url: {ann['runbook_url']}"
        assert url.path.endswith("/operations.md"), f"{rule['alert']}: runbook_url is not docs/operations.md"
    else:
        assert url.path == REPO_RUNBOOK, f"{rule['alert']}: runbook_url is neither absolute nor {REPO_RUNBOOK}"
    anchor = url.fragment
    assert anchor == rule["alert"].lower(), "runbook anchor must be the alert's own heading"
    assert anchor in github_anchors(OPERATIONS.read_text()), (
        f"docs/operations.md has no heading '{rule['alert']}' for the runbook link"
    )


def test_runbook_base_is_one_and_the_same_in_rules_tests_and_kubernetes_copy():
    """make-prometheusrule sets one base everywhere; the unit tests expect the same URLs."""
    bases = {}
    for path in [RULES, PROMETHEUSRULE, *RULE_TESTS]:
        urls = runbook_urls(path.read_text())
        assert urls, f"{path} has no runbook_url"
        bases[path.name] = {u.partition("#")[0] for u in urls}
    assert len(set().union(*bases.values())) == 1, f"runbook bases differ: {bases}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_reads_only_contract_metrics(rule):
    names = metric_names(rule["expr"])
    unknown = names - set(METRICS) - set(NOT_FROM_WORKER)
    assert not unknown, f"{rule['alert']} uses metrics outside DESIGN §5 and the cluster's: {unknown}"
    assert names & set(METRICS) or "up" in names or names & set(CLUSTER_METRICS)


@pytest.mark.parametrize("alert", sorted(NO_WORKER_ALERTS))
def test_alert_fires_with_no_worker_running(alert):
    """Every hmr2_* series (and up{job="hmr2-worker"}) disappears with the last worker: these
    alerts read only KEDA's and kube-state-metrics' series."""
    (rule,) = [r for r in alert_rules() if r["alert"] == alert]
    names = metric_names(rule["expr"])
    assert names <= set(CLUSTER_METRICS), f"{alert} reads worker series: {names - set(CLUSTER_METRICS)}"
    assert NO_WORKER_ALERTS[alert] <= names, f"{alert} should read {NO_WORKER_ALERTS[alert] - names}"
    assert 'scaledObject="hmr2-worker"' in rule["expr"] or "hmr2-worker" in rule["expr"]


def test_shipped_rules_hold_no_placeholder_runbook_base():
    """No made-up organisation or host in the rules, their tests or the Kubernetes copy, and no
    default host in the renderer: each runbook_url is the runbook's path in the repository (as
    shipped) or the absolute base an operator rendered."""
    for path in [RULES, PROMETHEUSRULE, *RULE_TESTS]:
        text = path.read_text()
        found = [m.group(0) for m in PLACEHOLDER.finditer(text)]
        assert not found, f"{path.name}: placeholder runbook host {found}"
        for url in runbook_urls(text):
            assert url.startswith((REPO_RUNBOOK + "#", "https://")), f"{path.name}: {url}"
            assert not re.search(r"[<>]", url), f"{path.name}: placeholder in {url}"
    script = (PROM / "make-prometheusrule").read_text()
    code = "\n".join(l for l in script.splitlines() if not l.lstrip().startswith("#"))
    assert not re.search(r"https?://[\w-]+\.", code), "make-prometheusrule has a default runbook host"


def test_make_prometheusrule_sets_the_runbook_base_everywhere(tmp_path):
    """RUNBOOK_BASE_URL rewrites the rules, their unit tests and the Kubernetes copy together (the
    promtool tests still pass); it is required (no default host), a base that is neither an
    absolute URL nor the repository path is refused, and the repository path gives back the
    shipped files byte for byte."""
    copy = tmp_path / "deploy"
    shutil.copytree(PROM, copy / "prometheus")
    shutil.copytree(PROMETHEUSRULE.parent, copy / "k8s" / "components" / "prometheus-operator")
    script = copy / "prometheus" / "make-prometheusrule"
    base = "https://runbooks.example.net/ops/hmr2/docs/operations.md"
    files = [copy / "prometheus" / "rules" / RULES.name, copy / "k8s" / "components" / "prometheus-operator" / PROMETHEUSRULE.name]
    files += sorted((copy / "prometheus" / "tests").glob("*.test.yml"))

    def run(**env):
        return subprocess.run([str(script)], capture_output=True, text=True, env={**os.environ, **env})

    shipped = {f: f.read_bytes() for f in files}
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_BASE_URL"}
    unset = subprocess.run([str(script)], capture_output=True, text=True, env=env)
    assert unset.returncode != 0 and "RUNBOOK_BASE_URL" in unset.stderr, unset.stderr
    assert {f: f.read_bytes() for f in files} == shipped, "a refused run changed files"

    out = run(RUNBOOK_BASE_URL=base + "/")
    assert out.returncode == 0, out.stderr
    for f in files:
        urls = runbook_urls(f.read_text())
        assert urls and all(u.startswith(base + "#") for u in urls), f"{f.name}: {urls[:3]}"
    assert len(runbook_urls(files[0].read_text())) == len(alert_rules())
    promtool = shutil.which("promtool")
    if promtool:
        tests = [str(f) for f in files[2:]]
        out = subprocess.run([promtool, "test", "rules", *tests], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
    for bad in ("operations.md", "/docs/operations.md", "ftp://x.example/o.md", "https://x.example/a b", 'https://x.example/"'):
        assert run(RUNBOOK_BASE_URL=bad).returncode != 0, bad
    out = run(RUNBOOK_BASE_URL=REPO_RUNBOOK)
    assert out.returncode == 0, out.stderr
    assert {f: f.read_bytes() for f in files} == shipped, "rendering with the repository path changed files"


AGGREGATION = re.compile(r"\b(by|on)\s*\(([^)]*)\)")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_aggregation_keeps_namespace(rule):
    """One Prometheus may watch several fleets (namespaces): every `by (...)` and `on (...)` keeps
    `namespace`, so two fleets alert separately; over worker series it keeps `job` too, and `stream`
    over the queue gauges. Rules without aggregation keep every label anyway."""
    names = metric_names(rule["expr"])
    for m in AGGREGATION.finditer(rule["expr"]):
        labels = {l.strip() for l in m.group(2).split(",") if l.strip()}
        where = f"{rule['alert']}: {m.group(0)}"
        assert "namespace" in labels, f"{where} drops namespace"
        if names & set(METRICS) and m.group(1) == "by":
            assert "job" in labels, f"{where} drops job"
            if names & STREAM_METRICS:
                assert "stream" in labels, f"{where} drops stream"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_queue_wide_gauges_are_read_once_per_fleet(rule):
    """Every worker reports the same queue-wide value (the queue gauges, the open and waiting
    videos): an alert takes the max over a fleet's workers. A sum would grow with the number of
    workers and fire (or quiet) for the wrong reason; a bare gauge would fire once per worker."""
    expr = " ".join(rule["expr"].split())
    for name in metric_names(expr) & QUEUE_WIDE:
        uses = re.findall(rf"\b{name}\b", expr)
        wrapped = re.findall(rf"\b(\w+) by \(([^)]*)\) \((?:deriv\()?{name}\b", expr)
        assert len(wrapped) == len(uses), f"{rule['alert']}: {name} outside an aggregation by fleet: {expr}"
        for op, labels in wrapped:
            assert op == "max", f"{rule['alert']}: {op} by ({labels}) ({name}): every worker reports it, take max"


def test_every_alert_is_unit_tested_firing_and_not_firing():
    assert RULE_TESTS, "no promtool test files in deploy/prometheus/tests"
    firing, quiet = set(), set()
    for path in RULE_TESTS:
        doc = load_yaml(path)
        for f in doc["rule_files"]:
            assert (path.parent / f).resolve() == RULES.resolve()
        for case in doc["tests"]:
            for t in case.get("alert_rule_test", []):
                (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), f"alerts never tested firing: {names - firing}"
    assert names - quiet == set(), f"alerts never tested staying quiet: {names - quiet}"
    assert (firing | quiet) <= names, f"tests of unknown alerts: {(firing | quiet) - names}"


def test_prometheusrule_for_kubernetes_matches_the_rules_file():
    path = PROMETHEUSRULE
    (doc,) = load_yaml_docs(path)
    assert doc["kind"] == "PrometheusRule"
    assert doc["spec"] == load_yaml(RULES), (
        f"{path} is stale: run RUNBOOK_BASE_URL=docs/operations.md deploy/prometheus/make-prometheusrule"
    )


def test_compose_scrape_config_uses_the_alerting_job_name_and_valid_targets():
    cfg = load_yaml(PROM / "prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    # The alerts select job="hmr2-worker".
    assert "hmr2-worker" in jobs
    for job in jobs.values():
        for sd in job.get("file_sd_configs", []):
            for pattern in sd["files"]:
                files = list(PROM.glob(pattern))
                assert files, f"{job['job_name']}: no file matches {pattern}"
                for f in files:
                    groups = load_yaml(f) or []
                    for g in groups:
                        assert set(g) <= {"targets", "labels"}
                        assert all(re.fullmatch(r"[\w.-]+:\d+", t) for t in g["targets"])
    assert any(PROM.glob(p) for p in cfg["rule_files"])


def test_kubernetes_scrape_config(tmp_path):
    """promtool check config on prometheus-kubernetes.yml. Debian's Prometheus is built without
    Kubernetes discovery; then the file is checked with that block swapped for a static one, so
    everything else (relabelling, rules) is still checked, and the discovery block by shape."""
    src = PROM / "prometheus-kubernetes.yml"
    cfg = load_yaml(src)
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "hmr2-worker"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keeps = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    # The workers, and the trackers of components/tracker (one fleet, one job).
    kept = re.compile(keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)])
    assert kept.fullmatch("hmr2-worker") and kept.fullmatch("hmr2-tracker") and not kept.fullmatch("redis")
    assert {"target_label": "component", "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]} in [
        {k: r[k] for k in ("target_label", "source_labels") if k in r} for r in job["relabel_configs"]
    ], "the pods' component (worker, tracker) is kept as `component`: the fleet alerts count workers only"
    assert keeps[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)] == "true"
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (scripts/setup-deploy)")
    for f in PROM.glob("rules/*.yml"):
        (tmp_path / "rules").mkdir(exist_ok=True)
        shutil.copy(f, tmp_path / "rules" / f.name)
    direct = subprocess.run([promtool, "check", "config", str(src)], capture_output=True, text=True)
    if direct.returncode == 0:
        return
    assert "kubernetes_sd_configs not found" in direct.stdout + direct.stderr, direct.stdout + direct.stderr
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["10.0.0.1:9464"]}]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(cfg))
    swapped = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True)
    assert swapped.returncode == 0, swapped.stdout + swapped.stderr
