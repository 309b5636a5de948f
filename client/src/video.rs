//! A tracked video's output (contract `video/1`, DESIGN §13): what the video's output stream
//! holds once all its frames are answered and it has been tracked and smoothed.
//!
//! The output is written as one atomic whole: one entry per frame, in frame order, with a
//! `frame` field ([`VideoFrame`]), then one entry with a `done` field ([`VideoDone`]). A video
//! whose frames stop coming ends with a `done` whose status is `expired`, after the frames it
//! got. The per-frame results of §3 still go to each job's reply stream as the frames run.

use serde::{Deserialize, Serialize};

use crate::result::{BoxSource, ErrorBody, Status};

/// One frame of a tracked video (the `frame` field of an output-stream entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(
        title = "Video frame",
        extend("if" = crate::schema::status_is_error(), "then" = crate::schema::error_frame(), "else" = crate::schema::error_absent())
    )
)]
pub struct VideoFrame {
    /// Contract version (1).
    #[cfg_attr(feature = "schema", schemars(title = "Contract version", extend("const" = 1)))]
    pub v: u32,
    /// The video.
    #[cfg_attr(feature = "schema", schemars(title = "Video id"))]
    pub video_id: String,
    /// The frame's number, from 0.
    #[cfg_attr(feature = "schema", schemars(title = "Frame number"))]
    pub frame_number: u64,
    /// `ok`, or `error` for a frame whose job failed (then `error` says why, and `people` is
    /// empty).
    #[cfg_attr(feature = "schema", schemars(title = "Status"))]
    pub status: Status,
    /// Why the frame's job failed; only when `status` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Error"))]
    pub error: Option<ErrorBody>,
    /// The people of the frame, each with the id of its track.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(title = "People"))]
    pub people: Vec<TrackedPerson>,
}

/// One person in one frame of a tracked video: the outputs of §3, smoothed along the person's
/// track, with the track's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(
        title = "Tracked person",
        extend("if" = crate::schema::box_source_is_not_detector(), "then" = crate::schema::score_absent())
    )
)]
pub struct TrackedPerson {
    /// The person's track: 1, 2, ... in order of first appearance in the video.
    #[cfg_attr(feature = "schema", schemars(title = "Track id", range(min = 1)))]
    pub track_id: u32,
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
    /// The detector's confidence (0–1); only when `box_source` is `detector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Detector score"))]
    pub score: Option<f32>,
    /// Where the box came from.
    #[cfg_attr(feature = "schema", schemars(title = "Box source"))]
    pub box_source: BoxSource,
    /// Root rotation, 3×3.
    #[cfg_attr(feature = "schema", schemars(title = "Root rotation"))]
    pub global_orient: [[f32; 3]; 3],
    /// 23 joint rotations, 3×3 each.
    #[cfg_attr(feature = "schema", schemars(title = "Body pose"))]
    pub body_pose: Vec<[[f32; 3]; 3]>,
    /// 10 SMPL shape coefficients, constant along the track.
    #[cfg_attr(feature = "schema", schemars(title = "Shape"))]
    pub betas: Vec<f32>,
    /// Camera translation `[tx, ty, tz]` in the full frame.
    #[cfg_attr(feature = "schema", schemars(title = "Camera translation"))]
    pub pred_cam_t_full: [f32; 3],
    /// Focal length used for the full frame, pixels.
    #[cfg_attr(feature = "schema", schemars(title = "Focal length"))]
    pub focal_length: f32,
    /// 44 joints `[u, v]`, pixels of the full frame.
    #[cfg_attr(feature = "schema", schemars(title = "2D keypoints"))]
    pub keypoints_2d: Vec<[f32; 2]>,
    /// 44 joints `[x, y, z]`, metres, camera frame.
    #[cfg_attr(feature = "schema", schemars(title = "3D keypoints"))]
    pub keypoints_3d: Vec<[f32; 3]>,
    /// Whether this person was filled in (a gap in the track) or replaced (an outlier) by
    /// interpolation rather than smoothed from the frame's own outputs.
    #[cfg_attr(feature = "schema", schemars(title = "Interpolated"))]
    pub interpolated: bool,
    /// 6890 mesh vertices `[x, y, z]`, from the smoothed parameters; only when the frames
    /// asked for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Mesh vertices"))]
    pub vertices: Option<Vec<[f32; 3]>>,
}

/// How a video ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Video status")
)]
#[serde(rename_all = "lowercase")]
pub enum VideoStatus {
    /// Every frame was answered; the video was tracked whole.
    Ok,
    /// Frames stopped coming (`video.ttl_s`); the output holds the frames it got.
    Expired,
}

