"""Kubernetes manifests: they parse and build, and what matters in them is right: probes on the
worker's real endpoints and port, a grace period longer than the worker's, one GPU per pod, the
config mounted where --config reads it, the Redis user and password from a Secret, KEDA on the
real stream's length (a trigger that cannot go blind), Redis TLS for workers and KEDA alike, the
NVIDIA RuntimeClass option, scraping, and a PodDisruptionBudget that never blocks a drain. The
Redis Cluster overlay passes all of that too, and KEDA there has one trigger per shard of the queue,
each on that shard's job stream, with the seeds the workers use."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import (
    DEFAULT_TOML,
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
CLUSTER = K8S / "overlays" / "redis-cluster"
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


def kustomize_or_skip() -> list[str]:
    tool = kustomize_tool()
    if not tool:
        pytest.skip("neither kubectl nor kustomize is installed: patches cannot be applied")
    return tool


@pytest.fixture(scope="module", params=["base", "overlay", "cluster"])
def rendered(request):
    if request.param == "cluster":
        # Without kustomize build() applies no patches: that would be the base again.
        kustomize_or_skip()
        return build(CLUSTER)
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


@pytest.mark.parametrize("directory", [BASE, OVERLAY, CLUSTER], ids=["base", "overlay", "cluster"])
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
    assert "/models/detector.pt" in out.stdout


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


# One URL of HMR2_REDIS__URL (several, comma-separated, are the seeds of a Redis Cluster):
# scheme://$(USER):$(PASSWORD)@ then $(ADDRESS) or host:port, then an optional /db.
SEED_URL = re.compile(r"(rediss?)://\$\((\w+)\):\$\((\w+)\)@(?:\$\((\w+)\)|([A-Za-z0-9.-]+:\d+))(?:/(\d+))?")


def seed_urls(c) -> list[re.Match]:
    """The URLs of HMR2_REDIS__URL, each matched by SEED_URL (one for a single Redis)."""
    url = redis_url(c)
    assert not re.search(r"\s", url), f"whitespace inside HMR2_REDIS__URL: {url!r}"
    seeds = []
    for part in url.split(","):
        m = SEED_URL.fullmatch(part)
        assert m, f"each URL should be scheme://$(USER):$(PASSWORD)@($(ADDRESS)|host:port)[/db]: {part}"
        seeds.append(m)
    return seeds


def env_value(c, name) -> str | None:
    """The literal value of the container's variable `name`, or None when it is not set."""
    found = [e for e in c["env"] if e["name"] == name]
    assert len(found) <= 1, f"{name} is set twice"
    return found[0].get("value") if found else None


def queue_layout(c) -> tuple[bool, int]:
    """(cluster, shards) as the worker in this container sees them: its environment, else the
    mounted worker.toml, else the defaults (false and 1 where config/default.toml has no such key)."""
    toml, defaults = load_toml(K8S_TOML), load_toml(DEFAULT_TOML)

    def pick(env, section, key, fallback):
        value = env_value(c, env)
        if value is not None:
            return value
        return toml.get(section, {}).get(key, defaults.get(section, {}).get(key, fallback))

    cluster = str(pick("HMR2_REDIS__CLUSTER", "redis", "cluster", False)).lower() == "true"
    shards = int(pick("HMR2_QUEUE__SHARDS", "queue", "shards", 1))
    # Several seed URLs mean cluster mode to the worker, whatever redis.cluster says.
    return cluster or len(seed_urls(c)) > 1, shards


def job_streams(c) -> list[str]:
    """The job streams the workers of this container read, in shard order (client/src/keys.rs):
    `<prefix>:jobs` for one shard off cluster, else `{<prefix>:<k>}:jobs` for every shard k."""
    prefix = setting(K8S_TOML, "queue", "prefix")
    cluster, shards = queue_layout(c)
    assert shards >= 1, "queue.shards must be at least 1"
    if shards == 1 and not cluster:
        return [f"{prefix}:jobs"]
    return [f"{{{prefix}:{k}}}:jobs" for k in range(shards)]


def secret_env(c, name) -> dict:
    """The secretKeyRef of the container's variable `name`."""
    (e,) = [e for e in c["env"] if e["name"] == name]
    return e["valueFrom"]["secretKeyRef"]


