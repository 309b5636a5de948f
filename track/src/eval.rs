//! Tracking and smoothing figures on scenes with ground truth: CLEAR-MOT (MOTA, ID switches)
//! and IDF1 at IoU ≥ 0.5, as the MOT challenge defines them; MOT-challenge text files for a
//! cross-check with other implementations; smoothing errors (MPJPE, acceleration error, lag).

use crate::assign::assign;
use crate::synth::Scene;
use crate::Tracked;
use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// A box as the MOT files write it: left, top, width, height, pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotBox {
    /// Left.
    pub x: f64,
    /// Top.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

impl MotBox {
    /// From `[x1, y1, x2, y2]`.
    pub fn from_corners(b: &[f32; 4]) -> MotBox {
        let (x1, y1, x2, y2) = (
            f64::from(b[0]),
            f64::from(b[1]),
            f64::from(b[2]),
            f64::from(b[3]),
        );
        MotBox {
            x: x1,
            y: y1,
            w: x2 - x1,
            h: y2 - y1,
        }
    }

    /// Intersection over union (0 when they do not overlap).
    pub fn iou(&self, o: &MotBox) -> f64 {
        let w = (self.x + self.w).min(o.x + o.w) - self.x.max(o.x);
        let h = (self.y + self.h).min(o.y + o.h) - self.y.max(o.y);
        if !(w > 0.0 && h > 0.0) {
            return 0.0;
        }
        let inter = w * h;
        let union = self.w * self.h + o.w * o.h - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
}

/// Per frame, `(id, box)` of each object: ground truth or hypothesis.
pub type MotFrames = Vec<Vec<(u32, MotBox)>>;

/// IoU at which a hypothesis may match a ground-truth object.
pub const MIN_IOU: f64 = 0.5;

/// The usual figures of the MOT challenge.
#[derive(Debug, Clone, PartialEq)]
pub struct MotMetrics {
    /// `2 IDTP / (2 IDTP + IDFP + IDFN)`.
    pub idf1: f64,
    /// Identity true positives: frames matched under the one global trajectory matching.
    pub idtp: u64,
    /// Identity false positives (hypothesis boxes not counted in `idtp`).
    pub idfp: u64,
    /// Identity false negatives (ground-truth boxes not counted in `idtp`).
    pub idfn: u64,
    /// Identity switches (CLEAR-MOT).
    pub id_switches: u64,
    /// `1 − (misses + false positives + switches) / ground-truth objects`.
    pub mota: f64,
    /// Hypothesis boxes matched to no object (CLEAR-MOT).
    pub false_positives: u64,
    /// Objects matched to no hypothesis.
    pub misses: u64,
    /// Object–hypothesis matches.
    pub matches: u64,
    /// Ground-truth objects over all frames.
    pub gt_objects: u64,
}

/// The ground truth of a scene (hidden people included; none in frames answered with an error
/// or never answered, which have no people by contract) and the tracker's output, as MOT frames.
pub fn mot_frames(scene: &Scene, tracked: &Tracked) -> (MotFrames, MotFrames) {
    let gt = scene
        .gt
        .iter()
        .zip(&scene.records)
        .map(|(f, r)| match r {
            Some(r) if r.status == crate::FrameStatus::Ok => f
                .iter()
                .map(|p| (p.id, MotBox::from_corners(&p.obs.bbox)))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let hyp = tracked
        .frames
        .iter()
        .map(|f| {
            f.iter()
                .map(|p| (p.track_id, MotBox::from_corners(&p.obs.bbox)))
                .collect()
        })
        .collect();
    (gt, hyp)
}

/// CLEAR-MOT and IDF1. Per frame, a ground-truth object keeps its previous hypothesis when they
/// still overlap enough; the others are matched by the Hungarian method on `1 − IoU` (most
/// matches first); a match to another hypothesis than the object's last one is a switch. IDF1
/// matches whole trajectories once (max identity true positives).
pub fn mot_metrics(gt: &MotFrames, hyp: &MotFrames) -> MotMetrics {
    let frames = gt.len().max(hyp.len());
    let empty = Vec::new();
    let mut last: HashMap<u32, u32> = HashMap::new();
    let (mut fp, mut misses, mut matches, mut switches, mut objects) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut pair_tp: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let mut gt_len: BTreeMap<u32, u64> = BTreeMap::new();
    let mut hyp_len: BTreeMap<u32, u64> = BTreeMap::new();
    for f in 0..frames {
        let g = gt.get(f).unwrap_or(&empty);
        let h = hyp.get(f).unwrap_or(&empty);
        objects += g.len() as u64;
        let ious: Vec<Vec<f64>> = g
            .iter()
            .map(|(_, gb)| h.iter().map(|(_, hb)| gb.iou(hb)).collect())
            .collect();
        for (gi, (gid, _)) in g.iter().enumerate() {
            *gt_len.entry(*gid).or_default() += 1;
            for (hi, (hid, _)) in h.iter().enumerate() {
                if ious[gi][hi] >= MIN_IOU {
                    *pair_tp.entry((*gid, *hid)).or_default() += 1;
                }
            }
        }
        for (hid, _) in h {
            *hyp_len.entry(*hid).or_default() += 1;
        }
        // CLEAR-MOT: keep last frame's correspondences, then assign the rest.
        let mut g_done = vec![false; g.len()];
        let mut h_done = vec![false; h.len()];
        for (gi, (gid, _)) in g.iter().enumerate() {
            let Some(prev) = last.get(gid) else { continue };
            if let Some(hi) = (0..h.len()).find(|&hi| !h_done[hi] && h[hi].0 == *prev) {
                if ious[gi][hi] >= MIN_IOU {
                    g_done[gi] = true;
                    h_done[hi] = true;
                    matches += 1;
                }
            }
        }
        let gs: Vec<usize> = (0..g.len()).filter(|&i| !g_done[i]).collect();
        let hs: Vec<usize> = (0..h.len()).filter(|&i| !h_done[i]).collect();
        let pairs = assign(gs.len(), hs.len(), |a, b| {
            let v = ious[gs[a]][hs[b]];
            (v >= MIN_IOU).then_some(1.0 - v)
        });
        for (a, b) in pairs {
            let (gi, hi) = (gs[a], hs[b]);
            g_done[gi] = true;
            h_done[hi] = true;
            matches += 1;
            let (gid, hid) = (g[gi].0, h[hi].0);
            if last.get(&gid).is_some_and(|&p| p != hid) {
                switches += 1;
            }
            last.insert(gid, hid);
        }
        misses += g_done.iter().filter(|d| !**d).count() as u64;
        fp += h_done.iter().filter(|d| !**d).count() as u64;
    }
    // IDF1: one-to-one trajectory matching maximising the frames matched.
    let gids: Vec<u32> = gt_len.keys().copied().collect();
    let hids: Vec<u32> = hyp_len.keys().copied().collect();
    let idtp = if gids.is_empty() || hids.is_empty() {
        0
    } else {
        let n = gids.len().max(hids.len());
        let m = Matrix::from_fn(n, n, |(i, j)| match (gids.get(i), hids.get(j)) {
            (Some(g), Some(h)) => pair_tp.get(&(*g, *h)).copied().unwrap_or(0) as i64,
            _ => 0,
        });
        kuhn_munkres(&m).0 as u64
    };
    let total_gt: u64 = gt_len.values().sum();
    let total_hyp: u64 = hyp_len.values().sum();
    let idf1 = if total_gt + total_hyp == 0 {
        1.0
    } else {
        2.0 * idtp as f64 / (total_gt + total_hyp) as f64
    };
    let mota = if objects == 0 {
        1.0
    } else {
        1.0 - (misses + fp + switches) as f64 / objects as f64
    };
    MotMetrics {
        idf1,
        idtp,
        idfp: total_hyp - idtp,
        idfn: total_gt - idtp,
        id_switches: switches,
        mota,
        false_positives: fp,
        misses,
        matches,
        gt_objects: objects,
    }
}

/// MOT-challenge text (`frame,id,x,y,w,h,conf,-1,-1,-1`, frames from 1), exact to the bit
/// (shortest round-trip decimals), so another implementation reads the same boxes.
pub fn mot_text(frames: &MotFrames) -> String {
    let mut s = String::new();
    for (f, people) in frames.iter().enumerate() {
        for (id, b) in people {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},1,-1,-1,-1",
                f + 1,
                id,
                b.x,
                b.y,
                b.w,
                b.h
            );
        }
    }
    s
}

/// Smoothing figures against the ground truth, over the tracked people matched to a true
/// person (IoU ≥ 0.5 with its box, Hungarian per frame).
#[derive(Debug, Clone, PartialEq)]
pub struct SmoothMetrics {
    /// Mean keypoint error, millimetres (body frame, as the model's `keypoints_3d`).
    pub mpjpe_mm: f64,
    /// Mean error of the keypoints' acceleration (second difference over three frames of the
    /// same track and person), millimetres per frame².
    pub accel_mm: f64,
    /// Mean error of the camera position, millimetres.
    pub cam_mm: f64,
    /// Mean angle between tracked and true rotations (root and the 23 joints), degrees.
    pub rot_deg: f64,
    /// The shift (frames, −10..=10) of the true keypoints that best matches the tracked ones
    /// (least mean error); 0 means no lag, −1 that the output trails the truth by a frame.
    pub lag_frames: i32,
    /// People compared.
    pub samples: u64,
}

/// Smoothing figures of a tracked scene.
pub fn smooth_metrics(scene: &Scene, tracked: &Tracked) -> SmoothMetrics {
    // Per (track, gt id): frame → (tracked keypoints, true keypoints).
    type Kp = [[f32; 3]; crate::record::KEYPOINTS];
    let mut series: BTreeMap<(u32, u32), BTreeMap<usize, (Kp, Kp)>> = BTreeMap::new();
    let (mut mpjpe, mut cam, mut rot, mut samples) = (0.0, 0.0, 0.0, 0u64);
    for (f, (g, h)) in scene.gt.iter().zip(&tracked.frames).enumerate() {
        let boxes = |b: &[f32; 4]| MotBox::from_corners(b);
        let pairs = assign(g.len(), h.len(), |a, b| {
            let v = boxes(&g[a].obs.bbox).iou(&boxes(&h[b].obs.bbox));
            (v >= MIN_IOU).then_some(1.0 - v)
        });
        for (a, b) in pairs {
            let (gt, tr) = (&g[a].obs, &h[b].obs);
            mpjpe += kp_error(&gt.keypoints_3d, &tr.keypoints_3d);
            cam += dist(&gt.cam_t, &tr.cam_t);
            let angles: f64 = std::iter::once((&gt.global_orient, &tr.global_orient))
                .chain(gt.body_pose.iter().zip(&tr.body_pose))
                .map(|(a, b)| angle_deg(a, b))
                .sum();
            rot += angles / 24.0;
            samples += 1;
            series
                .entry((h[b].track_id, g[a].id))
                .or_default()
                .insert(f, (tr.keypoints_3d, gt.keypoints_3d));
        }
    }
    let (mut accel, mut accel_n) = (0.0, 0u64);
    let mut lag_err = [(0.0f64, 0u64); 21];
    for s in series.values() {
        for (&f, (tr, gt)) in s {
            if let (Some(prev), Some(next)) = (s.get(&(f.wrapping_sub(1))), s.get(&(f + 1))) {
                let acc = |a: &Kp, b: &Kp, c: &Kp, k: usize, d: usize| {
                    f64::from(a[k][d]) - 2.0 * f64::from(b[k][d]) + f64::from(c[k][d])
                };
                let mut e = 0.0;
                for k in 0..crate::record::KEYPOINTS {
                    let d2: f64 = (0..3)
                        .map(|d| {
                            (acc(&prev.0, tr, &next.0, k, d) - acc(&prev.1, gt, &next.1, k, d))
                                .powi(2)
                        })
                        .sum();
                    e += d2.sqrt();
                }
                accel += e / crate::record::KEYPOINTS as f64;
                accel_n += 1;
            }
        }
        // Lag: squared error between tracked keypoints at f and true ones at f + shift.
        for (i, shift) in (-10i64..=10).enumerate() {
            for (&f, (tr, _)) in s {
                let Some(gt) = usize::try_from(f as i64 + shift)
                    .ok()
                    .and_then(|g| s.get(&g))
                else {
                    continue;
                };
                lag_err[i].0 += kp_error(tr, &gt.1);
                lag_err[i].1 += 1;
            }
        }
    }
    let mean = |(e, n): (f64, u64)| if n > 0 { e / n as f64 } else { f64::INFINITY };
    let best = (0..21)
        .min_by(|&a, &b| mean(lag_err[a]).total_cmp(&mean(lag_err[b])))
        .unwrap_or(10);
    let n = samples.max(1) as f64;
    SmoothMetrics {
        mpjpe_mm: 1000.0 * mpjpe / n,
        accel_mm: 1000.0 * accel / accel_n.max(1) as f64,
        cam_mm: 1000.0 * cam / n,
        rot_deg: rot / n,
        lag_frames: best as i32 - 10,
        samples,
    }
}

/// Angle of the rotation between two unit quaternions (either sign), degrees.
fn angle_deg(a: &[f32; 4], b: &[f32; 4]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    2.0 * dot.abs().min(1.0).acos().to_degrees()
}

fn dist(a: &[f32; 3], b: &[f32; 3]) -> f64 {
    (0..3)
        .map(|d| (f64::from(a[d]) - f64::from(b[d])).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn kp_error(a: &[[f32; 3]], b: &[[f32; 3]]) -> f64 {
    a.iter().zip(b).map(|(x, y)| dist(x, y)).sum::<f64>() / a.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: f64) -> MotBox {
        MotBox {
            x,
            y: 0.0,
            w: 10.0,
            h: 10.0,
        }
    }

    #[test]
    fn a_switch_halves_idf1() {
        let gt: MotFrames = (0..4).map(|f| vec![(7, b(f as f64))]).collect();
        let hyp: MotFrames = (0..4)
            .map(|f| vec![(if f < 2 { 1 } else { 2 }, b(f as f64 + 1.0))])
            .collect();
        let m = mot_metrics(&gt, &hyp);
        assert_eq!(m.id_switches, 1);
        assert_eq!(m.idtp, 2);
        assert!((m.idf1 - 0.5).abs() < 1e-12);
        assert!((m.mota - 0.75).abs() < 1e-12);
    }

    #[test]
    fn misses_false_positives_and_the_iou_threshold() {
        // IoU 1/3 (shifted by half a width) does not match: a miss and a false positive.
        let gt: MotFrames = vec![vec![(1, b(0.0))], vec![(1, b(0.0))], vec![]];
        let hyp: MotFrames = vec![vec![(5, b(0.0))], vec![(5, b(5.0))], vec![(5, b(0.0))]];
        let m = mot_metrics(&gt, &hyp);
        assert_eq!((m.matches, m.misses, m.false_positives), (1, 1, 2));
        assert_eq!(m.id_switches, 0);
        assert!((m.idf1 - 2.0 / 5.0).abs() < 1e-12);
        assert!((m.mota - (1.0 - 3.0 / 2.0)).abs() < 1e-12);
    }

    #[test]
    fn correspondences_are_kept_over_better_newcomers() {
        // Hypothesis 1 keeps the object while it still overlaps ≥ 0.5, though 2 fits better.
        let gt: MotFrames = vec![vec![(1, b(0.0))], vec![(1, b(0.0))]];
        let hyp: MotFrames = vec![vec![(1, b(0.0))], vec![(1, b(2.0)), (2, b(0.0))]];
        let m = mot_metrics(&gt, &hyp);
        assert_eq!((m.id_switches, m.false_positives), (0, 1));
    }

    #[test]
    fn mot_text_is_exact() {
        let frames: MotFrames = vec![
            vec![],
            vec![(3, MotBox::from_corners(&[0.1, 2.0, 10.3, 22.5]))],
        ];
        let text = mot_text(&frames);
        let fields: Vec<&str> = text.trim().split(',').collect();
        assert_eq!(fields[..2], ["2", "3"]);
        let w: f64 = fields[4].parse().unwrap();
        assert_eq!(w, f64::from(10.3f32) - f64::from(0.1f32));
    }
}
