//! Results (wire contract v1, DESIGN §3): the `result` field of a reply-stream entry. The worker
//! writes them; producers read them back with the same types.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::job::Echo;
use crate::VERSION;

/// One result (the `result` field of a reply-stream entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(
        title = "Result",
        extend("if" = crate::schema::status_is_error(), "then" = crate::schema::error_required(), "else" = crate::schema::error_absent())
    )
)]
pub struct JobResult {
    /// Contract version (1).
    #[cfg_attr(feature = "schema", schemars(title = "Contract version", extend("const" = 1)))]
    pub v: i64,
    /// The job's `job_id`; `null` when the job was unreadable.
    #[cfg_attr(feature = "schema", schemars(title = "Job id"))]
    pub job_id: Option<String>,
    /// The job's stream entry id: identifies the job even when its JSON was unreadable.
    #[cfg_attr(feature = "schema", schemars(title = "Job entry id"))]
    pub entry_id: String,
    /// The job's `video_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Video id"))]
    pub video_id: Option<String>,
    /// The job's `frame_number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Frame number"))]
    pub frame_number: Option<u64>,
    /// `ok` or `error`.
    #[cfg_attr(feature = "schema", schemars(title = "Status"))]
    pub status: Status,
    /// Why the job failed; only when `status` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Error"))]
    pub error: Option<ErrorBody>,
    /// `[width, height]` of the decoded image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Image size"))]
    pub image_size: Option<[u32; 2]>,
    /// The people found, by detector score (highest first) or in the job's box order.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(title = "People"))]
    pub people: Vec<Person>,
    /// How many people the person detector found in the frame (at its thresholds) before the
    /// worker's `limits.max_boxes` cap; more than `people` holds when the crowd was cut. Only
    /// when the detector ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "People detected"))]
    pub detected: Option<u32>,
    /// What an `ok` result leaves out, and why: a person whose outputs hold a non-finite
    /// number (NaN, ±∞, which JSON cannot carry) is dropped from `people` with a
    /// `non_finite_output` warning. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(title = "Warnings"))]
    pub warnings: Vec<Warning>,
    /// Where the time went.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(title = "Timings"))]
    pub timings_ms: Timings,
    /// The worker that ran the job (`host/pid`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(title = "Worker"))]
    pub worker: String,
    /// The device it ran on (`cuda:0`, `cpu`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(title = "Device"))]
    pub device: String,
    /// The model that ran (`hmr2 <name/hash>`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(title = "Model"))]
    pub model: String,
}

/// `ok` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Status")
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The job ran; `people` holds its outputs.
    Ok,
    /// The job failed; `error` says why.
    Error,
}

/// A stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Error")
)]
pub struct ErrorBody {
    /// One of the contract's closed set of codes ([`ErrorCode::Other`] for one a newer worker
    /// added).
    #[cfg_attr(
        feature = "schema",
        schemars(
            title = "Error code",
            description = "Why, one of the contract's closed set of codes."
        )
    )]
    pub code: ErrorCode,
    /// What went wrong, for people.
    #[cfg_attr(feature = "schema", schemars(title = "Message"))]
    pub message: String,
}

/// Something an `ok` result leaves out: a code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Warning")
)]
pub struct Warning {
    /// What kind of omission.
    #[cfg_attr(feature = "schema", schemars(title = "Warning code"))]
    pub code: WarningCode,
    /// What was left out and why, for people (`person 1 (box [..]) dropped: keypoints_2d
    /// holds NaN`).
    #[cfg_attr(feature = "schema", schemars(title = "Message"))]
    pub message: String,
}

/// The code of a [`Warning`]. Like [`ErrorCode`], a code a newer worker added reads as
/// [`WarningCode::Other`] and serialises back to the same string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum WarningCode {
    /// A person's outputs held NaN or ±∞; the person was dropped from `people`.
    NonFiniteOutput,
    /// A code this version of the contract does not know, as written.
    Other(String),
}

impl WarningCode {
    /// The code as it appears on the wire (`"non_finite_output"`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            WarningCode::NonFiniteOutput => "non_finite_output",
            WarningCode::Other(code) => code,
        }
    }
}

/// The codes a worker writes: a string, `non_finite_output`.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for WarningCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WarningCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "title": "Warning code",
            "description": "What an `ok` result left out: `non_finite_output`, a person whose outputs held NaN or ±∞ (which JSON cannot carry) was dropped from `people`. A reader should expect codes a newer worker may add.",
            "type": "string",
            "enum": [WarningCode::NonFiniteOutput.as_str()],
        })
    }
}

