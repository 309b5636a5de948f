"""Fixtures: a throwaway redis-server, a throwaway 3-master Redis Cluster, a real hmr2-worker,
and frames drawn with Pillow. Every wait is bounded."""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest
import redis

from hmr2_client import Client

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
VECTORS = ROOT / "client" / "tests"
SCHEMAS = ROOT / "schemas"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port for a cluster node: at most 55535, its bus port (+10000) free too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class Fatal(Exception):
    """Ends a wait at once."""


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Fatal:
            raise
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s (last error: {last!r})")


class RedisServer:
    """A redis-server on a free port, no persistence, stopped by :meth:`stop`."""

    def __init__(self, workdir: Path, *extra: str, cluster: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.port = cluster_port() if cluster else free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        self.log = self.dir / "redis.log"
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.dir), *extra]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]
        self.proc = subprocess.Popen(args, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_until(f"redis-server on port {self.port}", self._ping, timeout=20)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _ping(self) -> bool:
        if self.proc.poll() is not None:
            raise Fatal(f"redis-server exited: {self.log.read_text()[-2000:]}")
        return bool(redis.Redis(port=self.port, socket_timeout=2).ping())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hmr2-pyclient-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def redis_node(workdir: Path) -> Iterator[str]:
    """The URL of a throwaway redis-server."""
    server = RedisServer(workdir)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(workdir: Path) -> Iterator[List[str]]:
    """The URLs of a throwaway Redis Cluster: 3 masters, no replicas."""
    servers: List[RedisServer] = []
    try:
        for _ in range(3):
            servers.append(RedisServer(workdir, cluster=True))
        create = ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{s.port}" for s in servers]]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout + done.stderr

        def ready() -> bool:
            for s in servers:
                info = redis.Redis(port=s.port, socket_timeout=2).execute_command("CLUSTER INFO")
                if isinstance(info, (bytes, str)):
                    text = info.decode() if isinstance(info, bytes) else info
                    info = dict(line.split(":", 1) for line in text.split() if ":" in line)
                fields = {str(k): str(v) for k, v in info.items()}
                if fields.get("cluster_state") != "ok" or fields.get("cluster_known_nodes") != "3":
                    return False
                if fields.get("cluster_slots_ok") != "16384":
                    return False
            return True

        wait_until("cluster_state:ok on every node", ready, timeout=30, every=0.2)
        yield [s.url for s in servers]
    finally:
        for s in servers:
            s.stop()


def unique(name: str = "t") -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["node", "cluster"])
def target(request: pytest.FixtureRequest) -> Iterator[Dict[str, object]]:
    """Where a test runs: one redis-server, or the Redis Cluster. ``connect(shards=..)``
    gives a :class:`Client` with a prefix of its own."""
    kind = request.param
    urls: List[str] = [request.getfixturevalue("redis_node")] if kind == "node" else request.getfixturevalue("redis_cluster")
    clients: List[Client] = []

    def connect(shards: int = 1, prefix: Optional[str] = None, **kw: object) -> Client:
        c = Client.connect(urls, prefix=prefix or unique(), shards=shards, cluster=kind == "cluster", **kw)
        clients.append(c)
        return c

    yield {"kind": kind, "urls": urls, "connect": connect}
    for c in clients:
        c.close()


# --- frames --------------------------------------------------------------------------------


def stick_figure(n: int, width: int = 192, height: int = 144) -> bytes:
    """Frame ``n`` of a clip: a stick figure walking right across a textured background."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height))
    px = img.load()
    for y in range(0, height, 4):
        for x in range(0, width, 4):
            c = ((x * 3 + y * 5 + n * 7) % 64) + 96
            for dy in range(4):
                for dx in range(4):
                    px[x + dx, y + dy] = (c, c // 2 + 40, 180 - c // 2)
    d = ImageDraw.Draw(img)
    cx = 40 + n * 6
    d.ellipse([cx - 8, 24, cx + 8, 40], fill=(250, 220, 190))
    d.line([cx, 40, cx, 84], fill=(20, 20, 20), width=5)
    swing = 10 if n % 2 else -10
    d.line([cx, 52, cx - 16, 64 + swing], fill=(20, 20, 20), width=4)
    d.line([cx, 52, cx + 16, 64 - swing], fill=(20, 20, 20), width=4)
    d.line([cx, 84, cx - 12 + swing, 120], fill=(20, 20, 20), width=4)
    d.line([cx, 84, cx + 12 - swing, 120], fill=(20, 20, 20), width=4)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


@pytest.fixture(scope="session")
def clip_dir(workdir: Path) -> Path:
    """A directory of 8 JPEG frames (``frame-000.jpg`` ...)."""
    d = workdir / "clip"
    d.mkdir()
    for n in range(8):
        (d / f"frame-{n:03d}.jpg").write_bytes(stick_figure(n))
    return d


# --- the worker ----------------------------------------------------------------------------


def worker_bin() -> Path:
    path = Path(os.environ.get("HMR2_WORKER_BIN") or ROOT / "target" / "debug" / "hmr2-worker")
    if not path.is_file():
        pytest.fail(
            f"the worker binary {path} is missing: build it (`cargo build --bin hmr2-worker` at the "
            "repository root, or `make test`), or point HMR2_WORKER_BIN at one"
        )
    return path


def tiny_model() -> Path:
    path = ROOT / "models" / "artifacts" / "hmr2-tiny.pt"
    if not path.is_file():
        pytest.fail(f"the tiny model {path} is missing: run scripts/setup")
    return path


class Worker:
    """A real hmr2-worker process on its own prefix, the tiny model on the CPU."""

    def __init__(self, urls: List[str], prefix: str, workdir: Path, shards: int = 1, cluster: bool = False) -> None:
        self.prefix = prefix
        self.urls = urls
        self.shards = shards
        self.cluster = cluster
        self.http = free_port()
        self.log = workdir / f"worker-{prefix}.log"
        env = dict(os.environ)
        env.update(
            HMR2_REDIS__URL=",".join(urls),
            HMR2_REDIS__CLUSTER="true" if cluster else "false",
            HMR2_QUEUE__PREFIX=prefix,
            HMR2_QUEUE__SHARDS=str(shards),
            HMR2_QUEUE__BLOCK_MS="200",
            HMR2_MODEL__PATH=str(tiny_model()),
            HMR2_MODEL__DEVICE="cpu",
            HMR2_HTTP__LISTEN=f"127.0.0.1:{self.http}",
            HMR2_PIPELINE__DECODE_THREADS="1",
            HMR2_SHUTDOWN__GRACE_SECONDS="5",
            HMR2_VIDEO__EXPIRE_INTERVAL_MS="500",
            OMP_NUM_THREADS="1",
            OMP_WAIT_POLICY="PASSIVE",
        )
        self.proc = subprocess.Popen(
            [str(worker_bin()), "run"],
            env=env,
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        try:
            wait_until("the worker's /readyz", self._ready, timeout=120, every=0.25)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise Fatal(f"the worker exited with {self.proc.returncode}: {self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def client(self) -> Client:
        return Client.connect(self.urls, prefix=self.prefix, shards=self.shards, cluster=self.cluster)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def worker(workdir: Path) -> Iterator[Worker]:
    """A worker on a throwaway redis-server of its own."""
    server = RedisServer(workdir)
    try:
        w = Worker([server.url], unique("e2e"), workdir)
        try:
            yield w
        finally:
            w.stop()
    finally:
        server.stop()
