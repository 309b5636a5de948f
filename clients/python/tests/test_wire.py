"""The wire contract without Redis: shard hash and key layout (the shared vectors), the jobs the
builder writes, reading jobs as the worker does, results and video entries."""

from __future__ import annotations

import base64
import json
import math

import pytest

from conftest import VECTORS
from hmr2_client import (
    Frame,
    Job,
    JobError,
    JobResult,
    Keys,
    Layout,
    ShapeError,
    Video,
    VideoDone,
    VideoFrame,
    parse_job,
    routing_key,
    shard_of,
)


def test_the_shard_hash_matches_the_shared_vectors() -> None:
    vectors = json.loads((VECTORS / "shard_vectors.json").read_text())
    assert len(vectors) >= 5
    for v in vectors:
        for n, shard in v["shards"].items():
            assert shard_of(v["key"], int(n)) == shard, (v["key"], n)
            layout = Layout("hmr2", int(n), cluster=True)
            assert layout.keys_for(v["key"], "ignored").shard == shard
            assert layout.keys_for(None, v["key"]).shard == shard
    assert shard_of("123456789", 7) == 0xCBF43926 % 7
    assert routing_key("", "j") == ""  # an empty video id is still the routing key
    assert routing_key(None, "j") == "j"


def test_unsharded_keys_and_sharded_keys_follow_the_layout() -> None:
    k = Layout("hmr2").shard(0)
    assert (k.jobs, k.results, k.dead, k.group, k.model) == ("hmr2:jobs", "hmr2:results", "hmr2:dead", "hmr2-workers", "hmr2:model")
    assert (k.videos, k.trackers, k.videos_open) == ("hmr2:videos", "hmr2-trackers", "hmr2:videos:open")
    assert k.video_output("clip-7") == "hmr2:results:video:clip-7"
    assert k.video_state("clip-7") == "hmr2:video:clip-7"
    assert k.video_frames("clip-7") == "hmr2:video-frames:clip-7"
    # A cluster with one shard still keeps its keys in one slot.
    assert Layout("hmr2", 1, cluster=True).shard(0).jobs == "{hmr2:0}:jobs"
    layout = Layout("hmr2", 4, cluster=False)
    s3 = layout.shard(3)
    assert s3.tag == "{hmr2:3}"
    for key in (s3.jobs, s3.results, s3.dead, s3.group, s3.videos, s3.trackers, s3.videos_open):
        assert key.startswith("{hmr2:3}"), key
    assert s3.model == "hmr2:model"
    assert s3.video_output("clip-7") == "{hmr2:3}:results:video:clip-7"
    assert layout.video_keys("clip-7").shard == shard_of("clip-7", 4)
    assert layout.shard_of_reply_to("{hmr2:2}:results:x") == layout.shard(2)
    assert layout.shard_of_reply_to("{hmr2:12}:results") is None


def test_reply_to_must_be_the_shards_results_stream_or_under_it() -> None:
    k = Keys.unsharded("hmr2")
    for ok in ("hmr2:results", "hmr2:results:", "hmr2:results:video-7"):
        assert k.accepts_reply_to(ok), ok
        assert k.reply_stream(ok) == ok
    for bad in ("hmr2:results-b:jobs", "hmr2:resultsX", "hmr2:results_", "hmr2:jobs", "other:results", "", "hmr2:dead"):
        assert not k.accepts_reply_to(bad), bad
        assert k.reply_stream(bad) == "hmr2:results"
        assert k.video_output("v", bad) is None
    s1 = Layout("hmr2", 4).shard(1)
    assert s1.accepts_reply_to("{hmr2:1}:results:v")
    assert not s1.accepts_reply_to("{hmr2:2}:results:v")
    assert not s1.accepts_reply_to("hmr2:results")


