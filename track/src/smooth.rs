//! Per-track clean-up: constant body shape, outlier frames replaced, gaps filled, zero-phase
//! smoothing.
//!
//! A track's values are laid out per frame as one row of [`CHANNELS`] numbers (24 quaternions,
//! camera position, keypoints, box, focal length, shape). Rotations stay unit quaternions: made
//! hemisphere-continuous along the track (a quaternion and its negation are one rotation, so
//! each is flipped to the side of its predecessor), interpolated by slerp, filtered per
//! component and renormalised, which for the small angles between neighbouring frames is a
//! faithful rotation average with no ±π seam. The filter is a Gaussian-weighted local linear
//! fit at every frame: inside the track it is exactly the symmetric Gaussian kernel (zero
//! phase: no lag), and near the ends, where a truncated kernel would pull a moving value back
//! towards the interior, the linear term keeps a steady motion unbiased.

use crate::assoc::Tracklet;
use crate::record::{BoxSource, Observation, BETAS, BODY_JOINTS, KEYPOINTS};
use crate::stitch::median;
use crate::{Params, People};

const QUATS: usize = 1 + BODY_JOINTS;
const CAM: usize = QUATS * 4;
const KP: usize = CAM + 3;
const BOX: usize = KP + KEYPOINTS * 3;
const FOCAL: usize = BOX + 4;
const BETA: usize = FOCAL + 1;
/// Numbers per frame.
pub(crate) const CHANNELS: usize = BETA + BETAS;

type Row = [f64; CHANNELS];

fn row_of(o: &Observation) -> Row {
    let mut r = [0.0; CHANNELS];
    r[..4].copy_from_slice(&o.global_orient.map(f64::from));
    for (j, q) in o.body_pose.iter().enumerate() {
        r[4 + 4 * j..8 + 4 * j].copy_from_slice(&q.map(f64::from));
    }
    r[CAM..KP].copy_from_slice(&o.cam_t.map(f64::from));
    for (k, p) in o.keypoints_3d.iter().enumerate() {
        r[KP + 3 * k..KP + 3 * k + 3].copy_from_slice(&p.map(f64::from));
    }
    r[BOX..FOCAL].copy_from_slice(&o.bbox.map(f64::from));
    r[FOCAL] = f64::from(o.focal_length);
    r[BETA..].copy_from_slice(&o.betas.map(f64::from));
    r
}

fn observation_of(r: &[f64], score: Option<f32>, box_source: BoxSource) -> Observation {
    let f = |i: usize| r[i] as f32;
    let quat = |q: usize| {
        let mut v = [f(4 * q), f(4 * q + 1), f(4 * q + 2), f(4 * q + 3)];
        if v[0] < 0.0 {
            v = v.map(|x| -x);
        }
        v
    };
    Observation {
        bbox: [f(BOX), f(BOX + 1), f(BOX + 2), f(BOX + 3)],
        score,
        box_source,
        global_orient: quat(0),
        body_pose: std::array::from_fn(|j| quat(j + 1)),
        betas: std::array::from_fn(|b| f(BETA + b)),
        cam_t: [f(CAM), f(CAM + 1), f(CAM + 2)],
        focal_length: f(FOCAL),
        keypoints_3d: std::array::from_fn(|k| {
            [f(KP + 3 * k), f(KP + 3 * k + 1), f(KP + 3 * k + 2)]
        }),
    }
}

fn normalise_quats(r: &mut [f64]) {
    for q in r[..CAM].chunks_exact_mut(4) {
        let n = q.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 0.0 && n.is_finite() {
            q.iter_mut().for_each(|x| *x /= n);
        } else {
            q.copy_from_slice(&[1.0, 0.0, 0.0, 0.0]);
        }
    }
}

/// Flips each quaternion of `cur` to the hemisphere of the same quaternion in `prev`.
fn align_quats(prev: &[f64], cur: &mut [f64]) {
    for (p, c) in prev[..CAM]
        .chunks_exact(4)
        .zip(cur[..CAM].chunks_exact_mut(4))
    {
        let dot: f64 = p.iter().zip(c.iter()).map(|(a, b)| a * b).sum();
        if dot < 0.0 {
            c.iter_mut().for_each(|x| *x = -*x);
        }
    }
}

