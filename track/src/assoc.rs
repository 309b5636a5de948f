//! Frame-by-frame association of detections into tracklets (online pass, forward in time).
//!
//! Each live tracklet predicts its box and camera position at the new frame by constant
//! velocity fitted to its last few *observations* (OC-SORT's observation-centric momentum: no
//! Kalman state drifting through missed frames). Detections are assigned by the Hungarian method
//! on a cost mixing predicted-box overlap, 3D distance, body-shape and pose distance. A pair must
//! pass all three gates (overlap, distance, shape). Two stages as in ByteTrack: confident
//! detections (score ≥ [`HIGH_SCORE`] or no score) first, then the low-score ones against the
//! tracklets still unmatched, with a stricter overlap gate. A tracklet not seen for more than
//! [`Params::max_age`] frames ends; the offline stitching joins tracklets over longer gaps.

use crate::assign::assign;
use crate::geom::{betas_distance, iou, Motion, State};
use crate::record::{Observation, BETAS};
use crate::Params;

/// Detector scores at or above this are confident (ByteTrack's first stage).
pub const HIGH_SCORE: f32 = 0.5;
/// Observations used for the constant-velocity prediction (3 intervals, as OC-SORT's Δt = 3).
const MOTION_WINDOW: usize = 4;
/// Observations whose mean depth is the predicted depth.
const DEPTH_WINDOW: usize = 10;

/// One person's detections in consecutive frames: `(frame, index in the frame's people)`.
pub(crate) type Tracklet = Vec<(usize, usize)>;

/// One detection of a frame: its index in the frame's people and the observation.
pub(crate) type Detection<'a> = (usize, &'a Observation);

struct Live<'a> {
    obs: Tracklet,
    /// The last observation (its pose).
    last: &'a Observation,
    states: Vec<(f64, State)>,
    betas_sum: [f64; BETAS],
    motion: Motion,
}

