//! The wire contract v1: jobs in, results out (DESIGN §3).
//!
//! A job is one stream entry with a `job` field (UTF-8 JSON) and optionally an `image` field
//! (raw JPEG/PNG bytes, which wins over `image_base64`). Parsing is strict about types and
//! limits, and tolerant of unknown keys (so producers can add tracing fields). When a job is
//! rejected, whatever could be read of it (`job_id`, `video_id`, `frame_number`, `reply_to`) is
//! still echoed in the error result.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::LimitsConfig;
use crate::error::InputError;

/// The only contract version this worker speaks.
pub const VERSION: i64 = 1;
/// Longest accepted `job_id`, `video_id` and `reply_to`, bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Optional heavy outputs a job can ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Include {
    pub vertices: bool,
}

/// A parsed, validated job (image still encoded).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub echo: Echo,
    /// Base64 image when no raw `image` field came with the entry.
    pub image_base64: Option<String>,
    /// Person boxes `[x1, y1, x2, y2]` in pixels, unchecked against the image yet.
    pub boxes: Vec<[f64; 4]>,
    pub include: Include,
}

/// What a result echoes back of its job, and where it goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Echo {
    pub job_id: Option<String>,
    pub video_id: Option<String>,
    pub frame_number: Option<u64>,
    pub reply_to: Option<String>,
}

/// Parses the `job` field. `has_raw_image` says whether the entry carries an `image` field.
/// On failure the error comes with whatever could be echoed.
pub fn parse(
    raw: &[u8],
    has_raw_image: bool,
    limits: &LimitsConfig,
) -> Result<Job, (InputError, Echo)> {
    if raw.len() > limits.max_job_bytes {
        return Err((
            InputError::InvalidJob(format!(
                "job field is {} bytes, the limit is {}",
                raw.len(),
                limits.max_job_bytes
            )),
            Echo::default(),
        ));
    }
    let value: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => return Err((InputError::InvalidJson(e.to_string()), Echo::default())),
    };
    let Value::Object(obj) = value else {
        return Err((
            InputError::InvalidJson("the job must be a JSON object".into()),
            Echo::default(),
        ));
    };
    let echo = read_echo(&obj);
    match parse_object(&obj, echo.clone(), has_raw_image, limits) {
        Ok(job) => Ok(job),
        Err(e) => Err((e, echo)),
    }
}

/// Best-effort echo fields: only well-typed, bounded values are echoed.
fn read_echo(obj: &Map<String, Value>) -> Echo {
    let bounded = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= MAX_ID_BYTES)
            .map(str::to_string)
    };
    Echo {
        job_id: bounded("job_id"),
        video_id: bounded("video_id"),
        frame_number: obj.get("frame_number").and_then(Value::as_u64),
        reply_to: bounded("reply_to"),
    }
}

fn parse_object(
    obj: &Map<String, Value>,
    echo: Echo,
    has_raw_image: bool,
    limits: &LimitsConfig,
) -> Result<Job, InputError> {
    let invalid = |m: String| Err(InputError::InvalidJob(m));
    match obj.get("v") {
        None => {}
        Some(v) => match v.as_i64() {
            Some(VERSION) => {}
            Some(other) => return Err(InputError::UnsupportedVersion(other)),
            None => return invalid(format!("`v` must be an integer, got {}", kind(v))),
        },
    }
    match obj.get("job_id") {
        Some(Value::String(s)) if s.is_empty() => return invalid("`job_id` is empty".into()),
        Some(Value::String(s)) if s.len() > MAX_ID_BYTES => {
            return invalid(format!(
                "`job_id` is {} bytes, at most {MAX_ID_BYTES} allowed",
                s.len()
            ))
        }
        Some(Value::String(_)) => {}
        Some(v) => return invalid(format!("`job_id` must be a string, got {}", kind(v))),
        None => return invalid("`job_id` is required".into()),
    }
    for key in ["video_id", "reply_to"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_BYTES => {}
            Some(Value::String(_)) => {
                return invalid(format!("`{key}` must be 1 to {MAX_ID_BYTES} bytes"))
            }
            Some(v) => return invalid(format!("`{key}` must be a string, got {}", kind(v))),
        }
    }
    match obj.get("frame_number") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64().is_some() => {}
        Some(v) => {
            return invalid(format!(
                "`frame_number` must be an integer >= 0, got {}",
                kind(v)
            ))
        }
    }
    let image_base64 = match obj.get("image_base64") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => return invalid(format!("`image_base64` must be a string, got {}", kind(v))),
    };
    if image_base64.is_none() && !has_raw_image {
        return Err(InputError::MissingImage);
    }
    let boxes = parse_boxes(obj.get("boxes"), limits.max_boxes)?;
    let mut include = Include::default();
    match obj.get("include") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item.as_str() {
                    Some("vertices") => include.vertices = true,
                    Some(other) => {
                        return invalid(format!(
                            "unknown `include` item {:?} (known: \"vertices\")",
                            truncate(other, 40)
                        ))
                    }
                    None => return invalid("`include` items must be strings".into()),
                }
            }
        }
        Some(v) => return invalid(format!("`include` must be an array, got {}", kind(v))),
    }
    Ok(Job {
        echo,
        image_base64: if has_raw_image { None } else { image_base64 },
        boxes,
        include,
    })
}

