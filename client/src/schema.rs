//! The wire contract as JSON Schema (draft 2020-12), generated from this crate's types: the
//! single written form of DESIGN §3, §11 and §13 that the Python and TypeScript clients are
//! typed and tested from.
//!
//! Each schema ([`FILES`]) is checked in under `schemas/` at the repository root, and a test
//! fails when a checked-in file differs from what the types generate; [`REGENERATE`] rewrites
//! them. Results, video output and the model hash are described as the worker writes them
//! (every field it always writes is required; an optional field, when present, is never
//! `null`). The job is described as the worker's parser accepts it, through a description type
//! of its own (the parser reads the JSON by hand): every field's type and bounds, `null` for
//! "absent" where the parser takes it so. What JSON Schema cannot say is in the descriptions
//! and in the shared vectors (`client/tests/wire_vectors.json`): lengths are counted in UTF-8
//! bytes where a schema counts characters, a tracked frame's `frame_number` must lie below its
//! video's `frames`, `boxes` holds at most the worker's `limits.max_boxes`, `image_base64` may
//! be left out only when the entry carries an `image` field, and a `reply_to` must lie under
//! the job's own results stream.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};

use crate::model::ModelInfo;
use crate::result::JobResult;
use crate::video::{VideoDone, VideoFrame};

/// The command that rewrites the checked-in schemas (run at the repository root).
pub const REGENERATE: &str = "cargo run -p hmr2-client --features schema --example write_schemas";

/// One schema file of `schemas/`.
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    /// Its file name in `schemas/`.
    pub file: &'static str,
    /// What it describes.
    pub describes: &'static str,
    /// Generates it.
    pub generate: fn() -> Value,
}

/// Every schema file, in the order `schemas/README.md` lists them.
pub const FILES: [SchemaFile; 5] = [
    SchemaFile {
        file: "job.schema.json",
        describes: "the `job` field of an entry of `{prefix}:jobs`",
        generate: job,
    },
    SchemaFile {
        file: "result.schema.json",
        describes: "the `result` field of an entry of a reply stream",
        generate: result,
    },
    SchemaFile {
        file: "video-frame.schema.json",
        describes: "the `frame` field of an entry of a video's output stream",
        generate: video_frame,
    },
    SchemaFile {
        file: "video-done.schema.json",
        describes: "the `done` field of the last entry of a video's output stream",
        generate: video_done,
    },
    SchemaFile {
        file: "model.schema.json",
        describes: "the hash `{prefix}:model`, each field read from its JSON text",
        generate: model,
    },
];

/// The schema of the `job` field of a job entry (what the worker's parser accepts).
pub fn job() -> Value {
    let settings = SchemaSettings::draft2020_12().for_deserialize();
    finish(
        settings
            .into_generator()
            .into_root_schema_for::<JobDescription>(),
        false,
    )
}

/// The schema of a result (the `result` field of a reply-stream entry), as the worker writes it.
pub fn result() -> Value {
    written::<JobResult>()
}

/// The schema of a tracked video's frame (the `frame` field of an output-stream entry).
pub fn video_frame() -> Value {
    written::<VideoFrame>()
}

/// The schema of a tracked video's end (the `done` field of its output stream's last entry).
pub fn video_done() -> Value {
    written::<VideoDone>()
}

/// The schema of the model hash `{prefix}:model`, each hash field read from its JSON text.
pub fn model() -> Value {
    written::<ModelInfo>()
}

/// A schema as the file holds it: pretty-printed, keys sorted, a final newline.
pub fn to_file_text(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(schema)).expect("schemas serialise");
    text.push('\n');
    text
}

/// The schema of `T` as it is written (serialised).
fn written<T: JsonSchema>() -> Value {
    let settings = SchemaSettings::draft2020_12().for_serialize();
    finish(settings.into_generator().into_root_schema_for::<T>(), true)
}

/// Tidies a generated schema: drops the non-standard `format`s schemars gives numbers
/// (`uint64`, `float`, ...; a strict validator refuses unknown formats, and the bounds they
/// imply are in `minimum`/`maximum` already), joins the lines of each description (the doc
/// comments' wrapping; paragraphs stay apart) and, for a written type, drops the `null` of
/// fields that are left out rather than written as `null`, and the `default`s of fields that
/// are always written.
fn finish(schema: Schema, written: bool) -> Value {
    let mut value = schema.to_value();
    walk(&mut value, &mut |node| {
        if let Some(format) = node.get("format").and_then(Value::as_str) {
            if !STANDARD_FORMATS.contains(&format) {
                node.remove("format");
            }
        }
        if let Some(Value::String(text)) = node.get_mut("description") {
            *text = unwrap_lines(text);
        }
        if written {
            tidy_written_properties(node);
        }
    });
    value
}