/// The last entry of a video's output (the `done` field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Video done")
)]
pub struct VideoDone {
    /// Contract version (1).
    #[cfg_attr(feature = "schema", schemars(title = "Contract version", extend("const" = 1)))]
    pub v: u32,
    /// The video.
    #[cfg_attr(feature = "schema", schemars(title = "Video id"))]
    pub video_id: String,
    /// `ok`, or `expired`.
    #[cfg_attr(feature = "schema", schemars(title = "Status"))]
    pub status: VideoStatus,
    /// The video's length, as its frames said.
    #[cfg_attr(feature = "schema", schemars(title = "Frames", range(min = 1)))]
    pub frames: u64,
    /// Frames answered `ok`.
    #[cfg_attr(feature = "schema", schemars(title = "Frames answered ok"))]
    pub ok_frames: u64,
    /// Frames answered with an error.
    #[cfg_attr(feature = "schema", schemars(title = "Frames answered with an error"))]
    pub error_frames: u64,
    /// Frames never answered (only an expired video has any).
    #[cfg_attr(feature = "schema", schemars(title = "Frames never answered"))]
    pub missing_frames: u64,
    /// Frames per second, as the frames said.
    #[cfg_attr(feature = "schema", schemars(title = "Frame rate"))]
    pub fps: f64,
    /// Every track of the video, by `track_id`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(title = "Tracks"))]
    pub tracks: Vec<TrackInfo>,
    /// Where the time went.
    #[cfg_attr(feature = "schema", schemars(title = "Timings"))]
    pub timings_ms: VideoTimings,
}

/// One track of a video: where it runs and how much of it was filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Track")
)]
pub struct TrackInfo {
    /// The track's id.
    #[cfg_attr(feature = "schema", schemars(title = "Track id", range(min = 1)))]
    pub track_id: u32,
    /// The first frame it is in.
    #[cfg_attr(feature = "schema", schemars(title = "First frame"))]
    pub first_frame: u64,
    /// The last frame it is in.
    #[cfg_attr(feature = "schema", schemars(title = "Last frame"))]
    pub last_frame: u64,
    /// How many frames it is in.
    #[cfg_attr(feature = "schema", schemars(title = "Frames"))]
    pub frames: u64,
    /// How many of those were interpolated.
    #[cfg_attr(feature = "schema", schemars(title = "Interpolated frames"))]
    pub interpolated_frames: u64,
}

/// Where a video's time went, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Video timings")
)]
pub struct VideoTimings {
    /// Tracking and smoothing.
    #[cfg_attr(feature = "schema", schemars(title = "Tracking"))]
    pub tracking: f64,
    /// From the first frame recorded to the output written.
    #[cfg_attr(feature = "schema", schemars(title = "Total"))]
    pub total: f64,
}

impl VideoFrame {
    /// The JSON text published in the `frame` field.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("video frames always serialise")
    }

    /// Reads the JSON text of a `frame` field.
    pub fn from_json(s: &str) -> serde_json::Result<Self> {
        serde_json::from_str(s)
    }
}

