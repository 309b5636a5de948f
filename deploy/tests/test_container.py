"""The image and the compose deployment. No Docker engine runs here, so the Dockerfile is checked by
its instructions; the runtime stage's library layout is rebuilt from the local torch wheel (hard
links) and the binary's libraries are resolved against it."""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from conftest import (
    DEFAULT_TOML,
    DEPLOY,
    IMAGE_TOML,
    K8S_TOML,
    PROM,
    ROOT,
    listen_port,
    load_yaml,
    setting,
    worker_bin,
)

DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(path: Path) -> list[dict]:
    result = []
    for ins, args in instructions(path):
        if ins == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            result.append({"image": m.group(1), "name": m.group(2), "ins": []})
        elif result:
            result[-1]["ins"].append((ins, args))
    return result


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def test_dockerfile_is_multi_stage_and_builds_with_the_project_scripts():
    st = stages(DOCKERFILE)
    assert len(st) >= 2
    build = st[0]
    assert build["name"] == "build"
    runs = " && ".join(a for i, a in build["ins"] if i == "RUN")
    assert "scripts/setup" in runs, "the build stage must use the project's own set-up"
    assert re.search(r"cargo build --release", runs)
    names = {s["name"] for s in st if s["name"]}
    for s in st[1:]:
        for ins, args in s["ins"]:
            m = re.match(r"--from=(\S+)", args)
            if ins == "COPY" and m:
                assert m.group(1) in names, f"COPY --from an unknown stage: {args}"


def test_runtime_stage_non_root_port_healthcheck_entrypoint():
    rt = dict()
    for ins, args in stages(DOCKERFILE)[-1]["ins"]:
        rt.setdefault(ins, []).append(args)
    user = rt["USER"][-1].split(":")[0]
    assert user not in {"root", "0"}, "the runtime stage must run as a non-root user"
    assert str(listen_port(IMAGE_TOML)) in " ".join(rt["EXPOSE"]).split()
    assert listen_port(IMAGE_TOML) == 9464
    health = rt["HEALTHCHECK"][-1]
    cmd = exec_form(health.split("CMD", 1)[1].strip())
    assert "/healthz" in cmd
    assert not any(tool in cmd[0] for tool in ("curl", "wget")), "the image has no curl or wget"
    entry = exec_form(rt["ENTRYPOINT"][-1])
    assert entry[-1].endswith("hmr2-worker")
    cmd = exec_form(rt["CMD"][-1])
    assert cmd[0] == "run" and cmd[cmd.index("--config") + 1] == "/etc/hmr2/worker.toml"


def test_every_copied_file_exists_and_the_model_is_not_baked():
    copied = {}
    for s in stages(DOCKERFILE):
        for ins, args in s["ins"]:
            if ins not in {"COPY", "ADD"}:
                continue
            assert ins == "COPY", "use COPY"
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            *srcs, dest = parts
            for src in srcs:
                assert not src.endswith(".pt") and "artifacts" not in src, "the model is mounted, not baked"
                if "--from=" not in args and src != ".":
                    assert (ROOT / src).exists(), f"COPY source {src} does not exist"
                    copied[dest] = src
    # The config the CMD names is the file shipped for containers, and the health check script.
    assert copied["/etc/hmr2/worker.toml"] == "deploy/worker.toml"
    assert any(src == "deploy/healthcheck" for src in copied.values())
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for heavy in ("target", ".venv", "models/artifacts", ".git"):
        assert heavy in ignore, f"{heavy} must stay out of the build context"


# A RUN that installs or downloads dependencies: it must never follow `COPY . .`, or every source
# edit redoes it (the Python environment alone is 4.6 GB).
DEPENDENCY_INSTALL = re.compile(r"scripts/setup\b|pip install|apt-get install|cargo fetch|uv pip|poetry install")
# What the build stage may copy before the sources: the inputs of the dependency layers.
DEPENDENCY_MANIFESTS = ("scripts/setup", "models/requirements.txt", "Cargo.toml", "Cargo.lock", "*/Cargo.toml")


def mounts(args: str) -> list[dict]:
    """The --mount flags of a RUN, as dicts."""
    out = []
    for flag in re.findall(r"--mount=(\S+)", args):
        out.append(dict(kv.split("=", 1) for kv in flag.split(",")))
    return out


def build_stage_around_sources():
    build = stages(DOCKERFILE)[0]["ins"]
    copy_all = [i for i, (ins, args) in enumerate(build) if ins == "COPY" and args.split()[-2:] == [".", "."]]
    assert len(copy_all) == 1, "the build stage copies the sources once, with `COPY . .`"
    return build[: copy_all[0]], build[copy_all[0] + 1 :]


