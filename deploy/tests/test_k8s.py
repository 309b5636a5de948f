"""Kubernetes manifests: they parse and build, and what matters in them is right: probes on the
worker's real endpoints and port, a grace period longer than the worker's, one GPU per pod, the
config mounted where --config reads it, the Redis user and password from a Secret, KEDA on the
real stream's length (a trigger that cannot go blind), Redis TLS for workers and KEDA alike, the
NVIDIA RuntimeClass option, scraping, and a PodDisruptionBudget that never blocks a drain."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import (
    IMAGE_TOML,
    K8S,
    K8S_TOML,
    RULES,
    listen_port,
    load_toml,
    load_yaml,
    load_yaml_docs,
    setting,
    worker_bin_or_skip,
)

BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
COMPONENTS = K8S / "components"


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def kustomize_tool() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def build(directory: Path) -> list[dict]:
    """The rendered manifests: `kubectl kustomize` when available, else the listed resources
    (generators and patches are then not applied)."""
    tool = kustomize_tool()
    if tool:
        out = subprocess.run(tool + [str(directory)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    docs = []
    k = load_yaml(directory / "kustomization.yaml")
    for r in k.get("resources", []) + k.get("components", []):
        p = directory / r
        docs += build(p) if p.is_dir() else load_yaml_docs(p)
    for gen in k.get("configMapGenerator", []):
        data = {Path(f).name: (directory / f).read_text() for f in gen.get("files", [])}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for gen in k.get("secretGenerator", []):
        keys = {lit.split("=", 1)[0]: "" for lit in gen.get("literals", [])}
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]}, "data": keys})
    return docs


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module", params=["base", "overlay"])
def rendered(request):
    return build(BASE if request.param == "base" else OVERLAY)


def build_with_components(tmp_path: Path, *components: str) -> list[dict]:
    """The base with the named components, rendered by kustomize (skips without it: the fallback
    of build() applies no patches)."""
    tool = kustomize_tool()
    if not tool:
        pytest.skip("neither kubectl nor kustomize is installed: components cannot be rendered")
    rel = lambda p: os.path.relpath(p, tmp_path)  # noqa: E731 (kustomize refuses absolute paths)
    k = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [rel(BASE)],
        "components": [rel(COMPONENTS / c) for c in components],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(k))
    out = subprocess.run(tool + [str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def worker_container(docs):
    dep = one(docs, "Deployment", "hmr2-worker")
    (c,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"]
    return dep, c


# --- files ------------------------------------------------------------------------------------


def test_every_yaml_parses_and_names_its_kind():
    files = sorted(K8S.rglob("*.yaml")) + sorted(K8S.rglob("*.yml"))
    assert files
    for f in files:
        for doc in load_yaml_docs(f):
            if f.name == "kustomization.yaml":
                assert doc["kind"] in {"Kustomization", "Component"}, f
                continue
            if "patches" in f.parts:
                assert doc.get("kind"), f
                continue
            assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), f


@pytest.mark.parametrize("kfile", kustomizations(), ids=lambda p: str(p.parent.relative_to(K8S)))
def test_kustomization_references_exist(kfile):
    k = load_yaml(kfile)
    here = kfile.parent
    refs = list(k.get("resources", [])) + list(k.get("components", []))
    refs += [f for g in k.get("configMapGenerator", []) + k.get("secretGenerator", []) for f in g.get("files", [])]
    refs += [p["path"] for p in k.get("patches", []) if "path" in p]
    for r in refs:
        assert (here / r).exists(), f"{kfile}: {r} does not exist"


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_kustomize_builds(directory):
    tool = kustomize_tool()
    if not tool:
        pytest.skip("neither kubectl nor kustomize is installed; references are checked above")
    out = subprocess.run(tool + [str(directory)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("toml", [K8S_TOML, IMAGE_TOML], ids=["k8s", "image"])
def test_worker_accepts_the_config_files(toml):
    """The worker's own loader (unknown keys are errors) accepts the shipped config files."""
    binary = worker_bin_or_skip("config")
    out = subprocess.run([str(binary), "--config", str(toml), "config"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "/models/hmr2.pt" in out.stdout


# --- the Deployment ---------------------------------------------------------------------------


def test_probes_point_at_the_worker_endpoints_on_its_port(rendered):
    _, c = worker_container(rendered)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == listen_port(K8S_TOML), "container port must be http.listen's port"

    def target(probe):
        get = c[probe]["httpGet"]
        port = get["port"]
        return get["path"], ports[port] if isinstance(port, str) else port

    assert target("livenessProbe") == ("/healthz", ports["metrics"])
    assert target("readinessProbe") == ("/readyz", ports["metrics"])
    if "startupProbe" in c:
        assert target("startupProbe") == ("/healthz", ports["metrics"])


def test_grace_period_exceeds_the_worker_shutdown_grace(rendered):
    dep, _ = worker_container(rendered)
    grace = setting(K8S_TOML, "shutdown", "grace_seconds")
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


def test_one_gpu_per_pod(rendered):
    _, c = worker_container(rendered)
    res = c["resources"]
    assert int(res["limits"]["nvidia.com/gpu"]) == 1
    assert int(res.get("requests", {}).get("nvidia.com/gpu", 1)) == 1
    assert load_toml(K8S_TOML)["model"]["device"] in {"cuda", "cuda:0"}, "one GPU per pod is cuda:0"


def test_config_comes_from_the_configmap_and_is_passed_with_config_flag(rendered):
    dep, c = worker_container(rendered)
    args = c.get("args", [])
    assert args[0] == "run"
    path = Path(args[args.index("--config") + 1])
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volume_name = mounts[str(path.parent)]
    (vol,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == volume_name]
    cm = one(rendered, "ConfigMap", vol["configMap"]["name"])
    assert cm["data"][path.name] == K8S_TOML.read_text()


def test_model_is_mounted_read_only_where_the_config_expects_it(rendered):
    _, c = worker_container(rendered)
    model = Path(load_toml(K8S_TOML)["model"]["path"])
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts[str(model.parent)].get("readOnly") is True


def redis_url(c) -> str:
    (url,) = [e for e in c["env"] if e["name"] == "HMR2_REDIS__URL"]
    assert "valueFrom" not in url
    return url["value"]


def secret_env(c, name) -> dict:
    """The secretKeyRef of the container's variable `name`."""
    (e,) = [e for e in c["env"] if e["name"] == name]
    return e["valueFrom"]["secretKeyRef"]


def test_redis_user_and_password_come_from_a_secret(rendered):
    _, c = worker_container(rendered)
    names = [e["name"] for e in c["env"]]
    url = redis_url(c)
    m = re.fullmatch(r"(rediss?)://\$\((\w+)\):\$\((\w+)\)@\$\((\w+)\)/\d+", url)
    assert m, f"the URL should be scheme://$(USER):$(PASSWORD)@$(ADDRESS)/db: {url}"
    # Every $(VAR) in the URL is defined earlier in the list (Kubernetes expands only those).
    for ref in m.groups()[1:]:
        assert ref in names[: names.index("HMR2_REDIS__URL")], f"$({ref}) is not defined before the URL"
    user, password = secret_env(c, m.group(2)), secret_env(c, m.group(3))
    assert user["name"] == password["name"], "user and password come from one Secret"
    assert (user["key"], password["key"]) == ("username", "password")
    secrets = [d for d in rendered if d["kind"] == "Secret"]
    if secrets:  # the overlay generates it; the base expects it to exist
        s = one(rendered, "Secret", password["name"])
        keys = {**s.get("data", {}), **s.get("stringData", {})}
        assert {"username", "password"} <= set(keys)
    # And the password is not written in the config file.
    assert "url" not in load_toml(K8S_TOML).get("redis", {})


def test_runs_as_non_root(rendered):
    dep, c = worker_container(rendered)
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


# --- KEDA -------------------------------------------------------------------------------------

# Trigger metadata that selects one of the redis-streams scaler's consumer-group modes (XPENDING or
# XINFO GROUPS lag). The lag is nil once acknowledged entries are deleted (the worker XDELs them),
# which turns a lag trigger inactive under load; XPENDING is 0 with no worker, so it cannot wake
# the fleet. Only the stream-length mode (XLEN, no consumer group) never goes blind.
CONSUMER_GROUP_MODES = {"consumerGroup", "lagCount", "activationLagCount", "pendingEntriesCount"}


def test_keda_scales_on_the_stream_length_down_to_zero(rendered):
    dep, c = worker_container(rendered)
    so = one(rendered, "ScaledObject")
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert so["spec"]["minReplicaCount"] == 0
    assert so["spec"]["maxReplicaCount"] >= 1
    prefix = setting(K8S_TOML, "queue", "prefix")
    triggers = so["spec"]["triggers"]
    assert triggers and all(t["type"] == "redis-streams" for t in triggers)
    env = {e["name"] for e in c["env"]}
    for t in triggers:
        m = t["metadata"]
        assert m["stream"] == f"{prefix}:jobs"
        assert not CONSUMER_GROUP_MODES & set(m), f"a consumer-group trigger can go blind: {sorted(CONSUMER_GROUP_MODES & set(m))}"
        assert int(m["streamLength"]) > 0, "stream-length mode with a per-replica target"
        assert m.get("address") or m.get("addressFromEnv") in env


def test_keda_logs_in_with_the_workers_user_and_password(rendered):
    _, c = worker_container(rendered)
    so = one(rendered, "ScaledObject")
    auths = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "TriggerAuthentication"}
    for t in so["spec"]["triggers"]:
        auth = auths[t["authenticationRef"]["name"]]
        refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        for param, var in (("username", "REDIS_USERNAME"), ("password", "REDIS_PASSWORD")):
            ref = secret_env(c, var)
            assert refs.get(param) == (ref["name"], ref["key"]), f"KEDA's {param} is not the workers'"
        assert set(refs) <= {"username", "password", "ca", "cert", "key", "keyPassword"}, refs


def tls_parts(docs) -> dict:
    """What says TLS in the rendered manifests: the workers' URL scheme, KEDA's triggers, and the
    CA the two trust."""
    dep, c = worker_container(docs)
    so = one(docs, "ScaledObject")
    auth = one(docs, "TriggerAuthentication")
    env = {e["name"]: e for e in c["env"]}
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    return {
        "worker": redis_url(c).startswith("rediss://"),
        "keda": [t["metadata"].get("enableTLS") == "true" for t in so["spec"]["triggers"]],
        "auth": refs,
        "env": env,
        "mounts": {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])},
        "volumes": {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]},
    }


