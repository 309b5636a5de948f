//! Offline tracking and smoothing of the people of one video (DESIGN §13, contract `video/1`).
//!
//! The worker records each answered frame of a tracked video as a compact [`FrameRecord`]
//! (what tracking and smoothing need, not the JSON result); when the video is complete (or has
//! expired) it reads them all back and calls [`track`], which, over the whole video at once:
//! associates people across frames, bridges gaps of up to `max_gap_s`, numbers tracks 1, 2, ...
//! in order of first appearance, smooths each track with a zero-phase smoother (rotations on
//! quaternions), holds `betas` constant per track, replaces outlier frames and fills short gaps
//! by interpolation. Deterministic: the same records give the same output, bit for bit.
//!
//! No Redis and no torch here: the crate is pure computation, tested on its own.

pub mod record;

pub use record::{BoxSource, FrameRecord, FrameStatus, Observation, RecordError};

/// How strongly tracks are smoothed (`track.smoothing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Smoothing {
    /// Raw per-frame values (still tracked, gaps still filled).
    None,
    /// The default strength.
    #[default]
    Default,
    /// Stronger smoothing, for slow motion or noisy input.
    Strong,
}

/// What the tracker is told (the `[track]` settings and the video's fps).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Frames per second of the video (> 0).
    pub fps: f64,
    /// Longest gap (person hidden or missed) bridged within one track, seconds.
    pub max_gap_s: f64,
    /// Smoothing strength.
    pub smoothing: Smoothing,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            fps: 30.0,
            max_gap_s: 1.0,
            smoothing: Smoothing::Default,
        }
    }
}

/// One person of one output frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedPerson {
    /// 1, 2, ... in order of first appearance.
    pub track_id: u32,
    /// The smoothed (or interpolated) values; `score` only where the frame had a detection.
    pub obs: Observation,
    /// Filled by interpolation (a gap, or an outlier replaced), not observed as such.
    pub interpolated: bool,
}

/// One track's summary, for the video's `done` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSummary {
    pub track_id: u32,
    pub first_frame: u64,
    pub last_frame: u64,
    /// Frames in which the track has a person (observed or interpolated).
    pub frames: u64,
    /// Of those, the interpolated ones.
    pub interpolated_frames: u64,
}

/// The tracked video: per input frame, its people (empty for error and missing frames), and
/// the tracks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tracked {
    pub frames: Vec<Vec<TrackedPerson>>,
    pub tracks: Vec<TrackSummary>,
}

/// Tracks and smooths one video. `frames[n]` is frame n's record, `None` when it never came.
pub fn track(frames: &[Option<FrameRecord>], settings: &Settings) -> Tracked {
    let _ = (frames, settings);
    todo!("tracker")
}