def test_redis_user_and_password_come_from_a_secret(rendered):
    _, c = worker_container(rendered)
    names = [e["name"] for e in c["env"]]
    seeds = seed_urls(c)
    assert len({(m.group(2), m.group(3)) for m in seeds}) == 1, "every seed logs in as the same user"
    m = seeds[0]
    # Every $(VAR) in the URLs is defined earlier in the list (Kubernetes expands only those).
    for seed in seeds:
        for ref in filter(None, seed.group(2, 3, 4)):
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


# The metadata each Redis streams scaler reads (KEDA's docs for redis-streams and
# redis-cluster-streams), and the keys that name the Redis to read: a misspelt key is ignored by
# KEDA, so a trigger with `address` on the cluster scaler would find no Redis at all.
KEDA_STREAMS_METADATA = {
    "redis-streams": {
        "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv",
        "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
        "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl", "databaseIndex",
    },
    "redis-cluster-streams": {
        "addresses", "addressesFromEnv", "hosts", "hostsFromEnv", "ports", "portsFromEnv",
        "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
        "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl", "databaseIndex",
    },
}
KEDA_ADDRESS = {"redis-streams": ("address", "addressFromEnv"), "redis-cluster-streams": ("addresses", "addressesFromEnv")}


def test_keda_scales_on_the_stream_length_down_to_zero(rendered):
    """One stream-length trigger per job stream the workers read: `redis-streams` on
    `<prefix>:jobs` for one Redis, `redis-cluster-streams` on every shard's stream on a cluster."""
    dep, c = worker_container(rendered)
    so = one(rendered, "ScaledObject")
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert so["spec"]["minReplicaCount"] == 0
    assert so["spec"]["maxReplicaCount"] >= 1
    cluster, _ = queue_layout(c)
    kind = "redis-cluster-streams" if cluster else "redis-streams"
    triggers = so["spec"]["triggers"]
    assert triggers and all(t["type"] == kind for t in triggers), f"{kind} triggers only"
    assert [t["metadata"]["stream"] for t in triggers] == job_streams(c), "one trigger per job stream, in shard order"
    env = {e["name"] for e in c["env"]}
    for t in triggers:
        m = t["metadata"]
        assert set(m) <= KEDA_STREAMS_METADATA[kind], f"{kind} has no {sorted(set(m) - KEDA_STREAMS_METADATA[kind])}"
        assert not CONSUMER_GROUP_MODES & set(m), f"a consumer-group trigger can go blind: {sorted(CONSUMER_GROUP_MODES & set(m))}"
        assert int(m["streamLength"]) > 0, "stream-length mode with a per-replica target"
        literal, from_env = KEDA_ADDRESS[kind]
        assert m.get(literal) or m.get(from_env) in env, f"{kind} needs {literal} or {from_env} (a variable of the worker)"


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
    schemes = {m.group(1) for m in seed_urls(c)}
    assert len(schemes) == 1, f"seed URLs mix redis:// and rediss://: {redis_url(c)}"
    return {
        "worker": schemes == {"rediss"},
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
        assert "SSL_CERT_FILE" not in t["env"] and "ca" not in t["auth"], "a TLS CA, but plain redis:// URLs"
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


# --- Redis Cluster overlay ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    kustomize_or_skip()
    return build(CLUSTER)


def test_cluster_overlay_turns_cluster_mode_on(cluster):
    _, c = worker_container(cluster)
    assert env_value(c, "HMR2_REDIS__CLUSTER") == "true"
    shards = env_value(c, "HMR2_QUEUE__SHARDS")
    assert shards is not None and int(shards) >= 1, "HMR2_QUEUE__SHARDS: the number of shards, at least 1"
    assert queue_layout(c) == (True, int(shards))
    # A cluster has database 0 only; no seed names another.
    for m in seed_urls(c):
        assert m.group(6) in (None, "0"), f"database {m.group(6)} in a cluster seed URL"


def test_cluster_seeds_are_the_same_for_the_workers_and_keda(cluster):
    """KEDA reads REDIS_ADDRESSES (addressesFromEnv); the workers read the same nodes as URLs."""
    _, c = worker_container(cluster)
    addresses = env_value(c, "REDIS_ADDRESSES")
    assert addresses, "REDIS_ADDRESSES: the seeds as host:port, comma-separated, for KEDA"
    seeds = [m.group(5) or f"$({m.group(4)})" for m in seed_urls(c)]
    assert seeds == [a.strip() for a in addresses.split(",")], "HMR2_REDIS__URL and REDIS_ADDRESSES name other nodes"
    assert "REDIS_ADDRESS" not in {e["name"] for e in c["env"]}, "the single-node address is left over"
    for t in one(cluster, "ScaledObject")["spec"]["triggers"]:
        assert t["metadata"].get("addressesFromEnv") == "REDIS_ADDRESSES", "KEDA reads the seeds from REDIS_ADDRESSES"


def test_cluster_has_one_trigger_per_shard(cluster):
    """Exactly the streams {<prefix>:0}:jobs .. {<prefix>:<shards-1>}:jobs, each once, each in
    stream-length mode: a missing shard would never be counted, an extra one reads nothing."""
    _, c = worker_container(cluster)
    shards = int(env_value(c, "HMR2_QUEUE__SHARDS"))
    prefix = setting(K8S_TOML, "queue", "prefix")
    triggers = one(cluster, "ScaledObject")["spec"]["triggers"]
    assert len(triggers) == shards, f"{len(triggers)} triggers for {shards} shards"
    assert [t["type"] for t in triggers] == ["redis-cluster-streams"] * shards
    streams = [t["metadata"]["stream"] for t in triggers]
    assert streams == [f"{{{prefix}:{k}}}:jobs" for k in range(shards)], f"not the shards' job streams: {streams}"
    for t in triggers:
        assert "consumerGroup" not in t["metadata"], "stream-length mode: no consumer group"
        assert t["authenticationRef"]["name"] == "hmr2-redis"


def keda_metric_name(index: int, stream: str) -> str:
    """The external metric KEDA's Redis streams scalers (plain and cluster) give the HPA for a
    trigger: `s<index>-redis-streams-<stream>`, with / . : % ( ) turned into "-" (KEDA's
    GenerateMetricNameWithIndex and NormalizeString)."""
    name = f"redis-streams-{stream}"
    for ch in "/.:%()":
        name = name.replace(ch, "-")
    return f"s{index}-{name}"


def test_cluster_triggers_give_the_hpa_distinct_valid_metric_names(cluster):
    """The hash tag's braces survive into KEDA's metric names. Kubernetes takes an external
    metric name that is a valid path segment (no "/" or "%", not "." or ".."), and the HPA needs
    one name per trigger: otherwise the ScaledObject is refused or two shards read as one."""
    triggers = one(cluster, "ScaledObject")["spec"]["triggers"]
    names = [keda_metric_name(i, t["metadata"]["stream"]) for i, t in enumerate(triggers)]
    assert names[0] == "s0-redis-streams-{hmr2-0}-jobs"
    assert len(set(names)) == len(names), names
    for n in names:
        assert n not in (".", "..") and not set(n) & set("/%"), f"{n} is not a valid path segment name"
        assert len(n) <= 253, n


def test_cluster_per_shard_target_is_the_fleet_target_split_over_the_shards(cluster):
    """The HPA takes the largest of the triggers' replica counts, not their sum: for the fleet to
    be sized like the base's for the same total backlog spread evenly, each shard's streamLength
    is the base's divided by the shards (docs/operations.md, "Redis Cluster")."""
    _, c = worker_container(cluster)
    shards = int(env_value(c, "HMR2_QUEUE__SHARDS"))
    (base_trigger,) = one(build(BASE), "ScaledObject")["spec"]["triggers"]
    fleet = int(base_trigger["metadata"]["streamLength"])
    lengths = {int(t["metadata"]["streamLength"]) for t in one(cluster, "ScaledObject")["spec"]["triggers"]}
    assert len(lengths) == 1, f"every shard gets the same target: {sorted(lengths)}"
    assert lengths <= {fleet // shards, -(-fleet // shards)}, f"per-shard streamLength {sorted(lengths)}, expected {fleet} / {shards}"


def test_worker_accepts_the_cluster_overlay_settings(cluster):
    """The worker's own loader takes the overlay's variables (a misspelt one is an error) and
    ends up in cluster mode with the overlay's shards."""
    binary = worker_bin_or_skip("config")
    _, c = worker_container(cluster)
    secrets = {"REDIS_USERNAME": "hmr2-worker", "REDIS_PASSWORD": "not-the-password"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMR2_")}
    for e in c["env"]:
        if e["name"].startswith("HMR2_"):
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: secrets[m.group(1)], e["value"])
    out = subprocess.run([str(binary), "--config", str(K8S_TOML), "config"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    settings = tomllib.loads(out.stdout)
    assert settings["redis"]["cluster"] is True
    assert settings["queue"]["shards"] == int(env_value(c, "HMR2_QUEUE__SHARDS"))
    assert "not-the-password" not in out.stdout + out.stderr


def test_cluster_overlay_keeps_the_base_scaling_behaviour(cluster):
    """Scale to zero, the fallback, the cooldown and the slow scale-down are the base's."""
    base = one(build(BASE), "ScaledObject")["spec"]
    spec = one(cluster, "ScaledObject")["spec"]
    for key in ("minReplicaCount", "pollingInterval", "cooldownPeriod", "fallback", "advanced"):
        assert spec.get(key) == base.get(key), key


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


# --- standalone trackers (components/tracker) --------------------------------------------------


def overlay_with_tracker(tmp_path: Path, overlay: str) -> list[dict]:
    """The overlay as an operator turns trackers on: its commented `components/tracker` line
    uncommented where it stands (in a copy of deploy/k8s), rendered by kustomize."""
    kustomize_or_skip()
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kfile = copy / "overlays" / overlay / "kustomization.yaml"
    text = kfile.read_text()
    line = re.search(r"^(\s*)# (- \.\./\.\./components/tracker)\b.*$", text, re.M)
    assert line, f"overlays/{overlay} has no commented `- ../../components/tracker` line to turn on"
    kfile.write_text(text.replace(line.group(0), line.group(1) + line.group(2)))
    return build(kfile.parent)


@pytest.fixture(params=["base", "overlay", "cluster"])
def with_tracker(request, tmp_path):
    if request.param == "base":
        return build_with_components(tmp_path, "tracker")
    return overlay_with_tracker(tmp_path, {"overlay": "example", "cluster": "redis-cluster"}[request.param])


def tracker_container(docs):
    dep = one(docs, "Deployment", "hmr2-tracker")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, c


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels and matchExpressions, or a plain map) selects `labels`."""
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    ok = all(labels.get(k) == v for k, v in match.items())
    for e in selector.get("matchExpressions", []):
        op, value = e["operator"], labels.get(e["key"])
        ok &= {"In": value in e.get("values", []), "NotIn": value not in e.get("values", []),
               "Exists": value is not None, "DoesNotExist": value is None}[op]
    return ok


def test_tracker_runs_track_with_the_workers_config_and_model_and_no_gpu(with_tracker):
    """`hmr2-worker track` from the workers' image and ConfigMap, the model volume read-only (for
    <model>.smpl.pt), about one core, no GPU asked for or tolerated, the device set to the CPU."""
    wdep, w = worker_container(with_tracker)
    dep, c = tracker_container(with_tracker)
    pod, wpod = dep["spec"]["template"]["spec"], wdep["spec"]["template"]["spec"]
    args = c["args"]
    assert args[0] == "track" and args[args.index("--config") + 1] == w["args"][w["args"].index("--config") + 1]
    assert c["image"] == w["image"], "the trackers run the workers' image"
    volumes = {v["name"]: v for v in pod["volumes"]}
    wvolumes = {v["name"]: v for v in wpod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    config = volumes[mounts[str(Path(args[args.index("--config") + 1]).parent)]["name"]]
    assert config["configMap"]["name"] == wvolumes["config"]["configMap"]["name"], "not the workers' ConfigMap"
    model = Path(load_toml(K8S_TOML)["model"]["path"])
    m = mounts[str(model.parent)]
    assert m.get("readOnly") is True
    assert volumes[m["name"]]["persistentVolumeClaim"] == wvolumes["models"]["persistentVolumeClaim"]
    res = c["resources"]
    assert not any("gpu" in k for part in res.values() for k in part), f"a tracker asks for a GPU: {res}"
    assert not any("gpu" in t.get("key", "") for t in pod.get("tolerations", [])), "a tracker tolerates GPU nodes"
    assert not any("gpu" in k for k in pod.get("nodeSelector", {})), "a tracker is pinned to GPU nodes"
    cpu = res["requests"]["cpu"]
    cores = float(cpu[:-1]) / 1000 if str(cpu).endswith("m") else float(cpu)
    assert 0.5 <= cores <= 2, f"a tracker tracks one video at a time, about one core: requests {cpu}"
    assert env_value(c, "HMR2_MODEL__DEVICE") == "cpu"
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["terminationGracePeriodSeconds"] > setting(K8S_TOML, "shutdown", "grace_seconds")


def test_tracker_probes_are_the_workers_endpoints_on_its_port(with_tracker):
    _, c = tracker_container(with_tracker)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == listen_port(K8S_TOML)
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert (get["path"], ports.get(get["port"], get["port"])) == (path, ports["metrics"]), probe


def test_trackers_reach_the_workers_redis(with_tracker):
    """Same Redis, user, password, TLS, cluster seeds and shards as the workers: every variable
    and mount but the two that differ on purpose. A tracker listed after components/redis-tls, or
    an overlay patch that reaches the workers only, breaks this."""
    wdep, w = worker_container(with_tracker)
    dep, c = tracker_container(with_tracker)
    differ = {"HMR2_TRACK__IN_WORKER", "HMR2_MODEL__DEVICE"}
    assert [e for e in c["env"] if e["name"] not in differ] == [e for e in w["env"] if e["name"] not in differ]
    wmounts = {m["mountPath"]: m for m in w["volumeMounts"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    if env_value(w, "SSL_CERT_FILE"):
        where = str(Path(env_value(w, "SSL_CERT_FILE")).parent)
        assert mounts.get(where) == wmounts[where], "the trackers lack the workers' Redis CA"
        wvol = {v["name"]: v for v in wdep["spec"]["template"]["spec"]["volumes"]}[wmounts[where]["name"]]
        assert wvol in dep["spec"]["template"]["spec"]["volumes"]


def test_workers_leave_tracking_to_the_trackers_only_with_the_component(with_tracker, rendered):
    _, w = worker_container(with_tracker)
    assert env_value(w, "HMR2_TRACK__IN_WORKER") == "false", "GPU workers still track videos beside the trackers"
    # Without the component the workers track (track.in_worker, true by default) and no tracker runs.
    _, w = worker_container(rendered)
    assert env_value(w, "HMR2_TRACK__IN_WORKER") is None
    assert not [d for d in rendered if d["metadata"]["name"] == "hmr2-tracker"]


def test_trackers_are_scraped_as_part_of_the_fleet_and_kept_apart_from_the_workers(with_tracker):
    """The tracker pods are scraped under job "hmr2-worker" with component="tracker" (the
    ServiceMonitor through their Service, or the annotations), while the workers' Deployment,
    Service and PodDisruptionBudget never select them, nor theirs a worker."""
    wdep, w = worker_container(with_tracker)
    dep, c = tracker_container(with_tracker)
    tracker_pod = dep["spec"]["template"]["metadata"]["labels"]
    worker_pod = wdep["spec"]["template"]["metadata"]["labels"]
    assert tracker_pod["app.kubernetes.io/component"] == "tracker"
    assert selects(dep["spec"]["selector"], tracker_pod) and not selects(dep["spec"]["selector"], worker_pod)
    assert not selects(wdep["spec"]["selector"], tracker_pod), "the workers' Deployment selects tracker pods"
    for kind in ("Service", "PodDisruptionBudget"):
        wsel = one(with_tracker, kind, "hmr2-worker")["spec"]["selector"]
        assert not selects(wsel, tracker_pod), f"the workers' {kind} selects tracker pods"
        tsel = one(with_tracker, kind, "hmr2-tracker")["spec"]["selector"]
        assert selects(tsel, tracker_pod) and not selects(tsel, worker_pod), kind
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics")
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port
    svc = one(with_tracker, "Service", "hmr2-tracker")
    assert svc["spec"].get("publishNotReadyAddresses") is True
    for sm in [d for d in with_tracker if d["kind"] == "ServiceMonitor"]:
        assert selects(sm["spec"]["selector"], svc["metadata"]["labels"]), "the ServiceMonitor misses the trackers"
        assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == "hmr2-worker", "trackers would get another job label"
        relabels = [r for e in sm["spec"]["endpoints"] for r in e.get("relabelings", [])]
        assert {"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"], "targetLabel": "component"} in relabels


def test_worker_accepts_the_tracker_and_worker_settings_of_the_component(tmp_path):
    """The worker's own loader takes the variables the component sets: the trackers' CPU device
    and the workers' track.in_worker = false."""
    binary = worker_bin_or_skip("track")
    docs = build_with_components(tmp_path, "tracker")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMR2_")}
    for (_, c), key in ((tracker_container(docs), "HMR2_MODEL__DEVICE"), (worker_container(docs), "HMR2_TRACK__IN_WORKER")):
        out = subprocess.run([str(binary), "--config", str(K8S_TOML), "config"], env={**env, key: env_value(c, key)},
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        settings = tomllib.loads(out.stdout)
        if key == "HMR2_MODEL__DEVICE":
            assert settings["model"]["device"] == "cpu"
        else:
            assert settings["track"]["in_worker"] is False
