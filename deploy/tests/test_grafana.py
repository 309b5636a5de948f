"""The Grafana dashboard: well-formed, templated by namespace, job, instance and GPU (one Prometheus
may watch several fleets), with per-worker series named by pod, built only on contract metrics,
and covering every one of them; its queue figures add up the shards of a sharded queue and can be
split by shard. (Whether each query evaluates is checked against a real Prometheus in test_live.py.)"""

import json
import re

import pytest

from conftest import (
    DASHBOARD,
    ROOT,
    GPU_ONLY,
    METRICS,
    NOT_FROM_WORKER,
    dashboard_exprs,
    dashboard_variable_selectors,
    grafana_to_promql,
    metric_names,
)

GPU_LABELLED = set(GPU_ONLY)


@pytest.fixture(scope="module")
def dash():
    return json.loads(DASHBOARD.read_text())


def all_panels(dash):
    out = []

    def walk(ps):
        for p in ps:
            out.append(p)
            walk(p.get("panels", []))

    walk(dash["panels"])
    return out


def test_dashboard_is_well_formed(dash):
    assert dash["uid"] == "hmr2-worker" and dash["title"]
    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}", f"{p['title']}: use the datasource variable"


FLEET_FILTERS = ('namespace=~"$namespace"', 'job=~"$job"')
# Every selector of a worker metric, with its label matchers (if any).
WORKER_SELECTOR = re.compile(r"\b(hmr2_[a-z0-9_]+)(\{[^}]*\})?")


def test_templated_by_datasource_namespace_job_instance_and_gpu(dash):
    """namespace and job first (a fleet), then the workers of the chosen fleets, then their GPUs;
    each variable from label_values of a worker metric, narrowed by the ones before it. All is
    ".*", which also matches a label that is absent (compose has no namespace)."""
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job", "instance", "gpu"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job", "instance", "gpu"):
        v = variables[name]
        assert v["multi"] and v["includeAll"] and v["allValue"] == ".*", name
    selectors = {name: (sel, label) for name, sel, label in dashboard_variable_selectors(dash)}
    for name in ("namespace", "job", "instance", "gpu"):
        sel, label = selectors[name]
        assert label == name, f"variable {name} lists the label {label}"
        assert metric_names(sel) <= set(METRICS) and metric_names(sel), f"variable {name}: {sel}"
    assert 'namespace=~"$namespace"' in selectors["job"][0]
    for name in ("instance", "gpu"):
        assert all(f in selectors[name][0] for f in FLEET_FILTERS), f"variable {name}: {selectors[name][0]}"


def test_every_query_filters_by_the_variables(dash):
    """Each selector of a worker metric, not merely each query, carries the namespace, job and
    instance filters (and gpu for GPU metrics): a ratio filtered on one side only would mix fleets."""
    for where, expr in dashboard_exprs(dash):
        for m in WORKER_SELECTOR.finditer(expr):
            name, matchers = m.group(1), m.group(2) or ""
            for f in (*FLEET_FILTERS, 'instance=~"$instance"'):
                assert f in matchers, f"{where}: {name} is not filtered by {f}"
            if metric_names(name) & GPU_LABELLED:
                assert 'gpu=~"$gpu"' in matchers, f"{where}: {name} is not filtered by gpu"


def test_per_worker_series_are_named_by_pod(dash):
    """A series per worker is named by its pod (`{{pod}}`), never by its scrape address; a query
    that keeps one series per worker keeps namespace and pod (and instance, which is unique)."""
    for p in all_panels(dash):
        for t in p.get("targets", []):
            where = f'panel "{p["title"]}" {t["refId"]}'
            expr, legend = " ".join(t["expr"].split()), t.get("legendFormat", "")
            assert "{{instance}}" not in legend, f"{where}: name workers by {{{{pod}}}}"
            per_worker = [set(map(str.strip, g.split(","))) for g in re.findall(r"by \(([^)]*)\)", expr)]
            per_worker = [g for g in per_worker if "instance" in g]
            for g in per_worker:
                assert {"namespace", "pod"} <= g, f"{where}: by ({', '.join(sorted(g))}) drops namespace or pod"
            aggregated = re.search(r"\b(sum|max|min|avg|count)\b", expr)
            if (per_worker or not aggregated) and p["type"] != "table":
                assert "{{pod}}" in legend, f"{where}: a series per worker without {{{{pod}}}} in its legend"