def test_dependencies_install_in_layers_before_the_sources():
    """A source edit must not reinstall the Python/libtorch environment nor re-download crates:
    every dependency-installing RUN comes before `COPY . .`, and what is copied before it is the
    dependency manifests only (so the layers' cache keys are those files)."""
    before, after = build_stage_around_sources()
    late = [args for ins, args in after if ins == "RUN" and DEPENDENCY_INSTALL.search(args)]
    assert not late, f"dependency installs after COPY . .: {late}"
    runs = " ".join(args for ins, args in before if ins == "RUN")
    assert "scripts/setup" in runs and "cargo fetch --locked" in runs
    copied = []
    for ins, args in before:
        if ins == "COPY":
            *srcs, _ = [p for p in shlex.split(args) if not p.startswith("--")]
            copied += srcs
    for src in copied:
        assert any(fnmatch.fnmatch(src, pat) for pat in DEPENDENCY_MANIFESTS), f"{src} is not a dependency manifest"
    # Every workspace member's manifest is there, or `cargo fetch` cannot load the workspace.
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    for m in members:
        assert f"{m}/Cargo.toml" in copied, f"{m}/Cargo.toml is not copied before cargo fetch"
    # The set-up layer gets the files it reads: models/requirements.txt (the venv) and itself.
    setup_at = next(i for i, (ins, args) in enumerate(before) if ins == "RUN" and "scripts/setup" in args)
    assert {"scripts/setup", "models/requirements.txt"} <= set(
        src for ins, args in before[:setup_at] if ins == "COPY" for src in shlex.split(args)[:-1]
    )


def test_build_caches_pip_the_cargo_registry_and_the_target_folder():
    before, after = build_stage_around_sources()
    workdir = next(args for ins, args in stages(DOCKERFILE)[0]["ins"] if ins == "WORKDIR")

    def cache_targets(args):
        return {m.get("target") for m in mounts(args) if m.get("type") == "cache"}

    (setup,) = [args for ins, args in before if ins == "RUN" and "scripts/setup" in args]
    assert "/root/.cache/pip" in cache_targets(setup)
    (fetch,) = [args for ins, args in before if ins == "RUN" and "cargo fetch" in args]
    assert "/usr/local/cargo/registry" in cache_targets(fetch)
    (build,) = [args for ins, args in after if ins == "RUN" and "cargo build" in args]
    assert {"/usr/local/cargo/registry", f"{workdir}/target"} <= cache_targets(build)
    # The target folder is a cache mount, gone after the RUN: the binary leaves in the same RUN.
    assert re.search(r"(install|cp)\b[^&]*target/release/hmr2-worker", build)


def test_runtime_requires_the_cuda_of_the_torch_wheel():
    """NVIDIA_REQUIRE_CUDA makes the container toolkit refuse a driver too old for the wheel's
    CUDA 13 (torch 2.11.0) instead of starting a worker that finds no usable GPU."""
    env = {}
    for ins, args in stages(DOCKERFILE)[-1]["ins"]:
        if ins == "ENV":
            env.update(kv.split("=", 1) for kv in shlex.split(args))
    assert env.get("NVIDIA_REQUIRE_CUDA") == "cuda>=13.0"
    assert "utility" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    site = (ROOT / ".libtorch").resolve().parent
    if (site / "nvidia").is_dir():  # the wheel the image ships: its CUDA runtime is 13
        assert list(site.glob("nvidia/**/libcudart.so.13*")), "the torch wheel's CUDA is not 13"


def test_dockerignore_keeps_local_outputs_out_of_the_context():
    """Everything git ignores (build outputs, the venv, models) stays out of the build context, so
    it neither bloats it nor invalidates `COPY . .`; the dependency manifests are never ignored."""
    ignore = [l.strip() for l in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()]
    ignore = {l.strip("/") for l in ignore if l and not l.startswith("#")}
    git = [l.strip() for l in (ROOT / ".gitignore").read_text().splitlines()]
    for entry in (l for l in git if l and not l.startswith("#")):
        e = entry.strip("/")
        assert e in ignore or f"**/{e}" in ignore, f".gitignore's {entry} is not in Dockerfile.dockerignore"
    assert ".git" in ignore
    for manifest in ("scripts/setup", "models/requirements.txt", "Cargo.toml", "Cargo.lock"):
        assert not any(fnmatch.fnmatch(manifest, pat) for pat in ignore), manifest


def test_image_config_points_at_the_mounted_model_and_a_gpu():
    assert setting(IMAGE_TOML, "model", "path") == "/models/hmr2.pt"
    assert setting(IMAGE_TOML, "model", "device").startswith("cuda")


@pytest.mark.parametrize("toml", [K8S_TOML, IMAGE_TOML], ids=["k8s", "image"])
def test_shipped_configs_run_a_person_detector_from_the_model_volume(toml):
    """Frames from the upload pipeline carry no boxes: without a detector every one would get a
    whole-frame crop (a near-mean pose). Both shipped configs read it from the mounted volume."""
    assert setting(toml, "detector", "path") == "/models/detector.pt"


