"""Every Redis key and name of the contract (DESIGN §3, §11, §13), built in one place from the
prefix, and the queue's split into shards.

With one shard and no cluster the keys are the unsharded ``hmr2:jobs``, ``hmr2:results``, ...
With ``shards > 1``, or on a Redis Cluster, shard ``k`` keeps its keys under the hash tag
``{<prefix>:<k>}`` (``{hmr2:0}:jobs``, ``{hmr2:0}:results``, group ``{hmr2:0}-workers``), so
each shard is one cluster slot. A job goes to shard ``crc32(video_id, else job_id) % shards``
(CRC-32/ISO-HDLC of the UTF-8 bytes, as :func:`zlib.crc32`), the same in every client.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import List, Optional

__all__ = ["Keys", "Layout", "shard_of", "routing_key", "MAX_ID_BYTES"]

#: Longest accepted ``job_id``, ``video_id`` and ``reply_to``, in UTF-8 bytes.
MAX_ID_BYTES = 256


def shard_of(key: str, shards: int) -> int:
    """The shard of a job whose routing key (its ``video_id``, else its ``job_id``) is ``key``,
    on a queue of ``shards`` shards: ``zlib.crc32(key.encode()) % shards`` (0 for one shard)."""
    if shards <= 1:
        return 0
    return zlib.crc32(key.encode("utf-8")) % shards


def routing_key(video_id: Optional[str], job_id: str) -> str:
    """The routing key of a job: its ``video_id`` when it has one, else its ``job_id``."""
    return video_id if video_id is not None else job_id


@dataclass(frozen=True)
class Keys:
    """Every key and name of one shard of the queue (all of it when it is not sharded)."""

    #: Which shard these are the keys of (0 when the queue is not sharded).
    shard: int
    #: What every key of the shard but ``model`` starts with: the prefix (``hmr2``) or the
    #: shard's hash tag (``{hmr2:3}``).
    tag: str
    #: The job stream.
    jobs: str
    #: The default reply stream.
    results: str
    #: The dead-letter stream.
    dead: str
    #: The consumer group of the workers on ``jobs``.
    group: str
    #: ``{prefix}:model``: the hash the workers fill at start-up (one per queue, not per shard).
    model: str
    #: The stream of tracking jobs, one per complete video.
    videos: str
    #: The consumer group of the trackers on ``videos``.
    trackers: str
    #: The sorted set of the videos with frames recorded and no output yet.
    videos_open: str

    @classmethod
    def unsharded(cls, prefix: str) -> "Keys":
        """The keys of ``prefix``, not sharded (``hmr2:jobs`` ...)."""
        return cls._under(prefix, prefix, 0)

    @classmethod
    def of_shard(cls, prefix: str, k: int) -> "Keys":
        """The keys of shard ``k`` of ``prefix``: all under the hash tag ``{<prefix>:<k>}``."""
        return cls._under("{%s:%d}" % (prefix, k), prefix, k)

    @classmethod
    def _under(cls, tag: str, prefix: str, k: int) -> "Keys":
        return cls(
            shard=k,
            tag=tag,
            jobs=f"{tag}:jobs",
            results=f"{tag}:results",
            dead=f"{tag}:dead",
            group=f"{tag}-workers",
            model=f"{prefix}:model",
            videos=f"{tag}:videos",
            trackers=f"{tag}-trackers",
            videos_open=f"{tag}:videos:open",
        )

    def accepts_reply_to(self, reply_to: str) -> bool:
        """Whether a job of this shard may name ``reply_to``: this shard's results stream, or a
        stream under it (``<results>:...``). Anything else is ``invalid_job``."""
        if not reply_to.startswith(self.results):
            return False
        rest = reply_to[len(self.results):]
        return rest == "" or rest.startswith(":")

    def reply_stream(self, reply_to: Optional[str]) -> str:
        """Where a job's result goes: its ``reply_to`` when accepted, else ``results``."""
        if reply_to is not None and self.accepts_reply_to(reply_to):
            return reply_to
        return self.results

    def video_output(self, video_id: str, reply_to: Optional[str] = None) -> Optional[str]:
        """The stream a video's tracked output goes to: ``reply_to`` (the ``video`` object's)
        when accepted, ``<results>:video:<video_id>`` when there is none, ``None`` when
        ``reply_to`` is refused."""
        if reply_to is None:
            return f"{self.results}:video:{video_id}"
        return reply_to if self.accepts_reply_to(reply_to) else None

    def video_state(self, video_id: str) -> str:
        """The key of a video's recorded state (the worker's)."""
        return f"{self.tag}:video:{video_id}"

    def video_frames(self, video_id: str) -> str:
        """The key of a video's recorded frames (the worker's)."""
        return f"{self.tag}:video-frames:{video_id}"


class Layout:
    """The queue's keys: one :class:`Keys` per shard.

    Sharded keys (``{<prefix>:<k>}:...``) when ``shards > 1`` or ``cluster``; otherwise the
    unsharded keys, so a single-node queue keeps ``hmr2:jobs``.
    """

    def __init__(self, prefix: str = "hmr2", shards: int = 1, cluster: bool = False) -> None:
        n = max(1, int(shards))
        self.prefix = prefix
        self.cluster = bool(cluster)
        if n == 1 and not cluster:
            self._shards: List[Keys] = [Keys.unsharded(prefix)]
        else:
            self._shards = [Keys.of_shard(prefix, k) for k in range(n)]

    def __repr__(self) -> str:
        return f"Layout(prefix={self.prefix!r}, shards={len(self)}, cluster={self.cluster})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and self._shards == other._shards

    def __len__(self) -> int:
        return len(self._shards)

    @property
    def shards(self) -> List[Keys]:
        """Every shard's keys, in shard order."""
        return list(self._shards)

    @property
    def model(self) -> str:
        """``{prefix}:model``."""
        return self._shards[0].model

    def shard(self, k: int) -> Keys:
        """The keys of shard ``k`` (modulo the number of shards)."""
        return self._shards[k % len(self._shards)]

    def keys_for(self, video_id: Optional[str], job_id: str) -> Keys:
        """The keys of the shard a job with this ``video_id`` and ``job_id`` belongs to."""
        return self.shard(shard_of(routing_key(video_id, job_id), len(self._shards)))

    def video_keys(self, video_id: str) -> Keys:
        """The keys of the shard the video ``video_id`` lives on."""
        return self.keys_for(video_id, video_id)

    def shard_of_reply_to(self, reply_to: str) -> Optional[Keys]:
        """The shard whose results stream ``reply_to`` names, if any."""
        for keys in self._shards:
            if keys.accepts_reply_to(reply_to):
                return keys
        return None
