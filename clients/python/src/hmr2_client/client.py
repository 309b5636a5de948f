"""The blocking client: add frames and whole videos to the queue, wait for a video's tracked
output, read results (redis-py, one node or a Redis Cluster)."""

from __future__ import annotations

import time
from itertools import islice
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import redis as redis_lib
from redis.cluster import ClusterNode, RedisCluster

from ._core import (
    BLOCK_SLICE,
    CHUNK,
    PAGE,
    Image,
    ModelInfo,
    Progress,
    Reply,
    Seen,
    SubmittedVideo,
    VideoCollector,
    VideoEntry,
    VideoOutput,
    VideoProgress,
    VideoResults,
    WaitTimeout,
    check_frame,
    exclusive,
    frame_source,
    is_image,
    load_image,
    model_info,
    parse_urls,
    plan_video,
    read_reply,
    read_video_entry,
    short_error,
    text,
    xread_entries,
    xread_id,
)
from .job import Frame, Job, JobError, Video
from .keys import Layout

__all__ = ["Client"]

#: How long a cluster-wide follow blocks on one shard's stream before polling the others.
_SHARD_POLL_S = 0.2


def _cluster_seeds(urls: Sequence[str]) -> List[ClusterNode]:
    seeds = []
    for u in urls:
        p = urlparse(u)
        if not p.hostname:
            raise ValueError(f"{u!r}: not a redis:// or rediss:// URL")
        node: Any = ClusterNode
        seeds.append(node(p.hostname, p.port or 6379))
    return seeds