def test_healthcheck_script_is_valid_bash():
    script = DEPLOY / "healthcheck"
    assert os.access(script, os.X_OK)
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_runtime_library_layout_resolves_every_library(tmp_path):
    """The runtime stage copies torch/lib and nvidia/ from the wheel into
    /opt/torch/site-packages and sets LD_LIBRARY_PATH to its torch/lib: rebuild that layout here
    with hard links and check the binary loads nothing from elsewhere but the system."""
    binary = worker_bin()
    if not binary.exists():
        pytest.skip(f"worker binary {binary} is not built")
    site = (ROOT / ".libtorch").resolve().parent
    if not (site / "nvidia").is_dir():
        pytest.skip("the torch wheel's nvidia/ libraries are not installed")
    layout = tmp_path / "site-packages"
    (layout / "torch").mkdir(parents=True)
    try:
        shutil.copytree(site / "torch" / "lib", layout / "torch" / "lib", copy_function=os.link)
        shutil.copytree(site / "nvidia", layout / "nvidia", copy_function=os.link)
    except OSError as e:
        pytest.skip(f"cannot hard-link the wheel's libraries here: {e}")
    env = {"PATH": os.environ["PATH"], "LD_LIBRARY_PATH": str(layout / "torch" / "lib")}
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "not found" not in out.stdout, out.stdout
    resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", out.stdout, re.M))
    for lib in ("libtorch_cpu.so", "libtorch_cuda.so", "libc10.so", "libcudart.so.13", "libcudnn.so.9", "libcublas.so.13"):
        assert lib in resolved, f"{lib} not loaded: {out.stdout}"
        assert resolved[lib].startswith(str(layout)), f"{lib} came from {resolved[lib]}"
    for lib, path in resolved.items():
        assert path.startswith(str(layout)) or path.startswith(("/lib", "/usr/lib")), f"{lib}: {path}"


# --- compose ----------------------------------------------------------------------------------


def compose():
    return load_yaml(COMPOSE)


def workers(c):
    return {n: s for n, s in c["services"].items() if n.startswith("worker-")}


def seconds(value: str) -> int:
    m = re.fullmatch(r"(\d+)(s|m)", value)
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def test_compose_has_the_stack():
    c = compose()
    assert {"redis", "prometheus", "grafana"} <= set(c["services"])
    assert workers(c)


def test_compose_one_worker_per_gpu():
    gpus = []
    for name, s in workers(compose()).items():
        (dev,) = s["deploy"]["resources"]["reservations"]["devices"]
        assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
        assert len(dev["device_ids"]) == 1, f"{name} must reserve exactly one GPU"
        gpus += dev["device_ids"]
    assert len(gpus) == len(set(gpus)), "two workers share a GPU"


def test_compose_workers_stop_gracefully_reach_redis_and_mount_the_model():
    grace = setting(IMAGE_TOML, "shutdown", "grace_seconds")
    for name, s in workers(compose()).items():
        assert seconds(s["stop_grace_period"]) > grace, name
        assert s["environment"]["HMR2_REDIS__URL"].startswith("redis://redis:")
        assert any(v.rsplit(":", 2)[1:] == ["/models", "ro"] for v in s["volumes"]), name
        assert (DEPLOY / s["build"]["context"] / s["build"]["dockerfile"]).resolve() == DOCKERFILE.resolve()


def test_compose_prometheus_scrapes_every_default_worker():
    c = compose()
    targets = {t for g in load_yaml(PROM / "targets" / "workers.yml") for t in g["targets"]}
    for name, s in workers(c).items():
        if not s.get("profiles"):
            assert f"{name}:{listen_port(IMAGE_TOML)}" in targets, f"{name} is not scraped"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in c["services"]["prometheus"]["volumes"]}
    assert (DEPLOY / mounts["/etc/prometheus"]).resolve() == PROM.resolve()


def test_compose_grafana_provisioning_matches_its_mounts():
    c = compose()
    mounts = {v.split(":")[1]: (DEPLOY / v.split(":")[0]).resolve() for v in c["services"]["grafana"]["volumes"] if v.startswith(".")}
    prov = mounts["/etc/grafana/provisioning"]
    (provider,) = load_yaml(prov / "dashboards" / "hmr2.yaml")["providers"]
    dash_dir = mounts[provider["options"]["path"]]
    assert (dash_dir / "hmr2-worker.json").exists()
    (ds,) = load_yaml(prov / "datasources" / "prometheus.yaml")["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"


def test_default_config_still_has_the_settings_deploy_relies_on():
    d = setting(DEFAULT_TOML, "shutdown", "grace_seconds")
    assert isinstance(d, int) and d > 0
    assert setting(DEFAULT_TOML, "queue", "prefix") == "hmr2"
