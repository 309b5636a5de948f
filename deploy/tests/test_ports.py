"""The test servers' port chooser (scripts/ports.py) used by these tests and by scripts/chaos.py."""

import socket

import ports


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range():
    lo, hi = ports.ephemeral_range()
    chosen = [ports.free_port() for _ in range(30)]
    assert len(set(chosen)) == 30, chosen
    for p in chosen:
        assert p >= ports.LOWEST_PORT and not lo <= p <= hi, (p, lo, hi)
    held = []
    for p in chosen:
        s = socket.socket()
        s.bind(("127.0.0.1", p))
        s.listen()
        held.append(s)
    for s in held:
        s.close()

