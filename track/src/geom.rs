//! Small geometry shared by association and stitching: boxes, distances across and along the
//! viewing ray, shape distances, and straight-line motion fitted to a few observations.

use crate::record::{Observation, BETAS};

/// Intersection over union of two `[x1, y1, x2, y2]` boxes; 0 for empty or non-finite boxes.
pub(crate) fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    if !a.iter().chain(b).all(|v| v.is_finite()) {
        return 0.0;
    }
    let w = a[2].min(b[2]) - a[0].max(b[0]);
    let h = a[3].min(b[3]) - a[1].max(b[1]);
    if !(w > 0.0 && h > 0.0) {
        return 0.0;
    }
    let inter = w * h;
    let area = |r: &[f64; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        (inter / union).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Root-mean-square difference per shape coefficient.
pub(crate) fn betas_distance(a: &[f64; BETAS], b: &[f64; BETAS]) -> f64 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    (s / BETAS as f64).sqrt()
}

/// Nearest depth used, metres (a camera position at or behind the camera is read as this).
const MIN_DEPTH_M: f64 = 0.05;

/// The state used to predict where a person goes: the box as centre and size, and the camera
/// position split into its viewing ray (`x/z`, `y/z`) and `ln z`. A per-frame model places the
/// person's ray well (from the box) but errs on the depth along it (from the box's scale), so
/// the two are compared apart: lateral distance in metres along the ray's normal, depth as a
/// ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct State {
    /// `[cx, cy, w, h]`.
    pub(crate) bbox: [f64; 4],
    /// `[x/z, y/z]`.
    pub(crate) ray: [f64; 2],
    /// `ln z`.
    pub(crate) log_z: f64,
}

impl State {
    pub(crate) fn of(o: &Observation) -> State {
        let b = o.bbox.map(f64::from);
        let [x, y, z] = o.cam_t.map(f64::from);
        let z = z.max(MIN_DEPTH_M);
        State {
            bbox: [
                0.5 * (b[0] + b[2]),
                0.5 * (b[1] + b[3]),
                b[2] - b[0],
                b[3] - b[1],
            ],
            ray: [x / z, y / z],
            log_z: z.ln(),
        }
    }

    fn as_array(&self) -> [f64; 7] {
        let [a, b, c, d] = self.bbox;
        let [e, f] = self.ray;
        [a, b, c, d, e, f, self.log_z]
    }

    fn from_array(v: [f64; 7]) -> State {
        State {
            bbox: [v[0], v[1], v[2], v[3]],
            ray: [v[4], v[5]],
            log_z: v[6],
        }
    }

    /// The box as `[x1, y1, x2, y2]` (size at least 0).
    pub(crate) fn corners(&self) -> [f64; 4] {
        let [cx, cy, w, h] = self.bbox;
        let (w, h) = (w.max(0.0), h.max(0.0));
        [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
    }

    /// Distance between the two people across their viewing rays, metres at their (mean) depth.
    pub(crate) fn lateral_m(&self, o: &State) -> f64 {
        let (dx, dy) = (self.ray[0] - o.ray[0], self.ray[1] - o.ray[1]);
        (dx * dx + dy * dy).sqrt() * (0.5 * (self.log_z + o.log_z)).exp()
    }

    /// Depth difference as `|ln(z1 / z2)|` (0.1 ≈ 10 %).
    pub(crate) fn depth_ratio(&self, o: &State) -> f64 {
        (self.log_z - o.log_z).abs()
    }
}

/// Constant-velocity motion: a state at a frame and its change per frame. The depth is held at
/// the samples' mean (no velocity): a per-frame depth is too noisy to extrapolate from a few
/// frames, and people change depth slowly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Motion {
    pub(crate) frame: f64,
    pub(crate) at: State,
    velocity: [f64; 7],
}

/// Fastest plausible motion across the viewing ray, metres per second (a sprint).
const MAX_SPEED_M_S: f64 = 8.0;

impl Motion {
    /// Least-squares line through `(frame, state)` samples, evaluated at `at_frame`. One sample
    /// gives no velocity. The lateral velocity is capped at a sprint.
    pub(crate) fn fit(samples: &[(f64, State)], at_frame: f64, fps: f64) -> Motion {
        let n = samples.len() as f64;
        let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / n.max(1.0);
        let stt: f64 = samples.iter().map(|s| (s.0 - mean_t).powi(2)).sum();
        let mut mean = [0.0; 7];
        for (_, s) in samples {
            for (m, v) in mean.iter_mut().zip(s.as_array()) {
                *m += v / n;
            }
        }
        let mut velocity = [0.0; 7];
        if stt > 0.0 {
            for (t, s) in samples {
                for ((vel, m), v) in velocity.iter_mut().zip(&mean).zip(s.as_array()).take(6) {
                    *vel += (t - mean_t) * (v - m) / stt;
                }
            }
        }
        let speed = (velocity[4].powi(2) + velocity[5].powi(2)).sqrt() * mean[6].exp() * fps;
        if speed > MAX_SPEED_M_S {
            let k = MAX_SPEED_M_S / speed;
            velocity[4..6].iter_mut().for_each(|v| *v *= k);
        }
        let mut at = mean;
        for (a, v) in at.iter_mut().zip(&velocity) {
            *a += v * (at_frame - mean_t);
        }
        Motion {
            frame: at_frame,
            at: State::from_array(at),
            velocity,
        }
    }

    /// The state `frame` frames on (or back, when earlier).
    pub(crate) fn predict(&self, frame: f64) -> State {
        let dt = frame - self.frame;
        let mut v = self.at.as_array();
        for (x, vel) in v.iter_mut().zip(&self.velocity) {
            *x += vel * dt;
        }
        let mut s = State::from_array(v);
        // Boxes shrink at most to a tenth of their size.
        s.bbox[2] = s.bbox[2].max(0.1 * self.at.bbox[2]);
        s.bbox[3] = s.bbox[3].max(0.1 * self.at.bbox[3]);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[20.0, 0.0, 30.0, 10.0]), 0.0);
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(iou(&a, &[f64::NAN, 0.0, 1.0, 1.0]), 0.0);
    }

    #[test]
    fn line_fit_extrapolates() {
        let s = |t: f64| State {
            bbox: [100.0 + 2.0 * t, 50.0, 40.0, 80.0],
            ray: [0.002 * t, 0.1],
            log_z: 5.0f64.ln() + if t as usize % 2 == 0 { 0.1 } else { -0.1 },
        };
        let samples: Vec<_> = (0..4).map(|t| (t as f64, s(t as f64))).collect();
        let m = Motion::fit(&samples, 3.0, 30.0);
        let p = m.predict(10.0);
        assert!((p.bbox[0] - 120.0).abs() < 1e-9);
        assert!((p.ray[0] - 0.02).abs() < 1e-12);
        // Depth: the mean, not a line through the noise.
        assert!((p.log_z - 5.0f64.ln()).abs() < 1e-12);
        // 0.02 rad across the ray at 5 m: 10 cm.
        assert!((p.lateral_m(&s(0.0)) - 0.1).abs() < 0.011);
        let single = Motion::fit(&samples[..1], 0.0, 30.0);
        assert_eq!(single.predict(7.0).bbox, s(0.0).bbox);
    }
}