def test_tls_is_all_or_nothing(rendered):
    """The workers speak rediss:// exactly when KEDA's trigger has enableTLS, and both trust the
    same CA: the file SSL_CERT_FILE names is the key KEDA's `ca` reads."""
    t = tls_parts(rendered)
    assert all(k == t["worker"] for k in t["keda"]), f"workers TLS {t['worker']}, KEDA triggers {t['keda']}"
    assert "tls" not in t["auth"], "KEDA refuses `tls` in the TriggerAuthentication with enableTLS set"
    if not t["worker"]:
        assert "SSL_CERT_FILE" not in t["env"] and "ca" not in t["auth"]
        return
    ca = t["auth"]["ca"]
    path = Path(t["env"]["SSL_CERT_FILE"]["value"])
    vol = t["volumes"][t["mounts"][str(path.parent)]]
    assert vol["secret"]["secretName"] == ca["name"]
    assert {"key": ca["key"], "path": path.name} in vol["secret"]["items"]


def test_base_is_plain_and_the_example_overlay_uses_tls():
    assert not tls_parts(build(BASE))["worker"]
    if kustomize_tool():  # the component's patches need kustomize
        t = tls_parts(build(OVERLAY))
        assert t["worker"] and all(t["keda"]) and "ca" in t["auth"]


