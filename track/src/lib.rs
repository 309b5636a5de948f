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
//! No Redis and no torch here: the crate is pure computation, tested on its own. It runs on
//! one core (no threads) in memory proportional to the video.
//!
//! # Layout
//! - [`record`]: the per-frame record (binary encoding, about 1 KB per person) and the rotation
//!   conversions the worker uses to fill it.
//! - `assoc`: the online pass, frame by frame: constant-velocity prediction from recent
//!   observations, Hungarian assignment in two stages by detector score → tracklets.
//! - `stitch`: the offline pass joining tracklets across gaps of up to `max_gap_s`.
//! - `smooth`: per track: constant shape, outliers, gap filling, zero-phase smoothing.
//! - `assign`, `geom`: gated minimum-cost assignment; boxes, distances, straight-line motion.
//! - [`synth`], [`eval`]: synthetic scenes with ground truth, and the MOT and smoothing figures
//!   measured on them (tests, the bench, `examples/eval.rs`, docs/tracking.md).

#![warn(missing_docs)]

mod assign;
mod assoc;
pub mod eval;
mod geom;
pub mod record;
mod reliability;
mod smooth;
mod stitch;
pub mod synth;

pub use assoc::HIGH_SCORE;
pub use record::{
    matrix_from_quat, quat_from_matrix, BoxSource, FrameRecord, FrameStatus, Observation,
    RecordError,
};

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
    /// The track's id, as in its people.
    pub track_id: u32,
    /// First frame with a person of this track (observed).
    pub first_frame: u64,
    /// Last frame with a person of this track (observed).
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
    /// One entry per input frame: its people, sorted by `track_id`.
    pub frames: Vec<Vec<TrackedPerson>>,
    /// One summary per track, by `track_id`.
    pub tracks: Vec<TrackSummary>,
}

/// Tracks and smooths one video. `frames[n]` is frame n's record, `None` when it never came.
pub fn track(frames: &[Option<FrameRecord>], settings: &Settings) -> Tracked {
    track_with_sigma(frames, settings, settings.smoothing.sigma_s())
}

/// [`track`] with an explicit smoothing strength: the Gaussian σ in seconds (0 = no smoothing,
/// as [`Smoothing::None`]) instead of `settings.smoothing`'s. For measurements such as the σ
/// sweep of docs/tracking.md.
pub fn track_with_sigma(
    frames: &[Option<FrameRecord>],
    settings: &Settings,
    sigma_s: f64,
) -> Tracked {
    let mut p = Params::new(settings);
    p.smooth_sigma_s = if sigma_s.is_finite() && sigma_s > 0.0 {
        sigma_s
    } else {
        0.0
    };
    let frame_ok: Vec<bool> = frames
        .iter()
        .map(|f| matches!(f, Some(r) if r.status == FrameStatus::Ok))
        .collect();
    // Usable detections: people of Ok frames whose numbers are all finite and sane.
    let dets: Vec<Vec<assoc::Detection<'_>>> = frames
        .iter()
        .zip(&frame_ok)
        .map(|(f, &ok)| match f {
            Some(r) if ok => r
                .people
                .iter()
                .enumerate()
                .filter(|(_, o)| usable(o))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let person = People(frames);
    reliability::adapt(&mut p, &dets);
    let tracklets = assoc::associate(&dets, &p);
    let mut tracks = stitch::stitch(tracklets, &person, &p);
    // Keep tracks seen often enough, with at least one confident detection.
    let ok_frames = frame_ok.iter().filter(|&&ok| ok).count();
    let min_frames = p.min_track_frames.min(ok_frames).max(1);
    tracks.retain(|t| {
        t.len() >= min_frames
            && t.iter()
                .any(|&fi| person.get(fi).score.is_none_or(|s| s >= assoc::HIGH_SCORE))
    });
    // Numbered in order of first appearance; ties by the left edge of the first box.
    tracks.sort_by(|a, b| {
        let (fa, fb) = (a[0], b[0]);
        fa.0.cmp(&fb.0)
            .then(person.get(fa).bbox[0].total_cmp(&person.get(fb).bbox[0]))
            .then(fa.1.cmp(&fb.1))
    });
    let mut out = Tracked {
        frames: vec![Vec::new(); frames.len()],
        tracks: Vec::with_capacity(tracks.len()),
    };
    let mut track_id = 0u32;
    for t in &tracks {
        let people = smooth::smooth_track(t, &person, &frame_ok, &p);
        let (Some(first), Some(last)) = (people.first(), people.last()) else {
            continue;
        };
        track_id = track_id.saturating_add(1);
        out.tracks.push(TrackSummary {
            track_id,
            first_frame: first.0 as u64,
            last_frame: last.0 as u64,
            frames: people.len() as u64,
            interpolated_frames: people.iter().filter(|p| p.2).count() as u64,
        });
        for (f, obs, interpolated) in people {
            out.frames[f].push(TrackedPerson {
                track_id,
                obs,
                interpolated,
            });
        }
    }
    out
}

/// The observed people of a video, by `(frame, index)`.
pub(crate) struct People<'a>(&'a [Option<FrameRecord>]);

impl<'a> People<'a> {
    /// The person; tracklets only hold people of recorded frames.
    pub(crate) fn get(&self, (f, i): (usize, usize)) -> &'a Observation {
        &self.0[f]
            .as_ref()
            .expect("tracklets hold recorded frames only")
            .people[i]
    }
}