class Client:
    """A producer of one queue: ``Client.connect("redis://host:6379")``, or around a redis-py
    client of your own (``Client(redis.Redis(...))``, ``Client(RedisCluster(...))``; it must
    not decode responses).

    ``prefix`` and ``shards`` must be those of the workers (``queue.prefix``,
    ``queue.shards``); on a Redis Cluster the keys are always sharded (``{prefix:k}``).
    Images go as raw bytes in an ``image`` field unless ``raw_images=False`` (base64 inside
    the JSON, for a pipeline that must keep one field).
    """

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str = "hmr2",
        shards: int = 1,
        cluster: Optional[bool] = None,
        raw_images: bool = True,
    ) -> None:
        if cluster is None:
            cluster = isinstance(redis, RedisCluster)
        kwargs: Any = getattr(redis, "get_connection_kwargs", lambda: {})()
        if isinstance(kwargs, dict) and kwargs.get("decode_responses"):
            raise ValueError("the redis client decodes responses: image bytes and results need decode_responses=False")
        #: The redis-py client (``redis.Redis``/``RedisCluster``, or their asyncio kinds).
        self.redis: Any = redis
        self.layout = Layout(prefix, shards, cluster)
        self.cluster = cluster
        self.raw_images = raw_images
        self._slice = _slice_s(redis)

    @classmethod
    def connect(
        cls,
        url: Union[str, Sequence[str]] = "redis://127.0.0.1:6379",
        *,
        prefix: str = "hmr2",
        shards: int = 1,
        cluster: Optional[bool] = None,
        raw_images: bool = True,
        **redis_options: Any,
    ) -> "Client":
        """Connects to one Redis (``redis://`` or ``rediss://``), or to a Redis Cluster through
        its seed nodes: several URLs (a list, or separated by commas as in
        ``HMR2_REDIS__URL``) imply a cluster; ``cluster=True`` makes one URL a cluster seed.
        ``redis_options`` go to redis-py (``socket_timeout``, ``ssl_ca_certs``, ...)."""
        urls = parse_urls(url)
        if cluster is None:
            cluster = len(urls) > 1
        if cluster:
            seeds = _cluster_seeds(urls[1:])
            cluster_cls: Any = RedisCluster
            r: Any = cluster_cls(url=urls[0], startup_nodes=seeds or None, **redis_options)
        else:
            if len(urls) > 1:
                raise ValueError("several URLs are the seeds of a Redis Cluster: leave cluster unset or True")
            r = redis_lib.Redis.from_url(urls[0], **redis_options)
        return cls(r, prefix=prefix, shards=shards, cluster=cluster, raw_images=raw_images)

    def close(self) -> None:
        """Closes the connections."""
        self.redis.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.layout!r})"

    # --- adding frames -------------------------------------------------------------------

    def _raw(self, raw: Optional[bool]) -> bool:
        return self.raw_images if raw is None else raw

    def add_frame(
        self,
        image: Optional[Image],
        *,
        job_id: str,
        video_id: Optional[str] = None,
        frame_number: Optional[int] = None,
        boxes: Optional[Sequence[Sequence[float]]] = None,
        include: Iterable[str] = (),
        reply_to: Optional[str] = None,
        video: Optional[Video] = None,
        image_base64: Optional[str] = None,
        raw: Optional[bool] = None,
    ) -> str:
        """Adds one job to its shard's job stream (by ``video_id``, else ``job_id``); returns
        its entry id. ``image`` is the JPEG/PNG bytes or a file path (or ``None`` with
        ``image_base64``). ``video`` makes it a frame of a tracked video (then ``video_id``
        and ``frame_number`` are required). Raises :class:`~hmr2_client.JobError` before
        sending a job a worker would refuse."""
        job = Job(
            job_id=job_id,
            video_id=video_id,
            frame_number=frame_number,
            image_base64=image_base64,
            boxes=[tuple(b) for b in boxes or ()],  # type: ignore[misc]
            reply_to=reply_to,
            include=tuple(include),
            video=video,
        )
        return self.add(Frame(job, load_image(image) if image is not None else b""), raw=raw)

    def add(self, frame: Frame, *, raw: Optional[bool] = None) -> str:
        """Adds one :class:`~hmr2_client.Frame`; returns its entry id."""
        keys = check_frame(self.layout, frame)
        entry_id = self.redis.xadd(keys.jobs, dict(frame.fields(self._raw(raw))))
        return text(entry_id)

    def add_frames(
        self,
        frames: Iterable[Union[Frame, Tuple[Job, Image]]],
        *,
        raw: Optional[bool] = None,
        on_progress: Optional[Callable[[int], Any]] = None,
    ) -> List[str]:
        """Adds many jobs, each to its shard, in pipelined chunks of 64 (on a cluster each
        chunk goes to the masters it needs); returns their entry ids in order. ``frames``
        holds :class:`~hmr2_client.Frame` or ``(job, image)`` pairs and is read a chunk at a
        time; each chunk is checked whole before it is sent. ``on_progress(n)`` is called
        after every chunk with the number of jobs added so far."""
        use_raw = self._raw(raw)
        ids: List[str] = []
        it = iter(frames)
        while True:
            chunk = [_as_frame(f) for f in islice(it, CHUNK)]
            if not chunk:
                return ids
            pipe = self.redis.pipeline(transaction=False)
            for f in chunk:
                keys = check_frame(self.layout, f)
                pipe.xadd(keys.jobs, dict(f.fields(use_raw)))
            ids.extend(text(i) for i in pipe.execute())
            if on_progress is not None:
                on_progress(len(ids))

    # --- videos ----------------------------------------------------------------------------

    def _last_id(self, stream: str) -> str:
        last = self.redis.xrevrange(stream, "+", "-", count=1)
        return text(last[0][0]) if last else "0-0"

    def submit_video(
        self,
        video_id: str,
        frames: Any,
        fps: float,
        *,
        count: Optional[int] = None,
        include: Iterable[str] = (),
        reply_to: Optional[str] = None,
        frame_reply_to: Optional[str] = None,
        raw: Optional[bool] = None,
        on_progress: Optional[Callable[[int, int], Any]] = None,
    ) -> SubmittedVideo:
        """Adds a whole tracked video (DESIGN §13) to its shard: image ``n`` becomes the job
        ``<video_id>:<n>`` of frame ``n``, every frame carrying the same ``video`` object
        (the number of frames, ``fps``, ``reply_to``).

        ``frames`` is a directory (its .jpg/.jpeg/.png files in name order), a sequence of
        images (bytes or file paths), or any iterable of them. Every frame must say how many
        frames the video has, so an iterable of unknown length is read whole into memory
        first, unless ``count`` says how many frames it holds (then only ``count`` are read,
        a chunk of 64 at a time; should it hold fewer, the frames sent stay queued, the
        video expires unfinished, and :class:`~hmr2_client.JobError` is raised).

        ``include=["vertices"]`` asks for mesh vertices; ``reply_to`` is the stream for the
        tracked output (default ``<results>:video:<video_id>``); ``frame_reply_to`` the
        stream for each frame's own result (default: the shard's results stream); both must
        lie under the shard's results stream. Checked before any frame is sent.
        ``on_progress(sent, total)`` is called after every chunk."""
        n, items, exact = frame_source(frames, count)
        plan = plan_video(self.layout, video_id, n, fps, include, reply_to, frame_reply_to)
        if exact:
            items = iter(_checked_paths(list(items)))
        use_raw = self._raw(raw)
        results = plan.frame_reply_to or plan.keys.results
        since = self._last_id(results)
        entry_ids: List[str] = []
        while len(entry_ids) < n:
            start = len(entry_ids)
            chunk = list(islice(items, min(CHUNK, n - start)))
            if not chunk:
                raise short_error(video_id, n, start)
            pipe = self.redis.pipeline(transaction=False)
            for k, item in enumerate(chunk):
                image = _video_image(video_id, start + k, item)
                pipe.xadd(plan.keys.jobs, dict(Frame(plan.job(start + k), image).fields(use_raw)))
            entry_ids.extend(text(i) for i in pipe.execute())
            if on_progress is not None:
                on_progress(len(entry_ids), n)
        return SubmittedVideo(video_id, n, plan.fps, plan.keys.shard, plan.output, results, entry_ids, since)

    def video_output(self, video_id: str, reply_to: Optional[str] = None) -> str:
        """The stream the video's tracked output goes to (its ``reply_to``, or the default)."""
        keys = self.layout.video_keys(video_id)
        out = keys.video_output(video_id, reply_to)
        if out is None:
            raise JobError("invalid_job", f"reply_to {reply_to!r} is not under {keys.results}")
        return out

    def wait_video(
        self,
        video: Union[SubmittedVideo, str],
        timeout: Optional[float] = None,
        on_progress: Optional[Callable[[VideoProgress], Any]] = None,
        *,
        output: Optional[str] = None,
        results: Optional[str] = None,
        frames: Optional[int] = None,
    ) -> VideoOutput:
        """Waits for a video's tracked output and returns it whole: its frames in order and
        its ``done`` summary. ``video`` is what :meth:`submit_video` returned, or a video id
        (then ``output`` names its output stream when the video set a ``reply_to``,
        ``results`` the stream of its frames' results when not the shard's, ``frames`` its
        length, for progress).

        Reads the output stream from its beginning (a video already done returns at once),
        blocking a slice of at most 1 s at a time; entries of other videos are skipped.
        ``on_progress(VideoProgress)`` is called at the start, whenever more frames are
        answered (read from the frames' results stream, as they come; its results are read
        but not consumed), and once at the end. Raises :class:`~hmr2_client.WaitTimeout`
        (a :class:`TimeoutError`) when no ``done`` came within ``timeout`` seconds (``None``:
        no limit; 0: look once)."""
        video_id, out, res, since, total = _wait_target(self.layout, video, output, results, frames)
        collector = VideoCollector(video_id, out)
        progress = Progress(video_id, total, on_progress) if on_progress is not None else None
        res_after = since
        if progress is not None:
            progress.report()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            streams: Dict[str, str] = {out: collector.after}
            if progress is not None and res != out:
                streams[res] = res_after
            reply = self.redis.xread(streams, count=PAGE, block=_block_ms(left, self._slice))
            got = False
            for stream, entries in xread_entries(reply):
                if not entries:
                    continue
                got = True
                if stream == out:
                    done = collector.see(entries)
                    if done is not None:
                        _final_progress(progress, done)
                        return done
                elif progress is not None:
                    res_after = text(entries[-1][0])
                    if progress.see(stream, entries):
                        progress.report()
            if not got and left is not None and left <= 0:
                raise WaitTimeout(video_id, out, timeout or 0.0, progress.snapshot() if progress else None)

    def read_video(self, stream: str, after: str = "-", count: int = PAGE) -> List[VideoEntry]:
        """Up to ``count`` entries of a video output stream after the entry id ``after``
        (``-``: from the beginning), each read on its own: one that cannot be read is a
        :class:`~hmr2_client.VideoEntry` with ``error`` set, in its place."""
        page = self.redis.xrange(stream, exclusive(after), "+", count=count)
        return [read_video_entry(stream, eid, fields) for eid, fields in page]

    # --- results ---------------------------------------------------------------------------

    def read_results(self, stream: str, after: str = "-", count: int = PAGE) -> List[Reply]:
        """One page: up to ``count`` entries of a reply stream after ``after``, each read on
        its own (duplicates kept)."""
        page = self.redis.xrange(stream, exclusive(after), "+", count=count)
        return [read_reply(stream, eid, fields) for eid, fields in page]

    def results(
        self,
        stream: Optional[str] = None,
        *,
        video_id: Optional[str] = None,
        after: Union[str, Mapping[str, str]] = "-",
        count: int = PAGE,
        follow: bool = False,
        timeout: Optional[float] = None,
        dedupe: bool = True,
    ) -> Iterator[Reply]:
        """Iterates over results: of ``stream``, else of the video's shard's results stream
        when ``video_id`` is given, else of every shard's results stream (shard by shard).

        Each entry comes on its own, as a :class:`~hmr2_client.Reply`: one that cannot be
        read has ``error`` set (it never fails the iteration). With ``dedupe``, a job
        answered twice (delivery is at-least-once) comes once. With ``video_id``, only that
        video's results (and the unreadable entries, whose video cannot be told).
        ``after`` is an entry id (``-``: from the beginning, ``$``: only new ones), or one
        per stream; ``Reply.stream`` and ``Reply.entry_id`` give where to resume. With
        ``follow``, waits for new results once the streams are read, until ``timeout``
        seconds have passed (``None``: forever)."""
        streams = _result_streams(self.layout, stream, video_id)
        cursors = {s: (after.get(s, "-") if isinstance(after, Mapping) else after) for s in streams}
        for s, a in cursors.items():
            if a == "$":
                cursors[s] = self._last_id(s)
        seen = _Filter(video_id, dedupe)
        for s in streams:
            while True:
                page = self.redis.xrange(s, exclusive(cursors[s]), "+", count=count)
                for eid, fields in page:
                    reply = read_reply(s, eid, fields)
                    cursors[s] = reply.entry_id
                    if seen.keep(reply):
                        yield reply
                if len(page) < count:
                    break
        if not follow:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        turn = 0
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            if len(streams) == 1 or not self.cluster:
                ids = {s: xread_id(c) for s, c in cursors.items()}
                reply_ = self.redis.xread(ids, count=count, block=_block_ms(left, self._slice))
                batches = xread_entries(reply_)
            else:
                batches = []
                for s in streams:
                    batches += xread_entries(self.redis.xread({s: xread_id(cursors[s])}, count=count))
                if not any(e for _, e in batches):
                    s = streams[turn % len(streams)]
                    turn += 1
                    wait = min(_SHARD_POLL_S, self._slice) if left is None else min(_SHARD_POLL_S, self._slice, max(left, 0.001))
                    batches = xread_entries(self.redis.xread({s: xread_id(cursors[s])}, count=count, block=_block_ms(wait)))
            for s, entries in batches:
                for eid, fields in entries:
                    reply = read_reply(s, eid, fields)
                    cursors[s] = reply.entry_id
                    if seen.keep(reply):
                        yield reply

    def video_results(self, video_id: str, stream: Optional[str] = None) -> VideoResults:
        """Every result of the video ``video_id`` now on its results stream (``stream``, else
        its shard's), one per job, ordered by frame number; and the stream's unreadable
        entries."""
        good, bad = [], []
        for reply in self.results(stream, video_id=video_id):
            if reply.result is not None:
                good.append(reply.result)
            elif reply.error is not None:
                bad.append(reply.error)
        good.sort(key=lambda r: (r.frame_number is None, r.frame_number or 0))
        return VideoResults(good, bad)

    # --- the model -------------------------------------------------------------------------

    def model_info(self) -> Optional[ModelInfo]:
        """The hash ``{prefix}:model`` the workers fill at start-up (the model's meta, the
        mesh faces, the keypoint names, ...), or ``None`` when no worker has started."""
        return model_info(self.redis.hgetall(self.layout.model))


