"""The asyncio client: the operations of :class:`hmr2_client.Client`, on ``redis.asyncio``.

>>> from hmr2_client.aio import AsyncClient
>>> async def run():                                                  # doctest: +SKIP
...     async with AsyncClient.connect("redis://127.0.0.1:6379") as client:
...         video = await client.submit_video("clip-7", "frames/", fps=30)
...         out = await client.wait_video(video, timeout=600)
...         async for reply in client.results(video_id="clip-7"):
...             print(reply.job_id, reply.result.status if reply.result else reply.error)
"""

from __future__ import annotations

import asyncio
import time
from itertools import islice
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from urllib.parse import urlparse

from ._core import (
    CHUNK,
    PAGE,
    Image,
    ModelInfo,
    Progress,
    Reply,
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
from .client import (
    _SHARD_POLL_S,
    _as_frame,
    _block_ms,
    _slice_s,
    _checked_paths,
    _Filter,
    _final_progress,
    _result_streams,
    _video_image,
    _wait_target,
)
from .job import Frame, Job, JobError, Video
from .keys import Layout

__all__ = ["AsyncClient"]


class AsyncClient:
    """The asyncio producer of one queue: ``AsyncClient.connect(url)`` (no I/O until the first
    call), or around a ``redis.asyncio`` client of your own that does not decode responses.
    Same arguments and behaviour as :class:`hmr2_client.Client`."""

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
    ) -> "AsyncClient":
        """As :meth:`hmr2_client.Client.connect`."""
        urls = parse_urls(url)
        if cluster is None:
            cluster = len(urls) > 1
        if cluster:
            seeds = []
            for u in urls[1:]:
                p = urlparse(u)
                if not p.hostname:
                    raise ValueError(f"{u!r}: not a redis:// or rediss:// URL")
                seeds.append(ClusterNode(p.hostname, p.port or 6379))
            r: Any = RedisCluster.from_url(urls[0], startup_nodes=seeds or None, **redis_options)
        else:
            if len(urls) > 1:
                raise ValueError("several URLs are the seeds of a Redis Cluster: leave cluster unset or True")
            r = aredis.Redis.from_url(urls[0], **redis_options)
        return cls(r, prefix=prefix, shards=shards, cluster=cluster, raw_images=raw_images)

    async def aclose(self) -> None:
        """Closes the connections."""
        close = getattr(self.redis, "aclose", None) or self.redis.close
        await close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.layout!r})"

    def _raw(self, raw: Optional[bool]) -> bool:
        return self.raw_images if raw is None else raw

    # --- adding frames -------------------------------------------------------------------

    async def add_frame(
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
        """As :meth:`hmr2_client.Client.add_frame`."""
        data = await asyncio.to_thread(load_image, image) if image is not None else b""
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
        return await self.add(Frame(job, data), raw=raw)

    async def add(self, frame: Frame, *, raw: Optional[bool] = None) -> str:
        """Adds one :class:`~hmr2_client.Frame`; returns its entry id."""
        keys = check_frame(self.layout, frame)
        return text(await self.redis.xadd(keys.jobs, dict(frame.fields(self._raw(raw)))))

    async def add_frames(
        self,
        frames: Union[Iterable[Union[Frame, Tuple[Job, Image]]], AsyncIterable[Union[Frame, Tuple[Job, Image]]]],
        *,
        raw: Optional[bool] = None,
        on_progress: Optional[Callable[[int], Any]] = None,
    ) -> List[str]:
        """As :meth:`hmr2_client.Client.add_frames`; ``frames`` may be an async iterable."""
        use_raw = self._raw(raw)
        ids: List[str] = []
        async for items in _chunks(frames, CHUNK):
            chunk = await asyncio.to_thread(lambda: [_as_frame(f) for f in items])
            pipe = self.redis.pipeline(transaction=False)
            for f in chunk:
                keys = check_frame(self.layout, f)
                pipe.xadd(keys.jobs, dict(f.fields(use_raw)))
            ids.extend(text(i) for i in await pipe.execute())
            if on_progress is not None:
                on_progress(len(ids))
        return ids

    # --- videos ----------------------------------------------------------------------------

    async def _last_id(self, stream: str) -> str:
        last = await self.redis.xrevrange(stream, "+", "-", count=1)
        return text(last[0][0]) if last else "0-0"

    async def submit_video(
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
        """As :meth:`hmr2_client.Client.submit_video`; ``frames`` may also be an async
        iterable (read whole first unless ``count`` is given). Files are read in a thread."""
        if hasattr(frames, "__aiter__"):
            if count is None:
                frames = [x async for x in frames]
                n, items, exact = frame_source(frames, None)
                source: Any = _AsyncItems(iter(items))
            else:
                n, exact, source = count, False, _AsyncItems(frames.__aiter__())
        else:
            n, items, exact = await asyncio.to_thread(frame_source, frames, count)
            source = _AsyncItems(items)
        plan = plan_video(self.layout, video_id, n, fps, include, reply_to, frame_reply_to)
        if exact:
            checked = await asyncio.to_thread(_checked_paths, await source.take(n))
            source = _AsyncItems(iter(checked))
        use_raw = self._raw(raw)
        results = plan.frame_reply_to or plan.keys.results
        since = await self._last_id(results)
        entry_ids: List[str] = []
        while len(entry_ids) < n:
            start = len(entry_ids)
            chunk = await source.take(min(CHUNK, n - start))
            if not chunk:
                raise short_error(video_id, n, start)
            images = await asyncio.to_thread(lambda: [_video_image(video_id, start + k, x) for k, x in enumerate(chunk)])
            pipe = self.redis.pipeline(transaction=False)
            for k, image in enumerate(images):
                pipe.xadd(plan.keys.jobs, dict(Frame(plan.job(start + k), image).fields(use_raw)))
            entry_ids.extend(text(i) for i in await pipe.execute())
            if on_progress is not None:
                on_progress(len(entry_ids), n)
        return SubmittedVideo(video_id, n, plan.fps, plan.keys.shard, plan.output, results, entry_ids, since)

    def video_output(self, video_id: str, reply_to: Optional[str] = None) -> str:
        """The stream the video's tracked output goes to."""
        keys = self.layout.video_keys(video_id)
        out = keys.video_output(video_id, reply_to)
        if out is None:
            raise JobError("invalid_job", f"reply_to {reply_to!r} is not under {keys.results}")
        return out

    async def wait_video(
        self,
        video: Union[SubmittedVideo, str],
        timeout: Optional[float] = None,
        on_progress: Optional[Callable[[VideoProgress], Any]] = None,
        *,
        output: Optional[str] = None,
        results: Optional[str] = None,
        frames: Optional[int] = None,
    ) -> VideoOutput:
        """As :meth:`hmr2_client.Client.wait_video`. ``on_progress`` may be a coroutine
        function."""
        video_id, out, res, since, total = _wait_target(self.layout, video, output, results, frames)
        collector = VideoCollector(video_id, out)
        calls: List[Any] = []
        callback = None
        if on_progress is not None:
            def callback(p: VideoProgress) -> None:
                calls.append(on_progress(p))

        progress = Progress(video_id, total, callback) if callback is not None else None

        async def flush() -> None:
            while calls:
                c = calls.pop(0)
                if asyncio.iscoroutine(c):
                    await c

        res_after = since
        if progress is not None:
            progress.report()
            await flush()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            streams: Dict[str, str] = {out: collector.after}
            if progress is not None and res != out:
                streams[res] = res_after
            reply = await self.redis.xread(streams, count=PAGE, block=_block_ms(left, self._slice))
            got = False
            for stream, entries in xread_entries(reply):
                if not entries:
                    continue
                got = True
                if stream == out:
                    done = collector.see(entries)
                    if done is not None:
                        _final_progress(progress, done)
                        await flush()
                        return done
                elif progress is not None:
                    res_after = text(entries[-1][0])
                    if progress.see(stream, entries):
                        progress.report()
            await flush()
            if not got and left is not None and left <= 0:
                raise WaitTimeout(video_id, out, timeout or 0.0, progress.snapshot() if progress else None)

    async def read_video(self, stream: str, after: str = "-", count: int = PAGE) -> List[VideoEntry]:
        """As :meth:`hmr2_client.Client.read_video`."""
        page = await self.redis.xrange(stream, exclusive(after), "+", count=count)
        return [read_video_entry(stream, eid, fields) for eid, fields in page]

    # --- results ---------------------------------------------------------------------------

    async def read_results(self, stream: str, after: str = "-", count: int = PAGE) -> List[Reply]:
        """As :meth:`hmr2_client.Client.read_results`."""
        page = await self.redis.xrange(stream, exclusive(after), "+", count=count)
        return [read_reply(stream, eid, fields) for eid, fields in page]

    async def results(
        self,
        stream: Optional[str] = None,
        *,
        video_id: Optional[str] = None,
        after: Union[str, Mapping[str, str]] = "-",
        count: int = PAGE,
        follow: bool = False,
        timeout: Optional[float] = None,
        dedupe: bool = True,
    ) -> AsyncIterator[Reply]:
        """As :meth:`hmr2_client.Client.results`, an async iterator."""
        streams = _result_streams(self.layout, stream, video_id)
        cursors = {s: (after.get(s, "-") if isinstance(after, Mapping) else after) for s in streams}
        for s, a in cursors.items():
            if a == "$":
                cursors[s] = await self._last_id(s)
        seen = _Filter(video_id, dedupe)
        for s in streams:
            while True:
                page = await self.redis.xrange(s, exclusive(cursors[s]), "+", count=count)
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
                batches = xread_entries(await self.redis.xread(ids, count=count, block=_block_ms(left, self._slice)))
            else:
                batches = []
                for s in streams:
                    batches += xread_entries(await self.redis.xread({s: xread_id(cursors[s])}, count=count))
                if not any(e for _, e in batches):
                    s = streams[turn % len(streams)]
                    turn += 1
                    wait = min(_SHARD_POLL_S, self._slice) if left is None else min(_SHARD_POLL_S, self._slice, max(left, 0.001))
                    one = await self.redis.xread({s: xread_id(cursors[s])}, count=count, block=_block_ms(wait))
                    batches = xread_entries(one)
            for s, entries in batches:
                for eid, fields in entries:
                    reply = read_reply(s, eid, fields)
                    cursors[s] = reply.entry_id
                    if seen.keep(reply):
                        yield reply

    async def video_results(self, video_id: str, stream: Optional[str] = None) -> VideoResults:
        """As :meth:`hmr2_client.Client.video_results`."""
        good, bad = [], []
        async for reply in self.results(stream, video_id=video_id):
            if reply.result is not None:
                good.append(reply.result)
            elif reply.error is not None:
                bad.append(reply.error)
        good.sort(key=lambda r: (r.frame_number is None, r.frame_number or 0))
        return VideoResults(good, bad)

    async def model_info(self) -> Optional[ModelInfo]:
        """As :meth:`hmr2_client.Client.model_info`."""
        return model_info(await self.redis.hgetall(self.layout.model))


class _AsyncItems:
    """Items taken a few at a time from an iterator or an async iterator."""

    def __init__(self, it: Union[Iterator[Any], AsyncIterator[Any]]) -> None:
        self.it = it

    async def take(self, n: int) -> List[Any]:
        if hasattr(self.it, "__anext__"):
            out: List[Any] = []
            it: Any = self.it
            while len(out) < n:
                try:
                    out.append(await it.__anext__())
                except StopAsyncIteration:
                    break
            return out
        return list(islice(self.it, n))


async def _chunks(items: Any, n: int) -> AsyncIterator[List[Any]]:
    source = _AsyncItems(items.__aiter__() if hasattr(items, "__aiter__") else iter(items))
    while True:
        chunk = await source.take(n)
        if not chunk:
            return
        yield chunk