impl From<String> for WarningCode {
    fn from(code: String) -> Self {
        match code.as_str() {
            "non_finite_output" => WarningCode::NonFiniteOutput,
            _ => WarningCode::Other(code),
        }
    }
}

impl From<WarningCode> for String {
    fn from(code: WarningCode) -> Self {
        match code {
            WarningCode::Other(code) => code,
            known => known.as_str().to_string(),
        }
    }
}

/// Where the time went, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Timings")
)]
pub struct Timings {
    /// From the job's stream entry time to its fetch.
    #[cfg_attr(feature = "schema", schemars(title = "Queue wait"))]
    pub queue_wait: f64,
    /// Base64 and image decoding, and cropping.
    #[cfg_attr(feature = "schema", schemars(title = "Decode"))]
    pub decode: f64,
    /// The forward pass (the batch's, shared by its jobs).
    #[cfg_attr(feature = "schema", schemars(title = "Inference"))]
    pub inference: f64,
    /// From fetch to publish.
    #[cfg_attr(feature = "schema", schemars(title = "Total"))]
    pub total: f64,
}

/// Where a person's box came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Box source")
)]
#[serde(rename_all = "snake_case")]
pub enum BoxSource {
    /// The job's `boxes`.
    #[default]
    Job,
    /// The worker's person detector.
    Detector,
    /// The whole frame: no boxes and no detector, or `detector.on_empty = "whole_frame"`.
    Frame,
}

impl BoxSource {
    /// The wire name: `job`, `detector` or `frame`.
    pub fn as_str(self) -> &'static str {
        match self {
            BoxSource::Job => "job",
            BoxSource::Detector => "detector",
            BoxSource::Frame => "frame",
        }
    }
}