# --- helpers shared with the asyncio client ------------------------------------------------


class _Filter:
    def __init__(self, video_id: Optional[str], dedupe: bool) -> None:
        self.video_id = video_id
        self.seen = Seen() if dedupe else None

    def keep(self, reply: Reply) -> bool:
        r = reply.result
        if r is not None and self.video_id is not None and r.video_id != self.video_id:
            return False
        return self.seen is None or self.seen.first(reply)


def _as_frame(f: Union[Frame, Tuple[Job, Image]]) -> Frame:
    if isinstance(f, Frame):
        return f
    job, image = f
    return Frame(job, load_image(image))


def _checked_paths(items: List[Any]) -> List[Any]:
    """Checks up front that every item is an image and every path a file."""
    import os

    for n, item in enumerate(items):
        if not is_image(item):
            raise TypeError(f"frame {n}: an image is bytes or a file path, got {type(item).__name__}")
        if isinstance(item, (str, os.PathLike)) and not os.path.isfile(item):
            raise FileNotFoundError(f"frame {n}: {os.fspath(item)}: no such file")
        if isinstance(item, (bytes, bytearray, memoryview)) and len(item) == 0:
            raise JobError("missing_image", f"frame {n} is empty")
    return items


def _video_image(video_id: str, n: int, item: Any) -> bytes:
    image = load_image(item)
    if not image:
        raise JobError("missing_image", f"video {video_id!r}: frame {n} is empty")
    return image