impl VideoDone {
    /// The JSON text published in the `done` field.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("video ends always serialise")
    }

    /// Reads the JSON text of a `done` field.
    pub fn from_json(s: &str) -> serde_json::Result<Self> {
        serde_json::from_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::Value;

    const EYE: [[f32; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

    /// A frame of `clip-7` as DESIGN §13 shapes it (short lists: the shape, not the sizes).
    const FRAME: &str = r#"{"v":1,"video_id":"clip-7","frame_number":16,"status":"ok",
        "people":[{"track_id":2,"box":[10.0,20.0,110.0,320.0],"score":0.93,
                   "box_source":"detector",
                   "global_orient":[[1.0,0.0,0.0],[0.0,1.0,0.0],[0.0,0.0,1.0]],
                   "body_pose":[[[1.0,0.0,0.0],[0.0,1.0,0.0],[0.0,0.0,1.0]]],
                   "betas":[0.5,-0.25],
                   "pred_cam_t_full":[0.1,0.2,21.5],"focal_length":5000.0,
                   "keypoints_2d":[[64.0,48.5]],"keypoints_3d":[[0.1,-0.2,0.3]],
                   "interpolated":true}]}"#;

    const ERROR_FRAME: &str = r#"{"v":1,"video_id":"clip-7","frame_number":3,"status":"error",
        "error":{"code":"invalid_image","message":"image cannot be decoded: empty"},"people":[]}"#;

    const DONE: &str = r#"{"v":1,"video_id":"clip-7","status":"ok","frames":120,"ok_frames":119,
        "error_frames":1,"missing_frames":0,"fps":29.97,
        "tracks":[{"track_id":1,"first_frame":0,"last_frame":119,"frames":120,
                   "interpolated_frames":4},
                  {"track_id":2,"first_frame":10,"last_frame":60,"frames":51,
                   "interpolated_frames":0}],
        "timings_ms":{"tracking":85.5,"total":40210.0}}"#;

    #[test]
    fn a_tracked_frame_reads_and_writes_the_contract_shape() {
        let f = VideoFrame::from_json(FRAME).unwrap();
        assert_eq!(f.video_id, "clip-7");
        assert_eq!(f.frame_number, 16);
        assert_eq!(f.status, Status::Ok);
        assert_eq!(f.error, None);
        let p = &f.people[0];
        assert_eq!(p.track_id, 2);
        assert_eq!(p.bbox, [10.0, 20.0, 110.0, 320.0]);
        assert_eq!(p.score, Some(0.93));
        assert_eq!(p.box_source, BoxSource::Detector);
        assert_eq!(p.global_orient, EYE);
        assert_eq!(p.body_pose, vec![EYE]);
        assert_eq!(p.pred_cam_t_full, [0.1, 0.2, 21.5]);
        assert!(p.interpolated);
        assert_eq!(p.vertices, None);
        // Written back: the same keys, `box` not `bbox`, nothing absent written as null.
        let json = f.to_json();
        let v: Value = serde_json::from_str(&json).unwrap();
        let expected: Value = serde_json::from_str(FRAME).unwrap();
        assert_eq!(v, expected);
        assert!(!json.contains("null"), "{json}");
        assert_eq!(VideoFrame::from_json(&json).unwrap(), f);
    }

    #[test]
    fn optional_person_fields_are_left_out_or_written_when_set() {
        let mut f = VideoFrame::from_json(FRAME).unwrap();
        let p = &mut f.people[0];
        p.score = None;
        p.box_source = BoxSource::Job;
        p.vertices = Some(vec![[0.5, 0.25, 1.0]; 3]);
        let v: Value = serde_json::from_str(&f.to_json()).unwrap();
        let person = &v["people"][0];
        assert!(person.get("score").is_none(), "{person}");
        assert_eq!(person["box_source"], "job");
        assert_eq!(person["vertices"][2], serde_json::json!([0.5, 0.25, 1.0]));
        assert_eq!(VideoFrame::from_json(&f.to_json()).unwrap(), f);
    }

    #[test]
    fn an_error_frame_carries_its_error_and_no_people() {
        let f = VideoFrame::from_json(ERROR_FRAME).unwrap();
        assert_eq!(f.status, Status::Error);
        assert_eq!(f.error.as_ref().unwrap().code, ErrorCode::InvalidImage);
        assert!(f.people.is_empty());
        let v: Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(ERROR_FRAME).unwrap());
        // `people` may be left out of an error frame.
        let bare = r#"{"v":1,"video_id":"c","frame_number":0,"status":"error",
            "error":{"code":"too_many_deliveries","message":"m"}}"#;
        assert!(VideoFrame::from_json(bare).unwrap().people.is_empty());
    }

    #[test]
    fn the_done_entry_reads_and_writes_the_contract_shape() {
        let d = VideoDone::from_json(DONE).unwrap();
        assert_eq!(d.status, VideoStatus::Ok);
        assert_eq!(
            (d.frames, d.ok_frames, d.error_frames, d.missing_frames),
            (120, 119, 1, 0)
        );
        assert_eq!(d.fps, 29.97);
        assert_eq!(
            d.tracks[0],
            TrackInfo {
                track_id: 1,
                first_frame: 0,
                last_frame: 119,
                frames: 120,
                interpolated_frames: 4,
            }
        );
        assert_eq!(d.tracks[1].first_frame, 10);
        assert_eq!(d.timings_ms.tracking, 85.5);
        let v: Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(DONE).unwrap());
        assert_eq!(VideoDone::from_json(&d.to_json()).unwrap(), d);
    }

    #[test]
    fn an_expired_video_says_so_and_other_statuses_are_refused() {
        let expired = r#"{"v":1,"video_id":"c","status":"expired","frames":10,"ok_frames":4,
            "error_frames":0,"missing_frames":6,"fps":25,"tracks":[],
            "timings_ms":{"tracking":1.0,"total":3600000.0}}"#;
        let d = VideoDone::from_json(expired).unwrap();
        assert_eq!(d.status, VideoStatus::Expired);
        assert_eq!(d.missing_frames, 6);
        assert_eq!(d.fps, 25.0);
        let v: Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(v["status"], "expired");
        for bad in ["\"Expired\"", "\"EXPIRED\"", "\"error\"", "null"] {
            let text = expired.replace("\"expired\"", bad);
            assert!(VideoDone::from_json(&text).is_err(), "{bad}");
        }
        // A frame's status is `ok` or `error`, nothing else.
        assert!(VideoFrame::from_json(&FRAME.replace("\"ok\"", "\"expired\"")).is_err());
    }
}
