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

/// Marks as outliers the samples whose camera position or keypoints stand far from what their
/// neighbours predict (a Gaussian-weighted local linear fit that leaves the sample itself out):
/// residual above median + k·1.4826·MAD of all the track's residuals (a robust k-sigma), and
/// above an absolute floor. A sample with no neighbour within the fit's reach is kept.
fn outliers(rows: &[f64], frames: &[usize], p: &Params) -> Vec<bool> {
    let n = frames.len();
    if n < 7 {
        return vec![false; n];
    }
    // Twice: the second time without the first pass's outliers in anyone's fit, so that an
    // outlier's neighbours (whose fits it pulled) are not taken for outliers too.
    let first = outlier_pass(rows, frames, p, None);
    if first.iter().any(|&b| b) {
        outlier_pass(rows, frames, p, Some(&first))
    } else {
        first
    }
}

fn outlier_pass(rows: &[f64], frames: &[usize], p: &Params, exclude: Option<&[bool]>) -> Vec<bool> {
    let n = frames.len();
    let kernel = Kernel {
        times: Some(frames),
        sigma: p.outlier_sigma as f64,
        radius: 2 * p.outlier_sigma,
        leave_out: true,
        exclude,
    };
    let fit = local_linear(rows, n, CAM..BOX, &kernel);
    let width = BOX - CAM;
    let mut r_cam = Vec::with_capacity(n);
    let mut r_kp = Vec::with_capacity(n);
    for i in 0..n {
        let row = &rows[i * CHANNELS + CAM..i * CHANNELS + BOX];
        let m = &fit[i * width..(i + 1) * width];
        let d = [row[0] - m[0], row[1] - m[1], 0.5 * (row[2] - m[2])];
        r_cam.push((d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt());
        let s: f64 = row[3..]
            .chunks_exact(3)
            .zip(m[3..].chunks_exact(3))
            .map(|(x, y)| {
                ((x[0] - y[0]).powi(2) + (x[1] - y[1]).powi(2) + (x[2] - y[2]).powi(2)).sqrt()
            })
            .sum();
        r_kp.push(s / KEYPOINTS as f64);
    }
    // Rows with no neighbour to predict them have a NaN residual: never outliers.
    let limit = |r: &[f64], floor: f64| {
        let mut v: Vec<f64> = r.iter().copied().filter(|x| x.is_finite()).collect();
        let med = median(&mut v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
        let mad = median(&mut dev);
        (med + p.outlier_k * 1.4826 * mad).max(floor)
    };
    let (lc, lk) = (
        limit(&r_cam, p.outlier_floor_m),
        limit(&r_kp, p.outlier_floor_kp_m),
    );
    (0..n).map(|i| r_cam[i] > lc || r_kp[i] > lk).collect()
}

/// How [`local_linear`] weighs rows: Gaussian σ and reach (frames), where the rows are.
#[derive(Clone, Copy)]
struct Kernel<'a> {
    /// Frame of each row (increasing); the row's index when `None`.
    times: Option<&'a [usize]>,
    sigma: f64,
    radius: usize,
    /// Leave each row out of its own fit.
    leave_out: bool,
    /// Rows that count for no fit.
    exclude: Option<&'a [bool]>,
}

impl Kernel<'_> {
    fn gaussian(sigma: f64, radius: usize) -> Kernel<'static> {
        Kernel {
            times: None,
            sigma,
            radius,
            leave_out: false,
            exclude: None,
        }
    }
}