def _block_ms(left: Optional[float], slice_s: float = BLOCK_SLICE) -> Optional[int]:
    """The BLOCK of one XREAD slice: at most ``slice_s``; ``None`` (no BLOCK) when no time
    is left."""
    if left is None:
        return max(1, int(slice_s * 1000))
    if left <= 0:
        return None
    return max(1, int(min(left, slice_s) * 1000))


def _slice_s(redis: Any) -> float:
    """How long one blocking read may wait: :data:`BLOCK_SLICE`, or half the client's socket
    timeout when that is shorter (so the read is never cut by it)."""
    try:
        timeout = redis.get_connection_kwargs().get("socket_timeout")
    except Exception:  # noqa: BLE001 - a client without the method: the default
        timeout = None
    if isinstance(timeout, (int, float)) and timeout > 0:
        return min(BLOCK_SLICE, timeout / 2)
    return BLOCK_SLICE


def _final_progress(progress: Optional[Progress], done: VideoOutput) -> None:
    if progress is None:
        return
    d = done.done
    progress.total = d.frames
    answered = max(len(progress.answered), d.ok_frames + d.error_frames)
    failed = max(len(progress.failed), d.error_frames)
    if progress.callback is not None:
        progress.callback(VideoProgress(progress.video_id, answered, failed, d.frames, True))


def _wait_target(
    layout: Layout,
    video: Union[SubmittedVideo, str],
    output: Optional[str],
    results: Optional[str],
    frames: Optional[int],
) -> Tuple[str, str, str, str, Optional[int]]:
    if isinstance(video, SubmittedVideo):
        return video.video_id, output or video.output, results or video.results, video.since, video.frames
    keys = layout.video_keys(video)
    out = output or keys.video_output(video, None)
    res = results or keys.results
    for what, s in (("output", out), ("results", res)):
        if s is None or not keys.accepts_reply_to(s):
            raise ValueError(f"{what} {s!r} is not {keys.results} or under it (the shard of video {video!r})")
    assert out is not None
    return video, out, res, "0-0", frames


def _result_streams(layout: Layout, stream: Optional[str], video_id: Optional[str]) -> List[str]:
    if stream is not None:
        return [stream]
    if video_id is not None:
        return [layout.video_keys(video_id).results]
    return [k.results for k in layout.shards]

