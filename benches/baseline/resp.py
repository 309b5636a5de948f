"""A minimal stand-in for redis-py, for machines that lack it (the GPU machine has no network to
install it): the handful of commands the baseline sends, over RESP2 on one socket, with the
same call signatures and return shapes as redis-py. ``baseline.py`` uses redis-py when present.
"""

import socket
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse


class ConnectionError(Exception):  # noqa: A001 (same name as redis-py's)
    pass


class ResponseError(Exception):
    pass


def _encode(args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, (int, float)):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Redis:
    def __init__(self, host: str, port: int, db: int = 0, password: Optional[str] = None):
        try:
            self._sock = socket.create_connection((host, port))
        except OSError as e:
            raise ConnectionError(str(e)) from e
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = self._sock.makefile("rb")
        if password:
            self._call("AUTH", password)
        if db:
            self._call("SELECT", db)

    @classmethod
    def from_url(cls, url: str) -> "Redis":
        u = urlparse(url)
        db = int(u.path.strip("/") or 0)
        return cls(u.hostname or "127.0.0.1", u.port or 6379, db, u.password)

    def _read(self) -> Any:
        line = self._buf.readline()
        if not line:
            raise ConnectionError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            return ResponseError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._buf.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ConnectionError(f"bad reply {line!r}")

    def _call(self, *args) -> Any:
        self._sock.sendall(_encode(args))
        reply = self._read()
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def ping(self) -> bool:
        return self._call("PING") == b"PONG"

    def xadd(self, key: str, fields: Dict[str, Any]) -> bytes:
        return self._call("XADD", key, "*", *[x for kv in fields.items() for x in kv])

    def xgroup_create(self, key: str, group: str, id: str = "$", mkstream: bool = False) -> bool:
        return self._call("XGROUP", "CREATE", key, group, id, *(["MKSTREAM"] if mkstream else []))

    def xreadgroup(self, group: str, consumer: str, streams: Dict[str, str], count=None, block=None):
        args: List[Any] = ["XREADGROUP", "GROUP", group, consumer]
        if count is not None:
            args += ["COUNT", count]
        if block is not None:
            args += ["BLOCK", block]
        args += ["STREAMS", *streams.keys(), *streams.values()]
        reply = self._call(*args)
        if not reply:
            return []
        return [
            [name, [(eid, dict(zip(flat[::2], flat[1::2]))) for eid, flat in entries]]
            for name, entries in reply
        ]

    def delete(self, *keys: str) -> int:
        return self._call("DEL", *keys)

    def pipeline(self, transaction: bool = True) -> "Pipeline":
        return Pipeline(self, transaction)

    def close(self) -> None:
        self._buf.close()
        self._sock.close()


class Pipeline:
    def __init__(self, r: Redis, transaction: bool):
        self._r, self._tx, self._cmds = r, transaction, []

    def xadd(self, key: str, fields: Dict[str, Any]) -> "Pipeline":
        self._cmds.append(("XADD", key, "*", *[x for kv in fields.items() for x in kv]))
        return self

    def xack(self, key: str, group: str, *ids) -> "Pipeline":
        self._cmds.append(("XACK", key, group, *ids))
        return self

    def xdel(self, key: str, *ids) -> "Pipeline":
        self._cmds.append(("XDEL", key, *ids))
        return self

    def execute(self) -> List[Any]:
        cmds = [("MULTI",), *self._cmds, ("EXEC",)] if self._tx else self._cmds
        self._r._sock.sendall(b"".join(_encode(c) for c in cmds))
        replies = [self._r._read() for _ in cmds]
        self._cmds = []
        for x in replies:
            if isinstance(x, ResponseError):
                raise x
        return replies[-1] if self._tx else replies