/// Gaussian-weighted local linear fit at every row of `data` (`len` rows of [`CHANNELS`]) for
/// the channels `chans`; returns those channels only (`len` rows of `chans.len()`). Row `i` is
/// at frame `times[i]` (increasing; `i` when `None`), and the fit uses the rows within `radius`
/// frames. With `leave_out`, each row's own value is left out of its fit (a prediction from its
/// neighbours); rows marked in `exclude` count for no fit.
fn local_linear(data: &[f64], len: usize, chans: std::ops::Range<usize>, k: &Kernel) -> Vec<f64> {
    let Kernel {
        times,
        sigma,
        radius,
        leave_out,
        exclude,
    } = *k;
    let width = chans.len();
    let mut out = vec![0.0; len * width];
    let g: Vec<f64> = (0..=radius)
        .map(|d| (-((d * d) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let time = |i: usize| times.map_or(i, |t| t[i]);
    let mut w = Vec::with_capacity(2 * radius + 1);
    let (mut lo, mut hi) = (0, 0);
    for i in 0..len {
        let ti = time(i);
        while time(lo).saturating_add(radius) < ti {
            lo += 1;
        }
        while hi + 1 < len && time(hi + 1) <= ti.saturating_add(radius) {
            hi += 1;
        }
        let weight = |j: usize| {
            if (leave_out && j == i) || exclude.is_some_and(|e| e[j]) {
                0.0
            } else {
                g[time(j).abs_diff(ti)]
            }
        };
        let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
        for j in lo..=hi {
            let d = time(j) as f64 - ti as f64;
            let gj = weight(j);
            s0 += gj;
            s1 += gj * d;
            s2 += gj * d * d;
        }
        let denom = s0 * s2 - s1 * s1;
        let linear = denom > 1e-9 * s0 * s2 && denom > 0.0;
        w.clear();
        for j in lo..=hi {
            let d = time(j) as f64 - ti as f64;
            let gj = weight(j);
            w.push(if linear {
                gj * (s2 - s1 * d) / denom
            } else if s0 > 0.0 {
                gj / s0
            } else {
                0.0
            });
        }
        let o = &mut out[i * width..(i + 1) * width];
        if s0 <= 0.0 {
            // Nothing to fit (a lone row left out of its own fit).
            o.iter_mut().for_each(|x| *x = f64::NAN);
            continue;
        }
        for (j, &wj) in (lo..=hi).zip(&w) {
            let x = &data[j * CHANNELS + chans.start..j * CHANNELS + chans.end];
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
    let mut rows: Vec<Row> = track.iter().map(|&fi| row_of(person.get(fi))).collect();
    let mut bad = if p.smooth_sigma_s > 0.0 {
        outliers(
            rows.as_flattened(),
            &track.iter().map(|t| t.0).collect::<Vec<_>>(),
            p,
        )
    } else {
        vec![false; rows.len()]
    };
    if bad.iter().all(|&b| b) {
        // Nothing to trust more than the rest: keep them all.
        bad.iter_mut().for_each(|b| *b = false);
    }
    // Good rows: unit quaternions, each on the hemisphere of the previous good row's.
    let mut prev: Option<usize> = None;
    for i in (0..rows.len()).filter(|&i| !bad[i]) {
        normalise_quats(&mut rows[i]);
        if let Some(k) = prev {
            let (before, from) = rows.split_at_mut(i);
            align_quats(&before[k], &mut from[0]);
        }
        prev = Some(i);
    }
    // The dense sequence, first to last frame: good rows where they are, then the rest filled.
    let len = last - first + 1;
    let mut data = vec![0.0; len * CHANNELS];
    let mut filled = vec![true; len];
    let mut good_frames = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate().filter(|(i, _)| !bad[*i]) {
        let f = track[i].0 - first;
        data[f * CHANNELS..(f + 1) * CHANNELS].copy_from_slice(row);
        filled[f] = false;
        good_frames.push(f);
    }
    drop(rows);
    let row = |data: &[f64], f: usize| -> Row {
        let mut r = [0.0; CHANNELS];
        r.copy_from_slice(&data[f * CHANNELS..(f + 1) * CHANNELS]);
        r
    };
    // Between good rows: slerp and linear. Before the first and after the last: held.
    for pair in good_frames.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b > a + 1 {
            let (ra, rb) = (row(&data, a), row(&data, b));
            for f in a + 1..b {
                let t = (f - a) as f64 / (b - a) as f64;
                interpolate(&ra, &rb, t, &mut data[f * CHANNELS..(f + 1) * CHANNELS]);
            }
        }
    }
    if let (Some(&a), Some(&b)) = (good_frames.first(), good_frames.last()) {
        let (ra, rb) = (row(&data, a), row(&data, b));
        for f in 0..a {
            data[f * CHANNELS..(f + 1) * CHANNELS].copy_from_slice(&ra);
        }
        for f in b + 1..len {
            data[f * CHANNELS..(f + 1) * CHANNELS].copy_from_slice(&rb);
        }
    }
    if p.smooth_sigma_s > 0.0 && !good_frames.is_empty() {
        let sigma = p.smooth_sigma_s * p.fps;
        let radius = ((3.0 * sigma).ceil() as usize)
            .clamp(1, p.max_radius)
            .min(len - 1);
        if sigma >= 0.2 && radius >= 1 {
            let fit = local_linear(&data, len, 0..BETA, &Kernel::gaussian(sigma, radius));
            for (row, f) in data.chunks_exact_mut(CHANNELS).zip(fit.chunks_exact(BETA)) {
                row[..BETA].copy_from_slice(f);
            }
        }
        // One shape per person: the per-coefficient median of its good observations.
        let mut col = Vec::with_capacity(good_frames.len());
        for b in BETA..CHANNELS {
            col.clear();
            col.extend(good_frames.iter().map(|&f| data[f * CHANNELS + b]));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Params, Settings, Smoothing};

    fn signal(len: usize, f: impl Fn(usize) -> f64) -> Vec<f64> {
        let mut data = vec![0.0; len * CHANNELS];
        for i in 0..len {
            data[i * CHANNELS + CAM] = f(i);
        }
        data
    }

    #[test]
    fn a_sine_comes_back_unshifted_and_a_ramp_untouched() {
        let len = 200;
        let period = 25.0;
        let sine = |i: usize| (2.0 * std::f64::consts::PI * i as f64 / period).sin();
        let out = local_linear(
            &signal(len, sine),
            len,
            CAM..CAM + 1,
            &Kernel::gaussian(1.5, 5),
        );
        // Best alignment with the input at shift 0 (a causal filter would trail).
        let score = |shift: i64| -> f64 {
            (20..len - 20)
                .map(|i| out[i] * sine((i as i64 + shift) as usize))
                .sum()
        };
        let best = (-5..=5).max_by(|&a, &b| score(a).total_cmp(&score(b)));
        assert_eq!(best, Some(0));
        // Amplitude mostly kept at this frequency (Gaussian response ≈ 0.87).
        let peak = out[20..len - 20].iter().cloned().fold(0.0, f64::max);
        assert!(peak > 0.8 && peak < 1.0, "{peak}");
        // A steady motion is unchanged everywhere, ends included (no lag at the boundaries).
        let ramp = |i: usize| 0.05 * i as f64 - 3.0;
        let out = local_linear(
            &signal(len, ramp),
            len,
            CAM..CAM + 1,
            &Kernel::gaussian(3.0, 9),
        );
        for (i, v) in out.iter().enumerate() {
            assert!((v - ramp(i)).abs() < 1e-9, "{i}: {v}");
        }
    }

    #[test]
    fn quaternion_signs_do_not_cancel() {
        // One rotation, written with alternating signs: smoothing must keep it.
        let q = [0.5f64, 0.5, -0.5, 0.5];
        let mut rows: Vec<Row> = (0..20)
            .map(|i| {
                let mut r = [0.0; CHANNELS];
                let s = if i % 2 == 0 { 1.0 } else { -1.0 };
                for k in 0..QUATS {
                    r[4 * k..4 * k + 4].copy_from_slice(&q.map(|v| v * s));
                }
                r
            })
            .collect();
        for k in 1..rows.len() {
            let (a, b) = rows.split_at_mut(k);
            align_quats(&a[k - 1], &mut b[0]);
        }
        let data = rows.as_flattened();
        let out = local_linear(data, 20, 0..CAM, &Kernel::gaussian(2.0, 6));
        for r in out.chunks_exact(CAM) {
            let mut r = r.to_vec();
            r.resize(CHANNELS, 0.0);
            normalise_quats(&mut r);
            let dot: f64 = r[..4].iter().zip(&q).map(|(a, b)| a * b).sum();
            assert!((dot.abs() - 1.0).abs() < 1e-9, "{r:?}");
        }
    }

    #[test]
    fn slerp_fills_halfway() {
        // 0° and 90° about z: halfway is 45°.
        let a = [1.0, 0.0, 0.0, 0.0];
        let h = std::f64::consts::FRAC_PI_4;
        let b = [h.cos(), 0.0, 0.0, h.sin()];
        let mut out = [0.0; 4];
        slerp(&a, &b, 0.5, &mut out);
        let e = std::f64::consts::FRAC_PI_8;
        assert!((out[0] - e.cos()).abs() < 1e-12 && (out[3] - e.sin()).abs() < 1e-12);
    }

    #[test]
    fn an_outlier_frame_is_found() {
        let p = Params::new(&Settings {
            smoothing: Smoothing::Default,
            ..Settings::default()
        });
        let n = 60;
        let mut data = signal(n, |i| 0.02 * i as f64);
        // Small noise in the keypoints, one frame 0.8 m off.
        for i in 0..n {
            for k in 0..KEYPOINTS * 3 {
                data[i * CHANNELS + KP + k] = 0.003 * (((i * 7 + k * 13) % 11) as f64 - 5.0);
            }
        }
        data[30 * CHANNELS + CAM] += 0.8;
        let bad = outliers(&data, &(0..n).collect::<Vec<_>>(), &p);
        assert_eq!(
            bad.iter()
                .enumerate()
                .filter(|(_, b)| **b)
                .map(|(i, _)| i)
                .collect::<Vec<_>>(),
            vec![30]
        );
    }
}