def test_redis_tls_component_on_the_base(tmp_path):
    t = tls_parts(build_with_components(tmp_path, "redis-tls"))
    assert t["worker"] and t["keda"] and all(t["keda"])
    assert set(t["auth"]) >= {"username", "password", "ca"}


def test_nvidia_runtime_class_component(tmp_path):
    """RuntimeClass `nvidia` is opt-in: off in the base, set by components/nvidia-runtime-class."""
    dep, _ = worker_container(build(BASE))
    assert "runtimeClassName" not in dep["spec"]["template"]["spec"]
    assert "# runtimeClassName: nvidia" in (BASE / "deployment.yaml").read_text()
    assert "components/nvidia-runtime-class" in (OVERLAY / "kustomization.yaml").read_text()
    dep, _ = worker_container(build_with_components(tmp_path, "nvidia-runtime-class"))
    assert dep["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"


# --- scraping, disruption ---------------------------------------------------------------------


def test_service_scraping_and_pdb_select_the_worker_pods(rendered):
    dep, c = worker_container(rendered)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics")

    def selects(selector):
        return selector and all(pod_labels.get(k) == v for k, v in selector.items())

    svc = one(rendered, "Service", "hmr2-worker")
    assert selects(svc["spec"]["selector"])
    (sp,) = [p for p in svc["spec"]["ports"] if p["name"] == "metrics"]
    assert sp["targetPort"] in ("metrics", port)
    assert svc["spec"].get("publishNotReadyAddresses") is True, "unready workers must stay scraped"

    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert int(ann["prometheus.io/port"]) == port
    assert ann["prometheus.io/path"] == "/metrics"

    pdb = one(rendered, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"])
    assert "maxUnavailable" in pdb["spec"] and "minAvailable" not in pdb["spec"]

    monitors = [d for d in rendered if d["kind"] == "ServiceMonitor"]
    for sm in monitors:
        assert all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
        # The alerts select job="hmr2-worker".
        assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == "hmr2-worker"


def test_overlay_adds_servicemonitor_and_the_alert_rules():
    docs = build(OVERLAY)
    one(docs, "ServiceMonitor")
    rule = one(docs, "PrometheusRule")
    assert rule["spec"] == load_yaml(RULES)
    if kustomize_tool():  # namespaces are set by kustomize itself
        assert all(d["metadata"].get("namespace") == "hmr2" for d in docs if d["kind"] != "Namespace")
