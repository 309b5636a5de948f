"""The asyncio client: the same operations, on a real redis-server and a real Redis Cluster."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, TypeVar

import pytest

from hmr2_client import Client, Frame, Job, JobError, Video, VideoProgress, WaitTimeout, parse_job
from hmr2_client.aio import AsyncClient

from helpers import JPEG, FakeWorker, image, result

T = TypeVar("T")


def run(target: Dict[str, Any], body: Callable[[AsyncClient, Client], Awaitable[T]], shards: int = 3) -> T:
    """Runs ``body(async_client, sync_client)`` on one prefix: the sync client checks what
    the async one did."""
    sync: Client = target["connect"](shards=shards)

    async def main() -> T:
        async with AsyncClient.connect(target["urls"], prefix=sync.layout.prefix, shards=shards,
                                       cluster=target["kind"] == "cluster") as c:
            return await asyncio.wait_for(body(c, sync), 60)

    return asyncio.run(main())


def stored_jobs(c: Client, video_id: str) -> List[Any]:
    return c.redis.xrange(c.layout.video_keys(video_id).jobs, "-", "+")


def test_frames_are_added_as_by_the_blocking_client(target: Dict[str, Any]) -> None:
    async def body(c: AsyncClient, sync: Client) -> None:
        eid = await c.add_frame(JPEG, job_id="v:0", video_id="v", frame_number=0, boxes=[[1, 2, 3, 4]])
        e = stored_jobs(sync, "v")[-1]
        assert e[0].decode() == eid and e[1][b"image"] == JPEG
        assert parse_job(e[1][b"job"], True) == Job("v:0", video_id="v", frame_number=0, boxes=[(1.0, 2.0, 3.0, 4.0)])
        with pytest.raises(JobError):
            await c.add_frame(JPEG, job_id="v:1", video_id="v", frame_number=1, reply_to="elsewhere")

        async def frames() -> AsyncIterator[Frame]:
            for n in range(70):
                yield Frame(Job(f"w:{n}", video_id="w", frame_number=n), image(n))

        progress: List[int] = []
        ids = await c.add_frames(frames(), on_progress=progress.append)
        assert progress == [64, 70] and len(ids) == 70
        w = [x for x in stored_jobs(sync, "w") if b'"video_id":"w"' in x[1][b"job"]]
        assert [x[0].decode() for x in w] == ids
        assert [x[1][b"image"] for x in w] == [image(n) for n in range(70)]

    run(target, body)


def test_a_video_from_an_async_source_and_its_tracked_output(target: Dict[str, Any], clip_dir: Path) -> None:
    async def body(c: AsyncClient, sync: Client) -> None:
        async def images(n: int) -> AsyncIterator[bytes]:
            for k in range(n):
                await asyncio.sleep(0)
                yield image(k)

        # Unknown length: read whole first; with `count`: only so many; short: an error.
        a = await c.submit_video("a", images(5), 30)
        assert a.frames == 5
        jobs = [parse_job(x[1][b"job"], True) for x in stored_jobs(sync, "a") if x[0].decode() in a.entry_ids]
        assert [j.frame_number for j in jobs] == [0, 1, 2, 3, 4] and jobs[0].video == Video(5, 30.0)
        b = await c.submit_video("b", images(10), 25, count=4)
        assert b.frames == 4 and len(b.entry_ids) == 4
        with pytest.raises(JobError, match="6 images were announced, 2 came"):
            await c.submit_video("s", images(2), 25, count=6)
        d = await c.submit_video("d", clip_dir, 12.5, include=["vertices"])
        first = parse_job(stored_jobs(sync, "d")[-8][1][b"job"], True)
        assert first.include == ("vertices",) and first.video == Video(8, 12.5)

        # The tracked output, with progress through a coroutine function.
        video = await c.submit_video("clip-7", [image(n) for n in range(4)], 30)
        fake = FakeWorker(sync, video)
        fake.start()
        seen: List[VideoProgress] = []

        async def note(p: VideoProgress) -> None:
            seen.append(p)

        out = await c.wait_video(video, timeout=30, on_progress=note)
        await asyncio.to_thread(fake.join, 10)
        assert fake.error is None
        assert [f.frame_number for f in out.frames] == [0, 1, 2, 3]
        assert out.done.error_frames == 1 and len(out.unreadable) == 1
        assert seen[0].answered == 0 and seen[-1] == VideoProgress("clip-7", 4, 1, 4, True)
        page = await c.read_video(video.output, "-", 100)
        assert sum(1 for e in page if e.frame) == 5 and sum(1 for e in page if e.done) == 2
        with pytest.raises(WaitTimeout):
            await c.wait_video("b", timeout=0.3)

    run(target, body)


def test_results_as_an_async_iterator(target: Dict[str, Any]) -> None:
    async def body(c: AsyncClient, sync: Client) -> None:
        stream = c.layout.video_keys("v").results
        for n in (0, 1, 1, 2):
            sync.redis.xadd(stream, {"job_id": f"v:{n}", "result": result(f"v:{n}", "v", n)})
        sync.redis.xadd(stream, {"job_id": "v:3", "result": b"[]"})
        got = [r async for r in c.results(video_id="v")]
        assert [r.job_id for r in got] == ["v:0", "v:1", "v:2", "v:3"]
        assert got[3].error is not None and got[3].result is None
        assert len([r async for r in c.results(video_id="v", dedupe=False)]) == 5
        vr = await c.video_results("v")
        assert [r.frame_number for r in vr.results] == [0, 1, 2] and len(vr.unreadable) == 1
        page = await c.read_results(stream, got[0].entry_id, 2)
        assert [r.job_id for r in page] == ["v:1", "v:1"]

        # New results on every shard as they come.
        late = ["vid-0", "vid-5", "vid-9"]

        def publish() -> None:
            time.sleep(0.3)
            for v in late:
                sync.redis.xadd(c.layout.video_keys(v).results, {"job_id": f"{v}:0", "result": result(f"{v}:0", v, 0)})

        threading.Thread(target=publish, daemon=True).start()
        new = []
        async for r in c.results(after="$", follow=True, timeout=20):
            new.append(r.job_id)
            if len(new) == 3:
                break
        assert sorted(new) == sorted(f"{v}:0" for v in late)

        assert await c.model_info() is None
        sync.redis.hset(c.layout.model, mapping={"meta": json.dumps({"name": "m"}), "parents": "[-1, 0]"})
        info = await c.model_info()
        assert info is not None and info.meta == {"name": "m"} and info.parents == [-1, 0]

    run(target, body)
