"""The shared wire vectors (``client/tests/wire_vectors.json``, the same the Rust and Node clients
check) and the JSON Schemas of ``schemas/``: jobs read as the worker reads them and rebuilt by
the builder, results and video entries loaded into this package's types, key layout and the
``reply_to`` rule."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from hmr2_client import Job, JobError, JobResult, Layout, VideoDone, VideoFrame, parse_job
from hmr2_client._core import model_info

from conftest import SCHEMAS, VECTORS

WIRE = VECTORS / "wire_vectors.json"


@pytest.fixture(scope="module")
def vectors() -> Dict[str, List[Dict[str, Any]]]:
    if not WIRE.is_file():
        pytest.fail(f"{WIRE} is missing: the shared wire vectors are part of the repository")
    return json.loads(WIRE.read_text())


def job_text(v: Dict[str, Any]) -> str:
    return v["raw"] if "raw" in v else json.dumps(v["job"])


def schema(name: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    path = SCHEMAS / name
    assert path.is_file(), f"{path} is missing: the JSON Schemas are part of the repository"
    s = json.loads(path.read_text())
    return jsonschema.validators.validator_for(s)(s)


def test_every_job_vector_reads_as_the_worker_reads_it(vectors: Dict[str, Any]) -> None:
    jobs = vectors["jobs"]
    assert len(jobs) >= 20
    for v in jobs:
        text = job_text(v)
        if v["valid"]:
            job = parse_job(text, v["image"])
            # The builder writes the same job back.
            assert parse_job(job.to_json(), v["image"]) == job, v["name"]
        else:
            with pytest.raises(JobError) as e:
                parse_job(text, v["image"])
            assert e.value.code == v["code"], (v["name"], e.value)
            assert v.get("error", "") in e.value.message, (v["name"], e.value)


def test_built_jobs_validate_against_the_job_schema(vectors: Dict[str, Any]) -> None:
    validator = schema("job.schema.json")
    for v in vectors["jobs"]:
        if "job" not in v or "schema_valid" not in v:
            continue
        errors = list(validator.iter_errors(v["job"]))
        assert (not errors) == v["schema_valid"], (v["name"], [e.message for e in errors])
        if v["valid"]:
            built = json.loads(parse_job(job_text(v), v["image"]).to_json())
            assert not list(validator.iter_errors(built)), v["name"]
    # Jobs as the client builds them for a tracked video, with every optional field.
    from hmr2_client import Frame, Video

    job = Job("clip-7:3", video_id="clip-7", frame_number=3, boxes=[(1, 2, 3, 4)], reply_to="hmr2:results:x",
              include=("vertices",), video=Video(10, 29.97, reply_to="hmr2:results:video:clip-7"))
    for raw in (True, False):
        fields = dict(Frame(job, b"\xff\xd8").fields(raw))
        assert not list(validator.iter_errors(json.loads(fields["job"])))


def same(got: Any, want: Any, where: str = "") -> None:
    """Every key of ``want`` is in ``got`` with an equal value (numbers compared as numbers)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        for k, w in want.items():
            assert k in got, f"{where}.{k} missing"
            same(got[k], w, f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            same(g, w, f"{where}[{i}]")
    else:
        assert got == want, (where, got, want)


@pytest.mark.parametrize(
    "section,field,cls,schema_name",
    [
        ("results", "result", JobResult, "result.schema.json"),
        ("video_frames", "frame", VideoFrame, "video-frame.schema.json"),
        ("video_done", "done", VideoDone, "video-done.schema.json"),
    ],
)
def test_results_and_video_entries_load_into_the_types(
    vectors: Dict[str, Any], section: str, field: str, cls: Any, schema_name: str
) -> None:
    validator = schema(schema_name)
    assert vectors[section]
    for v in vectors[section]:
        obj = cls.from_dict(v[field])
        written = obj.to_dict()
        same(written, v[field], v["name"])
        same(v[field], written, v["name"])  # and nothing added
        assert cls.from_json(json.dumps(written)) == obj
        assert not [e.message for e in validator.iter_errors(written)], v["name"]


def test_the_model_hash_reads_as_the_other_clients_read_it(vectors: Dict[str, Any]) -> None:
    validator = schema("model.schema.json")
    assert vectors["model"]
    for v in vectors["model"]:
        info = model_info(v["hash"])
        assert info is not None
        written = info.to_dict()
        same(written, v["model"], v["name"])
        same(v["model"], written, v["name"])
        assert not [e.message for e in validator.iter_errors(written)], v["name"]
        assert set(info.fields) == set(v["hash"])  # every field is still there to read


def test_the_key_layout(vectors: Dict[str, Any]) -> None:
    assert vectors["keys"]
    for v in vectors["keys"]:
        layout = Layout(v["prefix"], v["shards"], v["cluster"])
        k = layout.keys_for(v.get("video_id"), v["job_id"])
        assert k.shard == v["shard"], v
        for name in ("tag", "jobs", "results", "dead", "group", "model", "videos", "trackers", "videos_open"):
            if name in v:
                assert getattr(k, name) == v[name], (name, v)
        if "video_id" in v and v["video_id"] is not None:
            assert k.video_state(v["video_id"]) == v["video_state"]
            assert k.video_frames(v["video_id"]) == v["video_frames"]
            assert k.video_output(v["video_id"]) == v["video_output"]


def test_the_reply_to_rule(vectors: Dict[str, Any]) -> None:
    assert vectors["reply_to"]
    for v in vectors["reply_to"]:
        keys = Layout(v["prefix"], v["shards"], v["cluster"]).shard(v["shard"])
        assert keys.accepts_reply_to(v["reply_to"]) == v["accepted"], v