impl<'a> Live<'a> {
    fn new(frame: usize, det: Detection<'a>, fps: f64) -> Live<'a> {
        let state = State::of(det.1);
        let mut live = Live {
            obs: vec![(frame, det.0)],
            last: det.1,
            states: vec![(frame as f64, state)],
            betas_sum: det.1.betas.map(f64::from),
            motion: Motion::fit(&[(frame as f64, state)], frame as f64, fps),
        };
        live.refit(fps);
        live
    }

    fn push(&mut self, frame: usize, det: Detection<'a>, fps: f64) {
        self.obs.push((frame, det.0));
        self.last = det.1;
        self.states.push((frame as f64, State::of(det.1)));
        for (s, b) in self.betas_sum.iter_mut().zip(det.1.betas) {
            *s += f64::from(b);
        }
        self.refit(fps);
    }

    fn refit(&mut self, fps: f64) {
        let n = self.states.len();
        let last = self.states[n - 1].0;
        self.motion = Motion::fit(&self.states[n.saturating_sub(MOTION_WINDOW)..], last, fps);
        // The depth from more observations than the motion: it is the noisiest number.
        let recent = &self.states[n.saturating_sub(DEPTH_WINDOW)..];
        self.motion.at.log_z = recent.iter().map(|s| s.1.log_z).sum::<f64>() / recent.len() as f64;
    }

    fn last_frame(&self) -> usize {
        self.obs[self.obs.len() - 1].0
    }

    fn betas(&self) -> [f64; BETAS] {
        let n = self.obs.len() as f64;
        self.betas_sum.map(|s| s / n)
    }
}

/// The cost of giving detection `det` to tracklet `live` at `frame`, `None` when a gate fails.
fn cost(live: &Live<'_>, frame: usize, det: &Observation, p: &Params, min_iou: f64) -> Option<f64> {
    let pred = live.motion.predict(frame as f64);
    let seen = State::of(det);
    let dt_s = (frame - live.last_frame()) as f64 / p.fps;
    let overlap = iou(&pred.corners(), &seen.corners());
    let lateral = pred.lateral_m(&seen);
    let depth = pred.depth_ratio(&seen);
    let db = betas_distance(&live.betas(), &det.betas.map(f64::from));
    let near = p.gate_m + p.gate_m_per_s * dt_s;
    let deep = p.gate_depth + p.gate_depth_per_s * dt_s;
    if overlap < min_iou || lateral > near || depth > deep || db > p.gate_betas {
        return None;
    }
    let dp = pose_distance(live.last, det);
    Some(
        (1.0 - overlap)
            + lateral / near
            + 0.5 * depth / deep
            + 0.5 * db / p.gate_betas
            + p.pose_weight * (dp / p.pose_scale_m).min(2.0),
    )
}

/// Mean distance between the body-frame keypoints of two observations, metres: how different
/// their poses (and facing) are.
fn pose_distance(a: &Observation, b: &Observation) -> f64 {
    let s: f64 = a
        .keypoints_3d
        .iter()
        .zip(&b.keypoints_3d)
        .map(|(x, y)| {
            (0..3)
                .map(|k| (f64::from(x[k]) - f64::from(y[k])).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum();
    s / a.keypoints_3d.len() as f64
}

/// Associates the detections of every frame (`dets[f]`: frame f's usable detections) into
/// tracklets, in order of their first frame.
pub(crate) fn associate<'a>(dets: &[Vec<Detection<'a>>], p: &Params) -> Vec<Tracklet> {
    let mut live: Vec<Live<'a>> = Vec::new();
    let mut done: Vec<Live<'a>> = Vec::new();
    for (frame, frame_dets) in dets.iter().enumerate() {
        // End the tracklets not seen for too long.
        let mut i = 0;
        while i < live.len() {
            if frame - live[i].last_frame() > p.max_age.saturating_add(1) {
                done.push(live.remove(i));
            } else {
                i += 1;
            }
        }
        if frame_dets.is_empty() {
            continue;
        }
        let (high, low): (Vec<Detection<'_>>, Vec<Detection<'_>>) = frame_dets
            .iter()
            .partition(|d| d.1.score.is_none_or(|s| s >= HIGH_SCORE));
        let mut matched_live = vec![false; live.len()];
        let mut new_dets: Vec<Detection<'_>> = Vec::new();
        // Stage 1: confident detections against every live tracklet.
        let pairs = assign(live.len(), high.len(), |t, d| {
            cost(&live[t], frame, high[d].1, p, p.min_iou)
        });
        let mut matched_high = vec![false; high.len()];
        for &(t, d) in &pairs {
            live[t].push(frame, high[d], p.fps);
            matched_live[t] = true;
            matched_high[d] = true;
        }
        new_dets.extend(
            high.iter()
                .zip(&matched_high)
                .filter(|(_, &m)| !m)
                .map(|(d, _)| *d),
        );
        // Stage 2: low-score detections against the tracklets left, stricter on overlap.
        let left: Vec<usize> = (0..live.len()).filter(|&t| !matched_live[t]).collect();
        let pairs = assign(left.len(), low.len(), |t, d| {
            cost(&live[left[t]], frame, low[d].1, p, p.min_iou_low)
        });
        let mut matched_low = vec![false; low.len()];
        for &(t, d) in &pairs {
            live[left[t]].push(frame, low[d], p.fps);
            matched_low[d] = true;
        }
        new_dets.extend(
            low.iter()
                .zip(&matched_low)
                .filter(|(_, &m)| !m)
                .map(|(d, _)| *d),
        );
        // Unmatched detections start tracklets (low-score ones too: a tracklet needs one
        // confident detection to be kept in the end).
        new_dets.sort_by_key(|d| d.0);
        for d in new_dets {
            live.push(Live::new(frame, d, p.fps));
        }
    }
    done.extend(live);
    let mut out: Vec<Tracklet> = done.into_iter().map(|l| l.obs).collect();
    out.sort_by_key(|t| (t[0].0, t[0].1));
    out
}