/// `text` with its single line breaks made spaces; blank lines (paragraphs) kept.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The `format`s of JSON Schema 2020-12 itself (validation vocabulary, §7.3).
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Calls `f` on every object of `value`, innermost last.
fn walk(value: &mut Value, f: &mut impl FnMut(&mut Map<String, Value>)) {
    match value {
        Value::Object(map) => {
            f(map);
            for v in map.values_mut() {
                walk(v, f);
            }
        }
        Value::Array(items) => {
            for v in items {
                walk(v, f);
            }
        }
        _ => {}
    }
}

/// In the object schema of a written type, the properties that are not required are written
/// only when set, never as `null`: their schemas lose the `null` that `Option` gives them.
/// The others are always written: their `default` (what a reader assumes when one is missing)
/// says nothing of what is written.
fn tidy_written_properties(node: &mut Map<String, Value>) {
    let required: Vec<String> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let Some(Value::Object(properties)) = node.get_mut("properties") else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        let Value::Object(p) = property else { continue };
        if required.contains(name) {
            p.remove("default");
            continue;
        }
        // `"type": ["T", "null"]`
        if let Some(Value::Array(types)) = p.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types.remove(0);
                p.insert("type".into(), only);
            }
        }
        // `"anyOf": [{"$ref": ...}, {"type": "null"}]`
        if let Some(Value::Array(any_of)) = p.get("anyOf") {
            let rest: Vec<Value> = any_of
                .iter()
                .filter(|s| **s != json!({"type": "null"}))
                .cloned()
                .collect();
            if rest.len() == 1 && rest.len() < any_of.len() {
                p.remove("anyOf");
                if let Value::Object(inner) = &rest[0] {
                    for (k, v) in inner {
                        p.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
    }
}

/// `value` with every object's keys in sorted order, whichever map serde_json was built with.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

// The conditions of the written types (`extend` in their `schemars` attributes).

/// `if` of a result or frame: its status is `error`.
pub(crate) fn status_is_error() -> Value {
    json!({"properties": {"status": {"const": "error"}}, "required": ["status"]})
}

/// `then` of a result: an error result says why.
pub(crate) fn error_required() -> Value {
    json!({"required": ["error"]})
}

/// `then` of a tracked video's frame: an error frame says why, and has no people.
pub(crate) fn error_frame() -> Value {
    json!({"required": ["error"], "properties": {"people": {"maxItems": 0}}})
}

/// `else` of a result or frame: an `ok` one has no `error`.
pub(crate) fn error_absent() -> Value {
    json!({"not": {"required": ["error"]}})
}

/// `if` of a person: the box is not the detector's.
pub(crate) fn box_source_is_not_detector() -> Value {
    json!({"properties": {"box_source": {"not": {"const": "detector"}}}, "required": ["box_source"]})
}

/// `then` of a person: no detector, no score.
pub(crate) fn score_absent() -> Value {
    json!({"not": {"required": ["score"]}})
}

// The job, as the parser (`job::parse`) accepts it. These types describe; nothing builds them.

/// The `job` field of an entry of `{prefix}:jobs`: a UTF-8 JSON object (wire contract v1).
/// The entry may also carry an `image` field with the raw JPEG or PNG bytes, which wins over
/// `image_base64`. Keys this version does not know are ignored; a known key written twice is
/// `invalid_json`. Whatever could be read of a refused job (`job_id`, `video_id`,
/// `frame_number`, `reply_to`, a well-formed `video`) is echoed in its error result.
#[derive(JsonSchema)]
#[schemars(
    rename = "Job",
    title = "Job",
    extend(
        "if" = {"properties": {"video": {"type": "object"}}, "required": ["video"]},
        "then" = {
            "required": ["video_id", "frame_number"],
            "properties": {"video_id": {"type": "string"}, "frame_number": {"type": "integer"}}
        }
    )
)]
#[allow(dead_code)]
struct JobDescription {
    /// The contract version: 1, the only one (absent means 1). Another integer is refused as
    /// `unsupported_version`, anything else (`null` too) as `invalid_job`.
    #[schemars(title = "Contract version", extend("const" = 1), transform = not_null)]
    v: Option<i64>,
    /// The job's unique id, 1 to 256 bytes of UTF-8: results are keyed by it (a job run twice
    /// after a crash answers with the same id).
    #[schemars(title = "Job id", length(min = 1, max = 256))]
    job_id: String,
    /// The video the frame belongs to, 1 to 256 bytes of UTF-8; echoed in the result. With
    /// queue shards, it picks the job's shard (CRC-32 of its bytes modulo the shards; the
    /// `job_id` when there is none). Required, with `frame_number`, when `video` is set.
    #[schemars(title = "Video id", length(min = 1, max = 256))]
    video_id: Option<String>,
    /// The frame's number in its video, from 0; echoed in the result. Written as an integer
    /// (`3`, not `3.0`). Below `video.frames` when `video` is set.
    #[schemars(title = "Frame number")]
    frame_number: Option<u64>,
    /// The JPEG or PNG bytes, standard base64 (a `data:image/...;base64,` prefix and missing
    /// padding are accepted). Required unless the entry carries an `image` field (`missing_image`);
    /// not valid base64 is `invalid_base64`, not an image `invalid_image`.
    #[schemars(title = "Image, base64")]
    image_base64: Option<String>,
    /// Person boxes `[x1, y1, x2, y2]` in pixels of the image as stored (EXIF orientation is
    /// ignored), in the order the results list the people; they win over the detector. Absent,
    /// `null` or empty: the worker's person detector finds the people (with no detector, one
    /// box covering the whole frame). At most the worker's `limits.max_boxes` (default 32); a
    /// box must lie within the image. Faults are `invalid_box`.
    #[schemars(title = "Person boxes")]
    boxes: Option<Vec<[f64; 4]>>,
    /// The stream that receives the result, 1 to 256 bytes (default `{prefix}:results`). It
    /// must be the job's results stream or lie under it: `{prefix}:results` or
    /// `{prefix}:results:...`, on a sharded queue the job's shard's `{<prefix>:<k>}:results`
    /// or `{<prefix>:<k>}:results:...`. Another stream is `invalid_job`, answered on the
    /// default stream.
    #[schemars(title = "Reply stream", length(min = 1, max = 256))]
    reply_to: Option<String>,
    /// Optional heavy outputs to add to each person.
    #[schemars(title = "Optional outputs")]
    include: Option<Vec<Output>>,
    /// Makes this a frame of a tracked video (contract `video/1`): every frame of the video
    /// carries the same object. Requires `video_id` and a `frame_number` below `frames`. The
    /// first frame seen fixes the video's `frames`, `fps` and `reply_to`; a frame that
    /// disagrees is `invalid_job`.
    #[schemars(title = "Tracked video")]
    video: Option<VideoDescription>,
}