/// Largest magnitude of any number of a usable observation: far beyond any real pixel, metre or
/// coefficient, and far enough below f32's range that no interpolation or filter overflows.
const MAX_MAGNITUDE: f32 = 1e6;

/// An observation the tracker can use: every number finite and below [`MAX_MAGNITUDE`],
/// rotations not degenerate.
fn usable(o: &Observation) -> bool {
    let sane = |v: &[f32]| v.iter().all(|x| x.abs() < MAX_MAGNITUDE);
    let quat_ok = |q: &[f32; 4]| sane(q) && q.iter().map(|x| x * x).sum::<f32>() > 1e-6;
    sane(&o.bbox)
        && sane(&o.cam_t)
        && sane(&o.betas)
        && sane(&[o.focal_length])
        && quat_ok(&o.global_orient)
        && o.body_pose.iter().all(quat_ok)
        && o.keypoints_3d.iter().all(|k| sane(k))
}

impl Smoothing {
    /// The Gaussian kernel's standard deviation, seconds (0: no smoothing).
    pub fn sigma_s(self) -> f64 {
        match self {
            Smoothing::None => 0.0,
            Smoothing::Default => DEFAULT_SIGMA_S,
            Smoothing::Strong => STRONG_SIGMA_S,
        }
    }
}

/// Gaussian σ of `Smoothing::Default`, seconds (see docs/tracking.md for the measurements).
pub const DEFAULT_SIGMA_S: f64 = 0.05;
/// Gaussian σ of `Smoothing::Strong`, seconds.
pub const STRONG_SIGMA_S: f64 = 0.1;

/// The tracker's working parameters, derived from [`Settings`].
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// Frames per second (settings' fps, 30 when not a positive finite number).
    pub(crate) fps: f64,
    /// Longest gap bridged, seconds (0 to 10⁶).
    pub(crate) max_gap_s: f64,
    /// Longest gap bridged, frames missing in between.
    pub(crate) max_gap: usize,
    /// Frames a live tracklet may go unseen in the online pass.
    pub(crate) max_age: usize,
    /// Online gates: predicted-box IoU (first and second stage), distance across the viewing
    /// ray within `gate_m + gate_m_per_s · dt`, depth ratio within `gate_depth +
    /// gate_depth_per_s · dt` (as `|ln(z1/z2)|`; also for stitching).
    pub(crate) min_iou: f64,
    pub(crate) min_iou_low: f64,
    pub(crate) gate_m: f64,
    pub(crate) gate_m_per_s: f64,
    pub(crate) gate_depth: f64,
    pub(crate) gate_depth_per_s: f64,
    /// Largest RMS difference per shape coefficient of one person.
    pub(crate) gate_betas: f64,
    /// Pose term of the online cost: weight, and the mean keypoint distance that costs it once.
    pub(crate) pose_weight: f64,
    pub(crate) pose_scale_m: f64,
    /// Stitching: observations fitted at each end, and the gates.
    pub(crate) stitch_fit_obs: usize,
    pub(crate) stitch_gate_m: f64,
    pub(crate) stitch_gate_m_per_s: f64,
    pub(crate) stitch_gate_heights: f64,
    pub(crate) stitch_gate_heights_per_s: f64,
    /// Shortest track kept, observed frames.
    pub(crate) min_track_frames: usize,
    /// Smoothing σ, seconds (0: none), and the kernel's largest radius, frames.
    pub(crate) smooth_sigma_s: f64,
    pub(crate) max_radius: usize,
    /// Outliers: σ of the leave-one-out fit (samples; radius twice), robust k, floors.
    pub(crate) outlier_sigma: usize,
    pub(crate) outlier_k: f64,
    pub(crate) outlier_floor_m: f64,
    pub(crate) outlier_floor_kp_m: f64,
}

impl Params {
    pub(crate) fn new(s: &Settings) -> Params {
        let fps = if s.fps.is_finite() && s.fps > 0.0 {
            s.fps
        } else {
            30.0
        };
        // NaN or ≤ 0: no bridging; infinite: any gap (capped at a million seconds).
        let max_gap_s = if s.max_gap_s > 0.0 {
            s.max_gap_s.min(1e6)
        } else {
            0.0
        };
        let frames = |sec: f64| (sec * fps + 1e-9).floor().clamp(0.0, 1e9) as usize;
        let max_gap = frames(max_gap_s);
        Params {
            fps,
            max_gap_s,
            max_gap,
            max_age: frames(0.2).max(1).min(max_gap),
            min_iou: 0.1,
            min_iou_low: 0.3,
            gate_m: 0.3,
            gate_m_per_s: 1.5,
            gate_depth: 0.7,
            gate_depth_per_s: 0.5,
            gate_betas: 0.8,
            pose_weight: 0.3,
            pose_scale_m: 0.3,
            stitch_fit_obs: frames(0.3).clamp(2, 10),
            stitch_gate_m: 0.4,
            stitch_gate_m_per_s: 0.8,
            stitch_gate_heights: 0.5,
            stitch_gate_heights_per_s: 1.5,
            min_track_frames: 3,
            smooth_sigma_s: s.smoothing.sigma_s(),
            max_radius: 500,
            outlier_sigma: frames(0.1).clamp(2, 5),
            outlier_k: 6.0,
            outlier_floor_m: 0.15,
            outlier_floor_kp_m: 0.05,
        }
    }
}