def test_queries_use_contract_metrics_and_cover_all_of_them(dash):
    used = set()
    for where, expr in dashboard_exprs(dash):
        grafana_to_promql(expr)  # no unknown variables
        names = metric_names(expr)
        unknown = names - set(METRICS) - set(NOT_FROM_WORKER)
        assert not unknown, f"{where}: metrics outside DESIGN §5: {unknown}"
        used |= names
    assert set(METRICS) - used == set(), f"metrics with no panel: {set(METRICS) - used}"


def test_has_the_panels_operators_need(dash):
    exprs = " ".join(e for _, e in dashboard_exprs(dash))
    # DCGM joined to the worker's GPU by uuid.
    assert "DCGM_FI_DEV_FB_USED" in exprs and "on (uuid)" in exprs and '"UUID"' in exprs
    # Latency percentiles by stage.
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (stage, le) (rate(hmr2_stage_duration_seconds_bucket" in exprs
    # Frames/s, outcomes.
    assert 'outcome="ok"' in exprs and "sum by (outcome)" in exprs
    titles = {p["title"] for p in all_panels(dash)}
    assert any("VRAM" in t for t in titles) and any("Batch size" in t for t in titles)
    # Readiness inputs per pod; Redis errors by operation and code.
    assert "by (namespace, pod, instance, input) (hmr2_worker_ready_input" in exprs
    assert "sum by (op, code) (rate(hmr2_redis_errors_total" in exprs


QUEUE_GAUGES = {"hmr2_queue_length", "hmr2_queue_lag", "hmr2_queue_pending"}
# Every worker exports every job stream's gauges (one stream per shard on Redis Cluster, label
# `stream`), so a query first takes one value per stream across the workers of a fleet
# (max by (namespace, job, stream): two fleets may each have a stream "hmr2:jobs", in their own
# Redis) and then, for the whole queue, adds the streams up. max() alone would show the busiest
# shard only, and sum() alone would count each stream once per worker.
QUEUE_TOTAL = re.compile(r"sum\(max by \(namespace, job, stream\) \((hmr2_queue_(?:length|lag|pending))\{[^}]*\}\)\)")
QUEUE_BY_SHARD = re.compile(r"max by \(namespace, job, stream\) \((hmr2_queue_(?:length|lag|pending))\{[^}]*\}\)")


def test_queue_panels_add_up_the_shards_and_split_by_shard(dash):
    totals, by_shard = set(), set()
    for p in all_panels(dash):
        for t in p.get("targets", []):
            expr = " ".join(t.get("expr", "").split())
            if not metric_names(expr) & QUEUE_GAUGES:
                continue
            where = f'panel "{p["title"]}" {t["refId"]}'
            if m := QUEUE_TOTAL.fullmatch(expr):
                totals.add(m.group(1))
            elif m := QUEUE_BY_SHARD.fullmatch(expr):
                assert "{{stream}}" in t.get("legendFormat", ""), f"{where}: a by-shard series names its stream"
                by_shard.add(m.group(1))
            else:
                raise AssertionError(
                    f"{where}: queue gauges are read as sum(max by (namespace, job, stream) (...)) for "
                    f"the queue, or max by (namespace, job, stream) (...) per shard: {expr}"
                )
    assert totals == QUEUE_GAUGES, f"no total over the shards for {sorted(QUEUE_GAUGES - totals)}"
    assert by_shard == QUEUE_GAUGES, f"no by-shard view of {sorted(QUEUE_GAUGES - by_shard)}"
    # The fleet's queue-lag figure is the whole queue's.
    (lag,) = [p for p in all_panels(dash) if p["title"] == "Queue lag"]
    assert QUEUE_TOTAL.fullmatch(lag["targets"][0]["expr"])


def row_panels(dash, title):
    """The panels under the (expanded) row `title`: those after it up to the next row."""
    out, inside = [], False
    for p in dash["panels"]:
        if p["type"] == "row":
            inside = p["title"] == title
            out += p.get("panels", []) if inside else []
            continue
        if inside:
            out.append(p)
    return out


# hmr2_videos_open / hmr2_videos_waiting cover every shard and every worker reports the same
# value: the largest across a fleet's workers, then the fleets added up (one Prometheus may watch
# several). A sum over workers would multiply them by the fleet size.
VIDEO_GAUGE = re.compile(r"sum\(max by \(namespace, job\) \((hmr2_videos_(?:open|waiting))\{[^}]*\}\)\)")


def test_videos_row_shows_what_an_operator_of_videos_needs(dash):
    """A "Videos" row: videos finished per second by status, open and waiting videos read once per
    fleet, video duration p50 and p95, tracks per video, and the track stage's p95; every video
    metric is on it."""
    panels = row_panels(dash, "Videos")
    assert panels, 'no "Videos" row'
    exprs = [" ".join(t["expr"].split()) for p in panels for t in p["targets"]]
    joined = " ".join(exprs)
    assert re.search(r"sum by \(status\) \(rate\(hmr2_videos_total\{[^}]*\}\[\$__rate_interval\]\)\)", joined)
    gauges = set()
    for e in exprs:
        if metric_names(e) & {"hmr2_videos_open", "hmr2_videos_waiting"}:
            m = VIDEO_GAUGE.fullmatch(e)
            assert m, f"open/waiting videos are read as sum(max by (namespace, job) (...)): {e}"
            gauges.add(m.group(1))
    assert gauges == {"hmr2_videos_open", "hmr2_videos_waiting"}
    for q in ("0.5", "0.95"):
        assert f"histogram_quantile({q}, sum by (le) (rate(hmr2_video_duration_seconds_bucket" in joined
    assert "hmr2_tracks_per_video_bucket" in joined
    track = [e for e in exprs if 'stage="track"' in e]
    assert any(e.startswith("histogram_quantile(0.95, ") for e in track), "no p95 of the track stage"
    video_metrics = {n for n in METRICS if n.startswith(("hmr2_video", "hmr2_tracks"))}
    assert video_metrics <= metric_names(joined), f"video metrics off the Videos row: {video_metrics - metric_names(joined)}"


METRICS_RS = ROOT / "src" / "metrics.rs"


def test_dashboard_and_alert_metrics_are_the_workers_own():
    """Every worker metric the dashboard and the alerts are built on (conftest.METRICS) is named in
    the worker's src/metrics.rs, and every stage the dashboard selects is one of its stage labels:
    a panel on a name the worker does not export stays empty, and an alert on it never fires."""
    source = METRICS_RS.read_text()
    names = set(re.findall(r'pub const \w+: &str = "(hmr2_[a-z0-9_]+)";', source))
    assert names, f"no metric names found in {METRICS_RS}"
    assert set(METRICS) - names == set(), f"not in src/metrics.rs: {sorted(set(METRICS) - names)}"
    stages = set(re.findall(r'pub const \w+: &str = "([a-z_]+)";', source.split("pub mod stage", 1)[1].split("}", 1)[0]))
    dash = json.loads(DASHBOARD.read_text())
    used = {s for _, e in dashboard_exprs(dash) for s in re.findall(r'stage="([a-z_]+)"', e)}
    assert used - stages == set(), f"stages the worker does not label: {sorted(used - stages)}"


def test_whole_frame_answers_are_on_the_dashboard_at_the_alerts_threshold(dash):
    """A fleet answering frames with whole-frame crops (no detector) shows it at a glance, in
    the same terms as HMR2WholeFrameAnswers: the share of frames whose box source is "frame"."""
    panel = next(p for p in all_panels(dash) if p["title"] == "Whole-frame answers")
    expr = panel["targets"][0]["expr"]
    assert 'hmr2_people_per_frame_count{source="frame"' in expr and "/ sum(rate(hmr2_people_per_frame_count{" in expr
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    red = max(s["value"] or 0 for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"])
    rules = (ROOT / "deploy/prometheus/rules/hmr2-worker.rules.yml").read_text()
    alert = rules.split("- alert: HMR2WholeFrameAnswers", 1)[1].split("- alert:", 1)[0]
    assert f"> {red}" in alert, "the panel turns red where the alert fires"
