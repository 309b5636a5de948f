//! The shared wire vectors (`tests/wire_vectors.json`, described in `schemas/README.md`): the
//! Rust client must agree with every one of them, as the Python and TypeScript clients must.

use hmr2_client::{ErrorCode, Job, JobResult, Layout, Limits, ModelInfo, VideoDone, VideoFrame};
use serde_json::Value;

/// The vectors file, parsed.
fn vectors() -> Value {
    serde_json::from_str(include_str!("wire_vectors.json")).expect("wire_vectors.json is JSON")
}

/// The list `section` of the vectors file; fails if it is missing or short.
fn section(v: &Value, section: &str, at_least: usize) -> Vec<Value> {
    let list = v[section]
        .as_array()
        .unwrap_or_else(|| panic!("wire_vectors.json has no `{section}` list"))
        .clone();
    assert!(
        list.len() >= at_least,
        "`{section}` has {} vectors, expected at least {at_least}",
        list.len()
    );
    list
}

fn name(v: &Value) -> &str {
    v["name"].as_str().expect("every vector has a name")
}

/// The `job` field text of a job vector: its `raw` text, or its `job` object written compactly.
pub fn job_text(v: &Value) -> String {
    match (&v["raw"], &v["job"]) {
        (Value::String(raw), Value::Null) => raw.clone(),
        (Value::Null, job) if job.is_object() => job.to_string(),
        _ => panic!(
            "{}: a job vector has either `raw` (a string) or `job` (an object)",
            name(v)
        ),
    }
}

#[test]
fn every_job_vector_is_accepted_or_refused_as_it_says() {
    let all = vectors();
    let jobs = section(&all, "jobs", 40);
    let mut names = std::collections::HashSet::new();
    let (mut valid, mut invalid) = (0, 0);
    for v in &jobs {
        let name = name(v);
        assert!(
            names.insert(name.to_string()),
            "two job vectors are named {name}"
        );
        let text = job_text(v);
        let image = v["image"].as_bool().expect("`image` is a boolean");
        let parsed = Job::parse(text.as_bytes(), image, &Limits::default());
        match (v["valid"].as_bool().expect("`valid` is a boolean"), parsed) {
            (true, Ok(job)) => {
                valid += 1;
                // A valid job is built back into a job that parses to the same thing.
                let again = job.to_json();
                let back = Job::parse(again.as_bytes(), image, &Limits::default())
                    .unwrap_or_else(|e| panic!("{name}: written back as {again}, refused: {e}"));
                assert_eq!(back, job, "{name}");
            }
            (true, Err(e)) => panic!("{name}: the vector is valid, the parser refuses it: {e}"),
            (false, Ok(_)) => panic!("{name}: the vector is invalid, the parser accepts it"),
            (false, Err(e)) => {
                invalid += 1;
                let code = v["code"].as_str().expect("an invalid vector has a `code`");
                assert!(
                    ErrorCode::ALL.contains(&ErrorCode::from_wire(code)),
                    "{name}: `{code}` is not a contract error code"
                );
                assert_eq!(e.error.code(), code, "{name}: {e}");
                if let Some(field) = v.get("error") {
                    let field = field.as_str().expect("`error` is a string");
                    assert!(
                        e.to_string().contains(field),
                        "{name}: the refusal does not mention `{field}`: {e}"
                    );
                }
            }
        }
    }
    assert!(
        valid >= 10 && invalid >= 30,
        "{valid} valid, {invalid} invalid"
    );
}

/// Reads each vector of `section` (its object under `field`) with `read`, writes it back with
/// `write`, and checks the text written is the same JSON as the vector's.
fn round_trip<T>(
    section_name: &str,
    field: &str,
    at_least: usize,
    read: impl Fn(&str) -> serde_json::Result<T>,
    write: impl Fn(&T) -> String,
) {
    let all = vectors();
    for v in section(&all, section_name, at_least) {
        let name = name(&v);
        let object = &v[field];
        assert!(
            object.is_object(),
            "{section_name}/{name}: `{field}` is an object"
        );
        let read = read(&object.to_string())
            .unwrap_or_else(|e| panic!("{section_name}/{name}: unreadable: {e}"));
        let written: Value = serde_json::from_str(&write(&read)).unwrap();
        assert_eq!(
            &written, object,
            "{section_name}/{name}: written back differently"
        );
    }
}

#[test]
fn every_result_vector_reads_and_writes_back_unchanged() {
    round_trip(
        "results",
        "result",
        6,
        JobResult::from_json,
        JobResult::to_json,
    );
}

