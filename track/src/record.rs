//! The compact record of one answered frame, as the worker stores it in Redis (one hash field
//! per frame) for the tracker: fixed-size little-endian f32 per person, rotations as unit
//! quaternions, no 2D keypoints (they are the projection of `keypoints_3d + cam_t`, recomputed
//! after smoothing).

/// Number of body-pose joints (SMPL joints 1..23).
pub const BODY_JOINTS: usize = 23;
/// Number of keypoints.
pub const KEYPOINTS: usize = 44;
/// Number of shape coefficients.
pub const BETAS: usize = 10;

/// Where a person's box came from (mirrors the result's `box_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxSource {
    Job,
    Detector,
    Frame,
}

/// One person of one frame as the model saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// `[x1, y1, x2, y2]`, pixels.
    pub bbox: [f32; 4],
    /// Detector confidence, when the box came from the detector.
    pub score: Option<f32>,
    pub box_source: BoxSource,
    /// Root rotation as a unit quaternion `[w, x, y, z]`.
    pub global_orient: [f32; 4],
    /// Joint rotations as unit quaternions `[w, x, y, z]`.
    pub body_pose: [[f32; 4]; BODY_JOINTS],
    pub betas: [f32; BETAS],
    /// `pred_cam_t_full`, metres.
    pub cam_t: [f32; 3],
    pub focal_length: f32,
    /// Body-frame keypoints, metres (as the result's `keypoints_3d`).
    pub keypoints_3d: [[f32; 3]; KEYPOINTS],
}

/// How a frame was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameStatus {
    Ok,
    /// An error result: its code and message.
    Error { code: String, message: String },
}

/// One answered frame of a tracked video.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRecord {
    pub status: FrameStatus,
    /// `[width, height]` (0 × 0 for an error frame without a decoded image).
    pub image_size: [u32; 2],
    /// The job asked for vertices.
    pub vertices: bool,
    pub people: Vec<Observation>,
}

/// A record that cannot be read back.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("frame record: {0}")]
pub struct RecordError(pub String);