fn parse_boxes(v: Option<&Value>, max_boxes: usize) -> Result<Vec<[f64; 4]>, InputError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(v) => {
            return Err(InputError::InvalidBox(format!(
                "`boxes` must be an array of [x1, y1, x2, y2], got {}",
                kind(v)
            )))
        }
    };
    if items.len() > max_boxes {
        return Err(InputError::InvalidBox(format!(
            "{} boxes, at most {max_boxes} allowed",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let coords = b.as_array().filter(|a| a.len() == 4).ok_or_else(|| {
                InputError::InvalidBox(format!("box {i} is not an array of 4 numbers"))
            })?;
            let mut out = [0.0; 4];
            for (slot, c) in out.iter_mut().zip(coords) {
                *slot = c.as_f64().ok_or_else(|| {
                    InputError::InvalidBox(format!("box {i} has a non-numeric coordinate"))
                })?;
            }
            Ok(out)
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// One result (the `result` field of a reply-stream entry).
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub v: i64,
    pub job_id: Option<String>,
    /// The job's stream entry id: identifies the job even when its JSON was unreadable.
    pub entry_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_number: Option<u64>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<[u32; 2]>,
    pub people: Vec<Person>,
    pub timings_ms: Timings,
    pub worker: String,
    pub device: String,
    pub model: String,
}

/// `ok` or `error`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Error,
}

/// A stable code and a human message.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Where the time went, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    pub queue_wait: f64,
    pub decode: f64,
    pub inference: f64,
    pub total: f64,
}

/// One person's outputs; coordinates in the full frame.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Person {
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub box_center: [f32; 2],
    pub box_size: f32,
    pub pred_cam: [f32; 3],
    pub pred_cam_t_full: [f32; 3],
    pub focal_length: f32,
    pub global_orient: [[f32; 3]; 3],
    pub body_pose: Vec<[[f32; 3]; 3]>,
    pub betas: Vec<f32>,
    pub keypoints_3d: Vec<[f32; 3]>,
    pub keypoints_2d: Vec<[f32; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vertices: Option<Vec<[f32; 3]>>,
}

impl JobResult {
    /// A successful, empty result for the job `entry_id` with `echo` (filled in by the caller).
    pub fn new(entry_id: &str, echo: &Echo) -> Self {
        JobResult {
            v: VERSION,
            job_id: echo.job_id.clone(),
            entry_id: entry_id.to_string(),
            video_id: echo.video_id.clone(),
            frame_number: echo.frame_number,
            status: Status::Ok,
            error: None,
            image_size: None,
            people: Vec::new(),
            timings_ms: Timings::default(),
            worker: String::new(),
            device: String::new(),
            model: String::new(),
        }
    }

    /// An error result for `echo` with `code` and `message`.
    pub fn error(entry_id: &str, echo: &Echo, code: &str, message: String) -> Self {
        JobResult {
            status: Status::Error,
            error: Some(ErrorBody {
                code: code.to_string(),
                message,
            }),
            ..JobResult::new(entry_id, echo)
        }
    }

    /// The JSON text published in the `result` field.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("results always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn limits() -> LimitsConfig {
        Config::defaults().limits
    }

    fn code(raw: &str) -> String {
        parse(raw.as_bytes(), false, &limits())
            .unwrap_err()
            .0
            .code()
            .to_string()
    }

    #[test]
    fn a_full_job_parses() {
        let job = parse(
            br#"{"v":1,"job_id":"a","video_id":"v","frame_number":16,"image_base64":"AAAA",
                "boxes":[[1,2,30,40.5]],"reply_to":"r","include":["vertices"],"extra":true}"#,
            false,
            &limits(),
        )
        .unwrap();
        assert_eq!(job.echo.job_id.as_deref(), Some("a"));
        assert_eq!(job.echo.frame_number, Some(16));
        assert_eq!(job.boxes, vec![[1.0, 2.0, 30.0, 40.5]]);
        assert!(job.include.vertices);
        assert_eq!(job.image_base64.as_deref(), Some("AAAA"));
    }

    #[test]
    fn the_raw_image_field_wins_over_base64() {
        let job = parse(br#"{"job_id":"a","image_base64":"AAAA"}"#, true, &limits()).unwrap();
        assert_eq!(job.image_base64, None);
        assert!(parse(br#"{"job_id":"a"}"#, true, &limits()).is_ok());
    }

    #[test]
    fn each_bad_job_gets_its_code() {
        assert_eq!(code("{not json"), "invalid_json");
        assert_eq!(code("[1,2]"), "invalid_json");
        assert_eq!(
            code(r#"{"v":2,"job_id":"a","image_base64":"A"}"#),
            "unsupported_version"
        );
        assert_eq!(
            code(r#"{"v":"1","job_id":"a","image_base64":"A"}"#),
            "invalid_job"
        );
        assert_eq!(code(r#"{"image_base64":"A"}"#), "invalid_job");
        assert_eq!(code(r#"{"job_id":7,"image_base64":"A"}"#), "invalid_job");
        assert_eq!(code(r#"{"job_id":"a"}"#), "missing_image");
        assert_eq!(
            code(r#"{"job_id":"a","image_base64":"A","frame_number":-1}"#),
            "invalid_job"
        );
        assert_eq!(
            code(r#"{"job_id":"a","image_base64":"A","boxes":{}}"#),
            "invalid_box"
        );
        assert_eq!(
            code(r#"{"job_id":"a","image_base64":"A","boxes":[[1,2,3]]}"#),
            "invalid_box"
        );
        assert_eq!(
            code(r#"{"job_id":"a","image_base64":"A","boxes":[[1,2,3,"x"]]}"#),
            "invalid_box"
        );
        assert_eq!(
            code(r#"{"job_id":"a","image_base64":"A","include":["mesh"]}"#),
            "invalid_job"
        );
        let long = format!(r#"{{"job_id":"{}","image_base64":"A"}}"#, "x".repeat(300));
        assert_eq!(code(&long), "invalid_job");
        let many = format!(
            r#"{{"job_id":"a","image_base64":"A","boxes":[{}]}}"#,
            vec!["[0,0,1,1]"; 33].join(",")
        );
        assert_eq!(code(&many), "invalid_box");
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(code(&deep), "invalid_json");
    }

    #[test]
    fn rejected_jobs_still_echo_what_they_can() {
        let (e, echo) = parse(
            br#"{"job_id":"j1","video_id":"v","frame_number":3,"reply_to":"out","v":9}"#,
            false,
            &limits(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "unsupported_version");
        assert_eq!(echo.job_id.as_deref(), Some("j1"));
        assert_eq!(echo.reply_to.as_deref(), Some("out"));
        assert_eq!(echo.frame_number, Some(3));
    }

    #[test]
    fn oversized_jobs_are_refused_before_parsing() {
        let mut l = limits();
        l.max_job_bytes = 10;
        let (e, _) = parse(br#"{"job_id":"abcdef","image_base64":"A"}"#, false, &l).unwrap_err();
        assert_eq!(e.code(), "invalid_job");
    }

    #[test]
    fn error_results_serialise_per_contract() {
        let echo = Echo {
            job_id: Some("j".into()),
            ..Default::default()
        };
        let r = JobResult::error("1-0", &echo, "invalid_image", "bad".into());
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"]["code"], "invalid_image");
        assert_eq!(v["job_id"], "j");
        assert_eq!(v["entry_id"], "1-0");
        assert!(v.get("video_id").is_none());
    }
}