#[test]
fn every_video_frame_vector_reads_and_writes_back_unchanged() {
    round_trip(
        "video_frames",
        "frame",
        3,
        VideoFrame::from_json,
        VideoFrame::to_json,
    );
}

#[test]
fn every_video_done_vector_reads_and_writes_back_unchanged() {
    round_trip(
        "video_done",
        "done",
        3,
        VideoDone::from_json,
        VideoDone::to_json,
    );
}

fn layout_of(v: &Value) -> Layout {
    Layout::new(
        v["prefix"].as_str().expect("`prefix` is a string"),
        v["shards"].as_u64().expect("`shards` is an integer") as usize,
        v["cluster"].as_bool().expect("`cluster` is a boolean"),
    )
}

#[test]
fn every_key_vector_names_the_keys_the_client_builds() {
    let all = vectors();
    for v in section(&all, "keys", 8) {
        let layout = layout_of(&v);
        let video_id = v["video_id"].as_str();
        let job_id = v["job_id"].as_str().expect("`job_id` is a string");
        let keys = layout.keys_for(video_id, job_id);
        let what = format!(
            "{} shards={} cluster={} video_id={video_id:?} job_id={job_id:?}",
            v["prefix"], v["shards"], v["cluster"]
        );
        let expect = |field: &str| -> Option<String> {
            match &v[field] {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => panic!("{what}: `{field}` is {other}"),
            }
        };
        assert_eq!(v["shard"].as_u64(), Some(keys.shard as u64), "{what}");
        for (field, built) in [
            ("tag", &keys.tag),
            ("jobs", &keys.jobs),
            ("results", &keys.results),
            ("dead", &keys.dead),
            ("group", &keys.group),
            ("model", &keys.model),
            ("videos", &keys.videos),
            ("trackers", &keys.trackers),
            ("videos_open", &keys.videos_open),
        ] {
            assert_eq!(expect(field).as_ref(), Some(built), "{what}: {field}");
        }
        let per_video = |f: fn(&hmr2_client::Keys, &str) -> String| video_id.map(|id| f(keys, id));
        assert_eq!(
            expect("video_state"),
            per_video(hmr2_client::Keys::video_state),
            "{what}"
        );
        assert_eq!(
            expect("video_frames"),
            per_video(hmr2_client::Keys::video_frames),
            "{what}"
        );
        assert_eq!(
            expect("video_output"),
            video_id.and_then(|id| keys.video_output(id, None)),
            "{what}"
        );
        // The default reply stream of a job of this shard is always accepted.
        assert!(keys.accepts_reply_to(&keys.results), "{what}");
    }
}

#[test]
fn every_reply_to_vector_is_accepted_or_refused_as_it_says() {
    let all = vectors();
    let cases = section(&all, "reply_to", 20);
    let accepted = cases.iter().filter(|v| v["accepted"] == true).count();
    assert!(accepted >= 5 && cases.len() - accepted >= 10);
    for v in cases {
        let layout = layout_of(&v);
        let shard = v["shard"].as_u64().expect("`shard` is an integer") as usize;
        assert!(shard < layout.len(), "{v}: no shard {shard}");
        let keys = layout.shard(shard);
        let reply_to = v["reply_to"].as_str().expect("`reply_to` is a string");
        let accepted = v["accepted"].as_bool().expect("`accepted` is a boolean");
        assert_eq!(keys.accepts_reply_to(reply_to), accepted, "{v}");
        // A video's own output stream follows the same rule.
        assert_eq!(
            keys.video_output("clip-7", Some(reply_to)).is_some(),
            accepted,
            "{v}"
        );
        // A refused reply_to is answered on the shard's default results stream.
        let answered_on = keys.reply_stream(Some(reply_to));
        assert_eq!(
            answered_on,
            if accepted { reply_to } else { &keys.results },
            "{v}"
        );
    }
}

#[test]
fn every_model_hash_vector_reads_as_it_says() {
    let all = vectors();
    for v in section(&all, "model", 2) {
        let name = name(&v);
        let hash = v["hash"].as_object().expect("`hash` is an object");
        let fields = hash.iter().map(|(k, text)| {
            let text = text.as_str().expect("each hash field is a JSON text");
            (k.as_str(), text)
        });
        let info = ModelInfo::from_hash(fields)
            .unwrap_or_else(|e| panic!("model/{name}: unreadable: {e}"));
        let read = serde_json::to_value(&info).unwrap();
        assert_eq!(read, v["model"], "model/{name}");
        // Written back as hash fields, it reads the same.
        assert_eq!(
            ModelInfo::from_hash(info.to_hash()).unwrap(),
            info,
            "model/{name}"
        );
    }
}