def test_built_jobs_are_written_as_the_rust_client_writes_them() -> None:
    job = Job("clip-7:16", video_id="clip-7", frame_number=16, image_base64="AQID", video=Video(120, 29.97))
    assert job.to_json() == (
        '{"v":1,"job_id":"clip-7:16","video_id":"clip-7","frame_number":16,"image_base64":"AQID",'
        '"video":{"frames":120,"fps":29.97}}'
    )
    own = Job("clip-7:1", video_id="clip-7", frame_number=1, video=Video(2, 30, reply_to="hmr2:results:out"))
    assert own.to_json().endswith('"video":{"frames":2,"fps":30.0,"reply_to":"hmr2:results:out"}}')
    assert Job("a").to_json() == '{"v":1,"job_id":"a"}'
    full = Job("v1:16", video_id="v1", frame_number=16, boxes=[(1, 2.5, 30, 40)], reply_to="hmr2:results:me",
               include=("vertices",), image_base64="AQID")
    assert full.to_json() == (
        '{"v":1,"job_id":"v1:16","video_id":"v1","frame_number":16,"image_base64":"AQID",'
        '"boxes":[[1.0,2.5,30.0,40.0]],"reply_to":"hmr2:results:me","include":["vertices"]}'
    )
    assert parse_job(full.to_json()) == full
    assert Job("é", video_id="ü").to_json() == '{"v":1,"job_id":"é","video_id":"ü"}'


def test_frame_fields_carry_raw_bytes_or_base64() -> None:
    job = Job("v:1", video_id="v", frame_number=1, boxes=[(0, 0, 10, 20)], include=("vertices",))
    f = Frame(job, b"\x01\x02\x03")
    raw = f.fields(raw=True)
    assert [k for k, _ in raw] == ["job", "image"]
    assert raw[1][1] == b"\x01\x02\x03"
    assert parse_job(raw[0][1], has_raw_image=True) == job
    b64 = f.fields(raw=False)
    assert [k for k, _ in b64] == ["job"]
    parsed = parse_job(b64[0][1])
    assert parsed.image_base64 == "AQID" and base64.b64decode(parsed.image_base64) == b"\x01\x02\x03"
    # A frame without bytes sends the job's own base64, whatever `raw` says.
    pre = Frame(Job("v:1", image_base64="AAAA"), b"")
    assert [k for k, _ in pre.fields(raw=True)] == ["job"]
    # Raw: the job's own base64 is left out (the image field wins anyway).
    both = Frame(Job("v:1", image_base64="AAAA"), b"\xff")
    assert "image_base64" not in json.loads(both.fields(raw=True)[0][1])


@pytest.mark.parametrize(
    "text,code",
    [
        ("{not json", "invalid_json"),
        ("[1,2]", "invalid_json"),
        ("", "invalid_json"),
        ("null", "invalid_json"),
        ('{"job_id":"a","image_base64":"A"} x', "invalid_json"),
        ('{"job_id":"a","job_id":"b","image_base64":"A"}', "invalid_json"),
        ('{"job_id":"a","image_base64":"A","n":1e400}', "invalid_json"),
        ('{"job_id":"a","image_base64":"A","x":NaN}', "invalid_json"),
        ('{"v":2,"job_id":"a","image_base64":"A"}', "unsupported_version"),
        ('{"v":"1","job_id":"a","image_base64":"A"}', "invalid_job"),
        ('{"image_base64":"A"}', "invalid_job"),
        ('{"job_id":7,"image_base64":"A"}', "invalid_job"),
        ('{"job_id":"","image_base64":"A"}', "invalid_job"),
        ('{"job_id":"a"}', "missing_image"),
        ('{"job_id":"a","image_base64":"A","frame_number":-1}', "invalid_job"),
        ('{"job_id":"a","image_base64":"A","frame_number":1.5}', "invalid_job"),
        ('{"job_id":"a","image_base64":"A","boxes":{}}', "invalid_box"),
        ('{"job_id":"a","image_base64":"A","boxes":[[1,2,3]]}', "invalid_box"),
        ('{"job_id":"a","image_base64":"A","boxes":[[1,2,3,"x"]]}', "invalid_box"),
        ('{"job_id":"a","image_base64":"A","include":["mesh"]}', "invalid_job"),
        ('{"job_id":"a","image_base64":"A","include":"vertices"}', "invalid_job"),
        ('{"job_id":"a","image_base64":"A","reply_to":""}', "invalid_job"),
        ('{"job_id":"v:0","image_base64":"A","frame_number":0,"video":{"frames":1,"fps":30}}', "invalid_job"),
        ('{"job_id":"v:0","image_base64":"A","video_id":"v","video":{"frames":1,"fps":30}}', "invalid_job"),
        ('{"job_id":"v:2","image_base64":"A","video_id":"v","frame_number":2,"video":{"frames":2,"fps":30}}', "invalid_job"),
        ('{"job_id":"v:0","image_base64":"A","video_id":"v","frame_number":0,"video":{"frames":0,"fps":30}}', "invalid_job"),
        ('{"job_id":"v:0","image_base64":"A","video_id":"v","frame_number":0,"video":{"frames":1.0,"fps":30}}', "invalid_job"),
        ('{"job_id":"v:0","image_base64":"A","video_id":"v","frame_number":0,"video":{"frames":1,"fps":0}}', "invalid_job"),
        ('{"job_id":"v:0","image_base64":"A","video_id":"v","frame_number":0,"video":{"frames":1}}', "invalid_job"),
        ('{"job_id":"v:0","image_base64":"A","video_id":"v","frame_number":0,"video":[1]}', "invalid_job"),
        ('{"job_id":"v:0","image_base64":"A","video_id":"v","frame_number":0,"video":{"frames":1,"frames":2,"fps":1}}', "invalid_json"),
    ],
)
def test_bad_jobs_get_the_workers_error_code(text: str, code: str) -> None:
    with pytest.raises(JobError) as e:
        parse_job(text)
    assert e.value.code == code, e.value