/// Spherical interpolation of unit quaternions `a → b` (same hemisphere) at `t ∈ [0, 1]`.
fn slerp(a: &[f64], b: &[f64], t: f64, out: &mut [f64]) {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| x * y)
        .sum::<f64>()
        .clamp(-1.0, 1.0);
    let theta = dot.acos();
    let (wa, wb) = if theta.sin().abs() < 1e-6 {
        (1.0 - t, t)
    } else {
        let s = theta.sin();
        (((1.0 - t) * theta).sin() / s, (t * theta).sin() / s)
    };
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = wa * x + wb * y;
    }
}

/// Row `t ∈ [0, 1]` of the way from `a` to `b`: slerp for rotations, linear for the rest.
fn interpolate(a: &Row, b: &Row, t: f64, out: &mut [f64]) {
    for q in 0..QUATS {
        let s = 4 * q..4 * q + 4;
        slerp(&a[s.clone()], &b[s.clone()], t, &mut out[s]);
    }
    for c in CAM..CHANNELS {
        out[c] = a[c] + t * (b[c] - a[c]);
    }
    normalise_quats(out);
}

/// Marks as outliers the samples whose camera position or keypoints stand far from the running
/// median of their neighbours: residual above median + k·1.4826·MAD of all residuals (a robust
/// k-sigma), and above an absolute floor.
fn outliers(rows: &[Row], p: &Params) -> Vec<bool> {
    let n = rows.len();
    let mut out = vec![false; n];
    if n < 2 * p.outlier_half_window + 3 {
        return out;
    }
    let h = p.outlier_half_window;
    let mut win = Vec::with_capacity(2 * h + 1);
    let mut running_median = |i: usize, c: usize| {
        let lo = i.saturating_sub(h).min(n - (2 * h + 1));
        win.clear();
        win.extend(rows[lo..lo + 2 * h + 1].iter().map(|r| r[c]));
        median(&mut win)
    };
    let mut r_cam = Vec::with_capacity(n);
    let mut r_kp = Vec::with_capacity(n);
    for (i, row) in rows.iter().enumerate() {
        let m: Vec<f64> = (CAM..CAM + 3).map(|c| running_median(i, c)).collect();
        let d = [
            row[CAM] - m[0],
            row[CAM + 1] - m[1],
            0.5 * (row[CAM + 2] - m[2]),
        ];
        r_cam.push((d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt());
        let mut s = 0.0;
        for k in 0..KEYPOINTS {
            let c = KP + 3 * k;
            let d: f64 = (c..c + 3)
                .map(|c| (row[c] - running_median(i, c)).powi(2))
                .sum();
            s += d.sqrt();
        }
        r_kp.push(s / KEYPOINTS as f64);
    }
    let limit = |r: &[f64], floor: f64| {
        let mut v = r.to_vec();
        let med = median(&mut v);
        let mut dev: Vec<f64> = r.iter().map(|x| (x - med).abs()).collect();
        let mad = median(&mut dev);
        (med + p.outlier_k * 1.4826 * mad).max(floor)
    };
    let (lc, lk) = (
        limit(&r_cam, p.outlier_floor_m),
        limit(&r_kp, p.outlier_floor_kp_m),
    );
    for i in 0..n {
        out[i] = r_cam[i] > lc || r_kp[i] > lk;
    }
    out
}

/// Gaussian-weighted local linear fit at every row of `data` (`len` rows of [`CHANNELS`]),
/// channels `0..upto`.
fn local_linear(data: &[f64], len: usize, upto: usize, sigma: f64, radius: usize) -> Vec<f64> {
    let mut out = data.to_vec();
    let g: Vec<f64> = (0..=radius)
        .map(|d| (-((d * d) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let mut w = Vec::with_capacity(2 * radius + 1);
    for i in 0..len {
        let lo = i.saturating_sub(radius);
        let hi = (i + radius).min(len - 1);
        let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
        for j in lo..=hi {
            let d = j as f64 - i as f64;
            let gj = g[j.abs_diff(i)];
            s0 += gj;
            s1 += gj * d;
            s2 += gj * d * d;
        }
        let denom = s0 * s2 - s1 * s1;
        w.clear();
        for j in lo..=hi {
            let d = j as f64 - i as f64;
            let gj = g[j.abs_diff(i)];
            w.push(if denom > 1e-9 * s0 * s2 && denom > 0.0 {
                gj * (s2 - s1 * d) / denom
            } else {
                gj / s0
            });
        }
        let o = &mut out[i * CHANNELS..i * CHANNELS + upto];
        o.iter_mut().for_each(|x| *x = 0.0);
        for (j, &wj) in (lo..=hi).zip(&w) {
            let x = &data[j * CHANNELS..j * CHANNELS + upto];
            for (a, b) in o.iter_mut().zip(x) {
                *a += wj * b;
            }
        }
    }
    out
}

/// One output person of a track: frame, values, filled by interpolation.
pub(crate) type Emitted = (usize, Observation, bool);

/// Cleans up and smooths one track; emits a person for every frame from its first to its last
/// observation whose record is Ok (`frame_ok`).
pub(crate) fn smooth_track(
    track: &Tracklet,
    person: &People<'_>,
    frame_ok: &[bool],
    p: &Params,
) -> Vec<Emitted> {
    let Some(&(first, _)) = track.first() else {
        return Vec::new();
    };
    let last = track[track.len() - 1].0;
    let rows: Vec<Row> = track.iter().map(|&fi| row_of(person.get(fi))).collect();
    let bad = if p.smooth_sigma_s > 0.0 {
        outliers(&rows, p)
    } else {
        vec![false; rows.len()]
    };
    let good: Vec<usize> = (0..rows.len()).filter(|&i| !bad[i]).collect();
    let mut good_rows: Vec<Row> = good.iter().map(|&i| rows[i]).collect();
    for r in &mut good_rows {
        normalise_quats(r);
    }
    for k in 1..good_rows.len() {
        let (a, b) = good_rows.split_at_mut(k);
        align_quats(&a[k - 1], &mut b[0]);
    }
    let len = last - first + 1;
    let mut data = vec![0.0; len * CHANNELS];
    let mut filled = vec![true; len];
    for (k, &i) in good.iter().enumerate() {
        let f = track[i].0 - first;
        data[f * CHANNELS..(f + 1) * CHANNELS].copy_from_slice(&good_rows[k]);
        filled[f] = false;
    }
    // Fill between good samples; hold the nearest one before the first and after the last.
    let good_frames: Vec<usize> = good.iter().map(|&i| track[i].0 - first).collect();
    for f in 0..len {
        if !filled[f] {
            continue;
        }
        let k = good_frames.partition_point(|&g| g < f);
        let out = &mut data[f * CHANNELS..(f + 1) * CHANNELS];
        match (k.checked_sub(1), good_frames.get(k)) {
            (Some(a), Some(&b)) => {
                let t = (f - good_frames[a]) as f64 / (b - good_frames[a]) as f64;
                interpolate(&good_rows[a], &good_rows[k], t, out);
            }
            (Some(a), None) => out.copy_from_slice(&good_rows[a]),
            (None, Some(_)) => out.copy_from_slice(&good_rows[k]),
            (None, None) => {}
        }
    }
    if p.smooth_sigma_s > 0.0 && !good_rows.is_empty() {
        let sigma = p.smooth_sigma_s * p.fps;
        let radius = ((3.0 * sigma).ceil() as usize)
            .clamp(1, p.max_radius)
            .min(len - 1);
        if sigma >= 0.2 && radius >= 1 {
            data = local_linear(&data, len, BETA, sigma, radius);
        }
        // One shape per person: the per-coefficient median of its good observations.
        let mut col = Vec::with_capacity(good_rows.len());
        for b in BETA..CHANNELS {
            col.clear();
            col.extend(good_rows.iter().map(|r| r[b]));
            let m = median(&mut col);
            for f in 0..len {
                data[f * CHANNELS + b] = m;
            }
        }
        for f in 0..len {
            normalise_quats(&mut data[f * CHANNELS..(f + 1) * CHANNELS]);
        }
    }
    // Scores and box sources of the observed frames; others take the box source before them.
    let mut observed: Vec<Option<(Option<f32>, BoxSource)>> = vec![None; len];
    for &(f, i) in track {
        let o = person.get((f, i));
        observed[f - first] = Some((o.score, o.box_source));
    }
    let mut source = BoxSource::Detector;
    let mut out = Vec::new();
    for f in 0..len {
        let seen = observed[f];
        if let Some((_, s)) = seen {
            source = s;
        }
        if !frame_ok.get(first + f).copied().unwrap_or(false) {
            continue;
        }
        let interpolated = filled[f];
        let score = seen.and_then(|s| s.0);
        let obs = observation_of(&data[f * CHANNELS..(f + 1) * CHANNELS], score, source);
        out.push((first + f, obs, interpolated));
    }
    out
}
