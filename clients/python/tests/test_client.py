"""The blocking client against a real redis-server and a real 3-master Redis Cluster (every test
runs on both). No worker here: where a result or a video's output is needed, the test writes
it as a worker would."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from hmr2_client import (
    Client,
    Frame,
    Job,
    JobError,
    SubmittedVideo,
    Video,
    VideoProgress,
    WaitTimeout,
    parse_job,
    shard_of,
)

from helpers import JPEG, FakeWorker, done_entry, image, result


def entries(c: Client, stream: str) -> List[Any]:
    return c.redis.xrange(stream, "-", "+")


def fields(e: Any) -> Dict[str, bytes]:
    return {k.decode(): v for k, v in e[1].items()}


def total_jobs(c: Client) -> int:
    return sum(c.redis.xlen(k.jobs) for k in c.layout.shards)


# --- adding frames ---------------------------------------------------------------------------


def test_a_frame_goes_to_its_shard_with_raw_bytes_and_a_job_the_worker_reads(target: Dict[str, Any], tmp_path: Path) -> None:
    c: Client = target["connect"](shards=3)
    keys = c.layout.video_keys("v")
    eid = c.add_frame(JPEG, job_id="v:0", video_id="v", frame_number=0, boxes=[[1, 2, 30.5, 40]], include=["vertices"])
    stored = entries(c, keys.jobs)
    assert [e[0].decode() for e in stored] == [eid]
    f = fields(stored[0])
    assert f["image"] == JPEG
    assert parse_job(f["job"], has_raw_image=True) == Job(
        "v:0", video_id="v", frame_number=0, boxes=[(1.0, 2.0, 30.5, 40.0)], include=("vertices",)
    )
    # From a file, as base64 inside the JSON; a job without a video goes by its job id.
    path = tmp_path / "f.jpg"
    path.write_bytes(JPEG)
    c.add_frame(path, job_id="solo-1", raw=False)
    solo = entries(c, c.layout.keys_for(None, "solo-1").jobs)[-1]
    assert set(fields(solo)) == {"job"}
    assert base64.b64decode(parse_job(fields(solo)["job"]).image_base64 or "") == JPEG
    # Its shard's results stream, or a stream under it, may take the result.
    c.add_frame(JPEG, job_id="v:1", video_id="v", frame_number=1, reply_to=keys.results + ":mine")
    assert total_jobs(c) == 3


def test_a_frame_a_worker_would_refuse_is_not_sent(target: Dict[str, Any]) -> None:
    c: Client = target["connect"](shards=3)
    keys = c.layout.video_keys("v")
    other = c.layout.shard(keys.shard + 1).results
    cases = [
        (dict(reply_to=other), "invalid_job"),
        (dict(reply_to=keys.jobs), "invalid_job"),
        (dict(video=Video(2, 30)), "invalid_job"),  # frame 5 of a video of 2 frames
        (dict(video=Video(8, 30, reply_to=other + ":out")), "invalid_job"),
        (dict(include=["mesh"]), "invalid_job"),
        (dict(boxes=[[1, 2, 3]]), "invalid_box"),
        (dict(job_id=""), "invalid_job"),
        (dict(job_id="x" * 257), "invalid_job"),
    ]
    for extra, code in cases:
        kw: Dict[str, Any] = dict(job_id="v:5", video_id="v", frame_number=5)
        kw.update(extra)
        with pytest.raises(JobError) as e:
            c.add_frame(JPEG, **kw)
        assert e.value.code == code, (extra, e.value)
    with pytest.raises(JobError) as e:
        c.add_frame(None, job_id="v:0")
    assert e.value.code == "missing_image"
    assert total_jobs(c) == 0


def test_many_frames_go_pipelined_in_chunks_each_to_its_shard(target: Dict[str, Any]) -> None:
    c: Client = target["connect"](shards=3)
    frames = [Frame(Job(f"v{n % 5}:{n}", video_id=f"v{n % 5}", frame_number=n), image(n)) for n in range(130)]
    progress: List[int] = []
    ids = c.add_frames(iter(frames), on_progress=progress.append)
    assert progress == [64, 128, 130]
    assert len(ids) == 130
    by_id = {}
    for k in c.layout.shards:
        for e in entries(c, k.jobs):
            job = parse_job(fields(e)["job"], has_raw_image=True)
            assert c.layout.video_keys(job.video_id or "").shard == k.shard
            by_id[(k.jobs, e[0].decode())] = (job, fields(e)["image"])
    assert len(by_id) == 130
    for n, (eid, f) in enumerate(zip(ids, frames)):
        job, img = by_id[(c.layout.keys_for(f.job.video_id, f.job.job_id).jobs, eid)]
        assert job == f.job and img == image(n)
    # (job, image) pairs work too, base64 when asked.
    more = c.add_frames([(Job("w:0", video_id="w", frame_number=0), JPEG)], raw=False)
    w = entries(c, c.layout.video_keys("w").jobs)
    assert w[-1][0].decode() == more[0]
    assert "image" not in fields(w[-1])


# --- videos ----------------------------------------------------------------------------------


def jobs_of(c: Client, video: SubmittedVideo) -> List[Any]:
    stored = entries(c, c.layout.video_keys(video.video_id).jobs)
    return [e for e in stored if e[0].decode() in set(video.entry_ids)]


def test_a_video_goes_to_its_shard_with_its_video_object_on_every_frame(target: Dict[str, Any], clip_dir: Path) -> None:
    c: Client = target["connect"](shards=3)
    sent: List[Any] = []
    video = c.submit_video("clip-7", clip_dir, fps=29.97, include=["vertices"], on_progress=lambda n, t: sent.append((n, t)))
    keys = c.layout.video_keys("clip-7")
    assert (video.frames, video.shard, video.fps) == (8, shard_of("clip-7", 3), 29.97)
    assert video.output == f"{keys.results}:video:clip-7" == c.video_output("clip-7")
    assert video.results == keys.results
    assert sent == [(8, 8)]
    files = sorted(clip_dir.iterdir())
    stored = entries(c, keys.jobs)
    assert [e[0].decode() for e in stored] == video.entry_ids
    for n, e in enumerate(stored):
        f = fields(e)
        assert f["image"] == files[n].read_bytes()
        assert parse_job(f["job"], has_raw_image=True) == Job(
            f"clip-7:{n}", video_id="clip-7", frame_number=n, include=("vertices",), video=Video(8, 29.97)
        )
    assert total_jobs(c) == 8


def test_a_video_from_paths_bytes_or_iterators(target: Dict[str, Any], clip_dir: Path) -> None:
    c: Client = target["connect"](shards=3)
    files = sorted(clip_dir.iterdir())
    # A list of paths, base64, own output and frame result streams.
    keys = c.layout.video_keys("p")
    v = c.submit_video("p", [str(p) for p in files[:3]], 25, raw=False, reply_to=keys.results + ":videos",
                       frame_reply_to=keys.results + ":frames")
    assert v.output == keys.results + ":videos" and v.results == keys.results + ":frames"
    for n, e in enumerate(jobs_of(c, v)):
        job = parse_job(fields(e)["job"])
        assert base64.b64decode(job.image_base64 or "") == files[n].read_bytes()
        assert job.reply_to == keys.results + ":frames"
        assert job.video == Video(3, 25.0, reply_to=keys.results + ":videos")
    # 130 images from a generator of unknown length: read whole, sent in three chunks.
    sent: List[int] = []
    g = c.submit_video("g", (image(n) for n in range(130)), 30, on_progress=lambda n, t: sent.append(n))
    assert (g.frames, sent) == (130, [64, 128, 130])
    assert [fields(e)["image"] for e in jobs_of(c, g)] == [image(n) for n in range(130)]
    assert parse_job(fields(jobs_of(c, g)[-1])["job"], True).video == Video(130, 30.0)
    # An iterator with `count`: only that many are read.
    it = iter([image(n) for n in range(5)])
    k = c.submit_video("k", it, 30, count=3)
    assert k.frames == 3 and next(it) == image(3)
    # An iterator that holds fewer than `count`: what was sent stays queued, and it says so.
    with pytest.raises(JobError, match="5 images were announced, 2 came"):
        c.submit_video("s", iter([image(0), image(1)]), 30, count=5)
    sent_s = [e for e in entries(c, c.layout.video_keys("s").jobs) if b'"video_id":"s"' in fields(e)["job"]]
    assert len(sent_s) == 2


def test_a_video_that_cannot_be_answered_is_refused_before_any_frame_is_sent(target: Dict[str, Any], tmp_path: Path) -> None:
    c: Client = target["connect"](shards=3)
    keys = c.layout.video_keys("clip-7")
    other = c.layout.shard(keys.shard + 1).results
    one = [image(0)]
    cases = [
        (("clip-7", [], 30), {}, "no frames"),
        (("clip-7", one, 0), {}, "fps"),
        (("clip-7", one, float("nan")), {}, "fps"),
        (("clip-7", one, float("inf")), {}, "fps"),
        (("", one, 30), {}, "video id"),
        (("x" * 251, [image(0)] * 100_000, 30), {}, "job id"),
        (("clip-7", one, 30), dict(reply_to=other + ":v"), "reply_to"),
        (("clip-7", one, 30), dict(reply_to=keys.jobs), "reply_to"),
        (("clip-7", one, 30), dict(frame_reply_to=other), "frame_reply_to"),
        (("clip-7", one, 30), dict(include=["mesh"]), "include"),
        (("clip-7", [image(0), tmp_path / "missing.jpg"], 30), {}, "no such file"),
        (("clip-7", [image(0), b""], 30), {}, "frame 1 is empty"),
    ]
    for args, kw, says in cases:
        with pytest.raises((JobError, FileNotFoundError)) as e:
            c.submit_video(*args, **kw)
        assert says in str(e.value), (says, e.value)
    mp4 = tmp_path / "x.mp4"
    mp4.write_bytes(b"x")
    with pytest.raises(ValueError, match="a file, not a directory"):
        c.submit_video("clip-7", mp4, 30)
    with pytest.raises(TypeError):
        c.submit_video("clip-7", JPEG, 30)
    assert total_jobs(c) == 0


def test_wait_video_returns_the_tracked_frames_in_order_and_the_summary(target: Dict[str, Any]) -> None:
    c: Client = target["connect"](shards=3)
    writer: Client = target["connect"](shards=3, prefix=c.layout.prefix)
    video = c.submit_video("clip-7", [image(n) for n in range(4)], 30)
    fake = FakeWorker(writer, video)
    fake.start()
    seen: List[VideoProgress] = []
    out = c.wait_video(video, timeout=30, on_progress=seen.append)
    fake.join(10)
    assert fake.error is None, fake.error
    assert [f.frame_number for f in out.frames] == [0, 1, 2, 3]
    assert [f.status for f in out.frames] == ["ok", "error", "ok", "ok"]
    assert out.frames[2].people[0].interpolated and out.frames[0].people[0].track_id == 1
    assert out.done.video_id == "clip-7" and out.done.error_frames == 1 and out.done.tracks[0].interpolated_frames == 1
    assert len(out.unreadable) == 1 and "`frame`" in out.unreadable[0].reason
    assert out.stream == video.output
    # Progress: from nothing, counted from the frames' results (the duplicate once), then done.
    assert seen[0] == VideoProgress("clip-7", 0, 0, 4, False)
    answered = [p.answered for p in seen]
    assert answered == sorted(answered) and seen[-2].answered == 4 and seen[-2].failed == 1
    assert seen[-1] == VideoProgress("clip-7", 4, 1, 4, True)
    # Once done, it is there at once, by video id too, however short the wait.
    again = c.wait_video("clip-7", timeout=0)
    assert again.frames == out.frames and again.done == out.done
    # The output read page by page, the unreadable entry in its place.
    after, kinds = "-", []
    while True:
        page = c.read_video(video.output, after, count=3)
        if not page:
            break
        after = page[-1].entry_id
        kinds += ["frame" if e.frame else "done" if e.done else "unreadable" for e in page]
    assert kinds == ["frame", "frame", "unreadable", "frame", "frame", "frame", "done", "done"]


def test_wait_video_gives_up_with_how_far_the_video_got(target: Dict[str, Any]) -> None:
    c: Client = target["connect"](shards=3)
    video = c.submit_video("slow", [image(n) for n in range(3)], 30)
    c.redis.xadd(video.results, {"job_id": "slow:0", "result": result("slow:0", "slow", 0)})
    c.redis.xadd(video.output, {"done": done_entry("someone-else", 1)})
    seen: List[VideoProgress] = []
    with pytest.raises(WaitTimeout) as e:
        c.wait_video(video, timeout=1.5, on_progress=seen.append)
    assert isinstance(e.value, TimeoutError)
    assert e.value.progress == VideoProgress("slow", 1, 0, 3, False)
    assert "1 of 3 frames answered" in str(e.value)
    assert seen[-1].answered == 1
    # A client with a short socket timeout waits in shorter slices, never cut by it.
    short: Client = target["connect"](shards=3, prefix=c.layout.prefix, socket_timeout=0.4)
    with pytest.raises(WaitTimeout):
        short.wait_video(video, timeout=1.0)
    # A video id whose output stream is not on its shard is refused.
    with pytest.raises(ValueError):
        c.wait_video("slow", timeout=0, output=c.layout.shard(video.shard + 1).results)


# --- results ---------------------------------------------------------------------------------


def test_results_come_once_each_with_unreadable_entries_as_values(target: Dict[str, Any]) -> None:
    c: Client = target["connect"](shards=3)
    stream = c.layout.video_keys("v").results
    r = c.redis
    ids = [
        r.xadd(stream, {"job_id": "v:0", "result": result("v:0", "v", 0)}),
        r.xadd(stream, {"job_id": "v:1", "result": b"{not json"}),
        r.xadd(stream, {"job_id": "v:0", "result": result("v:0", "v", 0)}),  # answered twice
        r.xadd(stream, {"job_id": "v:2", "result": result("v:2", "v", 2, "error", error={"code": "gpu_on_fire", "message": "m"})}),
        r.xadd(stream, {"job_id": "x"}),
        r.xadd(stream, {"job_id": b"\xff\xfe", "result": result("v:3", "v", 3)}),
        r.xadd(stream, {"job_id": "w:0", "result": result("w:0", "w", 0)}),
        r.xadd(stream, {"job_id": "", "result": result(None, "v", None, "error")}),
    ]
    ids = [i.decode() for i in ids]
    replies = list(c.results(stream))
    assert [x.entry_id for x in replies] == [ids[0], ids[1], ids[3], ids[4], ids[5], ids[6], ids[7]]
    assert replies[0].result is not None and replies[0].result.frame_number == 0
    assert replies[1].error is not None and "not a result" in replies[1].error.reason and replies[1].job_id == "v:1"
    assert ids[1] in str(replies[1].error) and stream in str(replies[1].error)
    assert replies[2].result is not None and replies[2].result.error is not None
    assert replies[2].result.error.code == "gpu_on_fire"
    assert replies[3].error is not None and "no `result` field" in replies[3].error.reason
    assert replies[4].error is not None and "`job_id`" in replies[4].error.reason
    # With duplicates kept, and page by page: every entry, the cursor past the bad ones.
    assert len(list(c.results(stream, dedupe=False, count=2))) == 8
    assert [x.entry_id for x in c.results(stream, after=ids[5])] == ids[6:]
    page = c.read_results(stream, ids[0], count=2)
    assert [x.entry_id for x in page] == ids[1:3]
    # One video's results.
    only_v = list(c.results(video_id="v"))
    assert {x.result.video_id for x in only_v if x.result} == {"v"}
    vr = c.video_results("v")
    assert [x.frame_number for x in vr.results] == [0, 2, None]
    assert len(vr.unreadable) == 3
    assert list(c.results(c.layout.shard(0).results + ":none")) == []


def test_results_of_every_shard_and_new_ones_as_they_come(target: Dict[str, Any]) -> None:
    c: Client = target["connect"](shards=3)
    videos = [f"vid-{n}" for n in range(12)]
    assert len({c.layout.video_keys(v).shard for v in videos}) == 3
    for v in videos:
        c.redis.xadd(c.layout.video_keys(v).results, {"job_id": f"{v}:0", "result": result(f"{v}:0", v, 0)})
    got = [x.job_id for x in c.results()]
    assert sorted(got) == sorted(f"{v}:0" for v in videos)
    # Following: nothing new at first, then what a worker publishes later, on any shard.
    late = [videos[0], videos[5], videos[9]]

    def publish() -> None:
        time.sleep(0.4)
        for v in late:
            c.redis.xadd(c.layout.video_keys(v).results, {"job_id": f"{v}:1", "result": result(f"{v}:1", v, 1)})

    t = threading.Thread(target=publish, daemon=True)
    t.start()
    new: List[str] = []
    for x in c.results(after="$", follow=True, timeout=20):
        new.append(x.job_id)
        if len(new) == len(late):
            break
    t.join(5)
    assert sorted(new) == sorted(f"{v}:1" for v in late)
    # A follow with nothing coming ends at its timeout.
    assert list(c.results(after="$", follow=True, timeout=0.5)) == []


def test_model_info_reads_the_hash_the_workers_fill(target: Dict[str, Any]) -> None:
    c: Client = target["connect"](shards=3)
    assert c.model_info() is None
    c.redis.hset(
        c.layout.model,
        mapping={
            "meta": json.dumps({"name": "hmr2 tiny", "dtype": "float32"}),
            "faces": json.dumps([[0, 1, 2], [2, 1, 3]]),
            "keypoint_names": json.dumps([f"k{i}" for i in range(44)]),
            "topology": json.dumps("synthetic"),
        },
    )
    info = c.model_info()
    assert info is not None
    assert info.meta["name"] == "hmr2 tiny" and info.detector is None
    assert info.faces == [[0, 1, 2], [2, 1, 3]] and info.topology == "synthetic"
    assert info.keypoint_names is not None and len(info.keypoint_names) == 44
    assert set(info.fields) == {"meta", "faces", "keypoint_names", "topology"}


def test_connect_takes_a_list_or_comma_separated_seeds(target: Dict[str, Any]) -> None:
    urls = target["urls"]
    if target["kind"] == "node":
        with pytest.raises(ValueError, match="seeds of a Redis Cluster"):
            Client.connect([urls[0], urls[0]], cluster=False)
        return
    with Client.connect(",".join(urls), prefix="seeds") as c:
        assert c.cluster and len(c.layout) == 1 and c.layout.shard(0).jobs == "{seeds:0}:jobs"
        c.add_frame(JPEG, job_id="j")
        assert c.redis.xlen("{seeds:0}:jobs") == 1
    with Client.connect(urls[1], cluster=True, prefix="one-seed", shards=3) as c:
        assert c.submit_video("v", [JPEG], 1).shard == shard_of("v", 3)


def test_a_client_that_decodes_responses_is_refused(redis_node: str) -> None:
    import redis

    with pytest.raises(ValueError, match="decode_responses"):
        Client(redis.Redis.from_url(redis_node, decode_responses=True))