def test_jobs_the_worker_accepts_parse() -> None:
    job = parse_job('{"job_id":"a","x":{"deep":[1,{"b":null}]},"boxes":null,"include":null,"video":null}', has_raw_image=True)
    assert job == Job("a")
    long_id = "x" * 256
    assert parse_job(json.dumps({"job_id": long_id, "image_base64": "A"})).job_id == long_id
    with pytest.raises(JobError, match="257 bytes"):
        parse_job(json.dumps({"job_id": long_id + "x", "image_base64": "A"}))
    many = {"job_id": "a", "image_base64": "A", "boxes": [[0, 0, 1, 1]] * 33}
    with pytest.raises(JobError, match="33 boxes"):
        parse_job(json.dumps(many))
    deep = '{"job_id":"a","image_base64":"A","x":' + "[" * 200 + "]" * 200 + "}"
    with pytest.raises(JobError) as e:
        parse_job(deep)
    assert e.value.code == "invalid_json"
    tracked = parse_job('{"job_id":"v:9","video_id":"v","frame_number":9,"image_base64":"A","video":{"frames":10,"fps":1}}')
    assert tracked.video == Video(10, 1.0)
    with pytest.raises(JobError, match="got 0"):
        parse_job('{"job_id":"v:0","image_base64":"A","video_id":"v","frame_number":0,"video":{"frames":1,"fps":0}}')
    # With a raw image field, image_base64 is ignored.
    assert parse_job('{"job_id":"a","image_base64":"A"}', has_raw_image=True).image_base64 is None


def test_a_built_job_the_worker_would_refuse_is_refused_when_checked() -> None:
    with pytest.raises(JobError, match="below `video.frames`"):
        Job("v:5", video_id="v", frame_number=5, video=Video(5, 30)).check()
    with pytest.raises(JobError):
        Job("v:0", video_id="v", frame_number=0, include=("mesh",)).to_json()
    with pytest.raises(JobError):
        Video(3, math.nan).check()
    Job("v:4", video_id="v", frame_number=4, video=Video(5, 30)).check()


FRAME = """{"v":1,"video_id":"clip-7","frame_number":16,"status":"ok",
  "people":[{"track_id":2,"box":[10.0,20.0,110.0,320.0],"score":0.93,"box_source":"detector",
             "global_orient":[[1.0,0.0,0.0],[0.0,1.0,0.0],[0.0,0.0,1.0]],
             "body_pose":[[[1.0,0.0,0.0],[0.0,1.0,0.0],[0.0,0.0,1.0]]],
             "betas":[0.5,-0.25],"pred_cam_t_full":[0.1,0.2,21.5],"focal_length":5000.0,
             "keypoints_2d":[[64.0,48.5]],"keypoints_3d":[[0.1,-0.2,0.3]],"interpolated":true}]}"""