/// An optional output a job can ask for.
#[derive(JsonSchema)]
#[schemars(rename = "Output", title = "Output")]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum Output {
    /// The 6890 mesh vertices of each person (`vertices`).
    Vertices,
}

/// The `video` object of a frame of a tracked video. Keys this version does not know are
/// ignored.
#[derive(JsonSchema)]
#[schemars(rename = "Video", title = "Video")]
#[allow(dead_code)]
struct VideoDescription {
    /// How many frames the video has, at least 1 (an integer): frame numbers run from 0 to
    /// `frames - 1`.
    #[schemars(title = "Frames", range(min = 1))]
    frames: u64,
    /// Frames per second, above 0: tracking bridges gaps and smooths in seconds.
    #[schemars(title = "Frame rate", extend("exclusiveMinimum" = 0))]
    fps: f64,
    /// The stream for the video's tracked output, 1 to 256 bytes, under the same rule as the
    /// job's `reply_to` (default `<results stream>:video:<video_id>`, e.g.
    /// `hmr2:results:video:clip-7`).
    #[schemars(title = "Output stream", length(min = 1, max = 256))]
    reply_to: Option<String>,
}

/// Removes the `null` that `Option` adds to a field's schema: the field may be absent, but
/// not `null`.
fn not_null(schema: &mut Schema) {
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            schema.insert("type".into(), only);
        }
    }
}
