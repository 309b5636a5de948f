"""Free loopback ports for test servers, chosen outside the kernel's ephemeral range.

A port taken with bind(0) comes from the ephemeral range, and until the server binds it any
outgoing connection on the machine may be given it as its local port; outside that range only a
listener can take it. The Rust harness (tools/src/redis_server.rs) chooses its ports the same way.
"""

import os
import random
import socket

LOWEST_PORT = 10_000
_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port nobody listens on now, never the same one twice in this process."""
    lo, hi = ephemeral_range()
    candidates = [p for p in range(LOWEST_PORT, 65536) if (p < lo or p > hi) and p not in _handed_out]
    rng = random.Random(os.getpid() ^ random.getrandbits(32))
    start = rng.randrange(len(candidates)) if candidates else 0
    for i in range(len(candidates)):
        port = candidates[(start + i) % len(candidates)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