DONE = """{"v":1,"video_id":"clip-7","status":"ok","frames":120,"ok_frames":119,"error_frames":1,
  "missing_frames":0,"fps":29.97,
  "tracks":[{"track_id":1,"first_frame":0,"last_frame":119,"frames":120,"interpolated_frames":4},
            {"track_id":2,"first_frame":10,"last_frame":60,"frames":51,"interpolated_frames":0}],
  "timings_ms":{"tracking":85.5,"total":40210.0}}"""


def test_video_entries_read_and_write_the_contract_shape() -> None:
    f = VideoFrame.from_json(FRAME)
    p = f.people[0]
    assert (f.video_id, f.frame_number, f.status) == ("clip-7", 16, "ok")
    assert (p.track_id, p.box, p.score, p.box_source, p.interpolated) == (2, [10, 20, 110, 320], 0.93, "detector", True)
    assert p.vertices is None
    assert f.to_dict() == json.loads(FRAME)
    d = VideoDone.from_json(DONE)
    assert (d.frames, d.ok_frames, d.error_frames, d.missing_frames, d.fps) == (120, 119, 1, 0, 29.97)
    assert [(t.track_id, t.first_frame, t.last_frame, t.frames, t.interpolated_frames) for t in d.tracks] == [
        (1, 0, 119, 120, 4),
        (2, 10, 60, 51, 0),
    ]
    assert d.to_dict() == json.loads(DONE)
    expired = json.loads(DONE)
    expired.update(status="expired", tracks=[])
    assert VideoDone.from_dict(expired).status == "expired"
    for bad in ("Expired", "error", None):
        with pytest.raises(ShapeError):
            VideoDone.from_dict({**expired, "status": bad})
    with pytest.raises(ShapeError):
        VideoFrame.from_json(FRAME.replace('"ok"', '"expired"'))
    with pytest.raises(ShapeError):
        VideoFrame.from_json(FRAME.replace('"track_id":2', '"track_id":-2'))
    with pytest.raises(ShapeError):
        VideoDone.from_json(DONE.replace('"frames":120,"ok_frames"', '"frames":120.0,"ok_frames"'))
    bare = VideoFrame.from_json('{"v":1,"video_id":"c","frame_number":0,"status":"error","error":{"code":"too_many_deliveries","message":"m"}}')
    assert bare.people == [] and bare.error is not None and bare.error.code == "too_many_deliveries"


def test_results_read_unknown_codes_as_themselves_and_refuse_wrong_shapes() -> None:
    newer = JobResult.from_json(
        '{"v":1,"job_id":null,"entry_id":"1-0","status":"error","error":{"code":"nope","message":"m"},'
        '"warnings":[{"code":"later","message":""}]}'
    )
    assert newer.error is not None and newer.error.code == "nope"
    assert newer.warnings[0].code == "later"
    assert json.loads(newer.to_json())["error"]["code"] == "nope"
    minimal = JobResult.from_json('{"v":1,"job_id":null,"entry_id":"1-0","status":"ok"}')
    assert minimal.people == [] and minimal.warnings == [] and minimal.worker == ""
    assert "warnings" not in minimal.to_dict()
    for bad in (
        '{"v":1,"job_id":null,"entry_id":"1-0","status":"maybe"}',
        '{"v":1,"job_id":null,"status":"ok"}',
        '{"v":1,"job_id":3,"entry_id":"1-0","status":"ok"}',
        '{"v":1,"job_id":"a","entry_id":"1-0","status":"ok","people":null}',
        '{"v":1,"job_id":"a","entry_id":"1-0","status":"ok","image_size":[1]}',
        '{"v":1,"job_id":"a","entry_id":"1-0","status":"ok","people":[{"box":[1,2,3]}]}',
    ):
        with pytest.raises(ValueError):
            JobResult.from_json(bad)