/// One person's outputs; coordinates in the full frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(
        title = "Person",
        extend("if" = crate::schema::box_source_is_not_detector(), "then" = crate::schema::score_absent())
    )
)]
pub struct Person {
    /// `[x1, y1, x2, y2]` in pixels (JSON key `box`).
    #[serde(rename = "box")]
    #[cfg_attr(
        feature = "schema",
        schemars(
            title = "Box",
            description = "`[x1, y1, x2, y2]` in pixels of the full frame."
        )
    )]
    pub bbox: [f32; 4],
    /// Where the box came from.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(title = "Box source"))]
    pub box_source: BoxSource,
    /// The detector's confidence (0–1); only when `box_source` is `detector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Detector score"))]
    pub score: Option<f32>,
    /// Centre of the square crop, pixels.
    #[cfg_attr(feature = "schema", schemars(title = "Crop centre"))]
    pub box_center: [f32; 2],
    /// Side of the square crop, pixels.
    #[cfg_attr(feature = "schema", schemars(title = "Crop size"))]
    pub box_size: f32,
    /// Weak-perspective camera `[s, tx, ty]` of the crop.
    #[cfg_attr(feature = "schema", schemars(title = "Crop camera"))]
    pub pred_cam: [f32; 3],
    /// Camera translation `[tx, ty, tz]` in the full frame.
    #[cfg_attr(feature = "schema", schemars(title = "Camera translation"))]
    pub pred_cam_t_full: [f32; 3],
    /// Focal length used for the full frame, pixels.
    #[cfg_attr(feature = "schema", schemars(title = "Focal length"))]
    pub focal_length: f32,
    /// Root rotation, 3×3.
    #[cfg_attr(feature = "schema", schemars(title = "Root rotation"))]
    pub global_orient: [[f32; 3]; 3],
    /// 23 joint rotations, 3×3 each.
    #[cfg_attr(feature = "schema", schemars(title = "Body pose"))]
    pub body_pose: Vec<[[f32; 3]; 3]>,
    /// 10 SMPL shape coefficients.
    #[cfg_attr(feature = "schema", schemars(title = "Shape"))]
    pub betas: Vec<f32>,
    /// 44 joints `[x, y, z]`, metres, camera frame.
    #[cfg_attr(feature = "schema", schemars(title = "3D keypoints"))]
    pub keypoints_3d: Vec<[f32; 3]>,
    /// 44 joints `[u, v]`, pixels of the full frame.
    #[cfg_attr(feature = "schema", schemars(title = "2D keypoints"))]
    pub keypoints_2d: Vec<[f32; 2]>,
    /// 6890 mesh vertices `[x, y, z]`; only when the job asked for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Mesh vertices"))]
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
            detected: None,
            warnings: Vec::new(),
            timings_ms: Timings::default(),
            worker: String::new(),
            device: String::new(),
            model: String::new(),
        }
    }

    /// An error result for `echo` with `code` and `message`.
    pub fn error(entry_id: &str, echo: &Echo, code: ErrorCode, message: String) -> Self {
        JobResult {
            status: Status::Error,
            error: Some(ErrorBody { code, message }),
            ..JobResult::new(entry_id, echo)
        }
    }

    /// The JSON text published in the `result` field.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("results always serialise")
    }

    /// Reads the JSON text of a `result` field.
    pub fn from_json(s: &str) -> serde_json::Result<Self> {
        serde_json::from_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn error_results_serialise_per_contract() {
        let echo = Echo {
            job_id: Some("j".into()),
            ..Default::default()
        };
        let r = JobResult::error("1-0", &echo, ErrorCode::InvalidImage, "bad".into());
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"]["code"], "invalid_image");
        assert_eq!(v["job_id"], "j");
        assert_eq!(v["entry_id"], "1-0");
        assert!(v.get("video_id").is_none());
        assert_eq!(JobResult::from_json(&r.to_json()).unwrap(), r);
    }

    #[test]
    fn ok_results_round_trip() {
        let echo = Echo {
            job_id: Some("v:3".into()),
            video_id: Some("v".into()),
            frame_number: Some(3),
            reply_to: None,
            video: None,
        };
        let mut r = JobResult::new("5-1", &echo);
        r.image_size = Some([640, 480]);
        r.people.push(Person {
            bbox: [1.0, 2.0, 3.0, 4.0],
            box_source: BoxSource::Detector,
            score: Some(0.9),
            box_center: [2.0, 3.0],
            box_size: 2.5,
            pred_cam: [0.9, 0.1, -0.1],
            pred_cam_t_full: [0.0, 0.1, 20.0],
            focal_length: 5000.0,
            global_orient: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            body_pose: vec![[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]; 23],
            betas: vec![0.5; 10],
            keypoints_3d: vec![[0.1, 0.2, 0.3]; 44],
            keypoints_2d: vec![[10.0, 20.0]; 44],
            vertices: None,
        });
        r.timings_ms.total = 12.5;
        r.worker = "h/1".into();
        let json = r.to_json();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["people"][0]["box"][3], 4.0);
        assert!(v["people"][0].get("vertices").is_none());
        assert!(v.get("error").is_none());
        assert_eq!(v["status"], "ok");
        assert_eq!(JobResult::from_json(&json).unwrap(), r);
    }

    #[test]
    fn unknown_codes_are_kept_and_unknown_statuses_refused() {
        let newer = r#"{"v":1,"job_id":null,"entry_id":"1-0","status":"error","error":{"code":"nope","message":"m"}}"#;
        let r = JobResult::from_json(newer).unwrap();
        let error = r.error.clone().unwrap();
        assert_eq!(error.code, ErrorCode::Other("nope".into()));
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "nope");
        assert_eq!(JobResult::from_json(&r.to_json()).unwrap(), r);
        let status = r#"{"v":1,"job_id":null,"entry_id":"1-0","status":"maybe"}"#;
        assert!(JobResult::from_json(status).is_err());
        let minimal = r#"{"v":1,"job_id":null,"entry_id":"1-0","status":"ok"}"#;
        let minimal = JobResult::from_json(minimal).unwrap();
        assert_eq!(minimal.people, vec![]);
        assert_eq!(minimal.warnings, vec![]);
    }

    #[test]
    fn warnings_round_trip_and_are_absent_when_empty() {
        let mut r = JobResult::new("1-0", &Echo::default());
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(v.get("warnings").is_none(), "{v}");
        r.warnings.push(Warning {
            code: WarningCode::NonFiniteOutput,
            message: "person 0 (box [0, 0, 1, 1]) dropped: betas holds NaN".into(),
        });
        r.warnings.push(Warning {
            code: WarningCode::Other("later".into()),
            message: String::new(),
        });
        let json = r.to_json();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["warnings"][0]["code"], "non_finite_output");
        assert_eq!(v["warnings"][1]["code"], "later");
        assert_eq!(JobResult::from_json(&json).unwrap(), r);
    }
}
