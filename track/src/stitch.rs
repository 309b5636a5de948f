//! Offline stitching: joins tracklets across gaps of up to `max_gap_s` (a person hidden behind
//! another, or missed by the detector for a while), looking both ways in time.
//!
//! For every pair (an earlier tracklet's end, a later tracklet's start) with no temporal overlap
//! and a gap short enough, the earlier one's motion is extrapolated forward to the later one's
//! first frame and the later one's backward to the earlier one's last frame (straight lines fitted
//! to their first/last observations); the pair is allowed when both land near the other's
//! observed viewing ray and box, at a similar depth, and their body shapes (median `betas`)
//! agree. One
//! Hungarian assignment over all ends and starts picks the links; chains of links make tracks.

use crate::assign::assign;
use crate::assoc::Tracklet;
use crate::geom::{betas_distance, Motion, State};
use crate::record::{Observation, BETAS};
use crate::{Params, People};

/// A tracklet's two ends, as stitching sees them.
struct Ends {
    start: usize,
    end: usize,
    head: Motion,
    tail: Motion,
    betas: [f64; BETAS],
}

/// Per-coefficient median of the shapes.
pub(crate) fn median_betas<'a>(obs: impl Iterator<Item = &'a Observation>) -> [f64; BETAS] {
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); BETAS];
    for o in obs {
        for (c, &b) in cols.iter_mut().zip(&o.betas) {
            c.push(f64::from(b));
        }
    }
    let mut out = [0.0; BETAS];
    for (o, c) in out.iter_mut().zip(&mut cols) {
        *o = median(c);
    }
    out
}

/// Median of the values (mean of the two middle ones for an even count; 0 for none).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn ends(t: &Tracklet, person: &People<'_>, p: &Params) -> Ends {
    let k = p.stitch_fit_obs.min(t.len()).max(1);
    let sample = |&(f, i): &(usize, usize)| (f as f64, State::of(person.get((f, i))));
    let first: Vec<_> = t[..k].iter().map(sample).collect();
    let last: Vec<_> = t[t.len() - k..].iter().map(sample).collect();
    let start = t[0].0;
    let end = t[t.len() - 1].0;
    Ends {
        start,
        end,
        head: Motion::fit(&first, start as f64, p.fps),
        tail: Motion::fit(&last, end as f64, p.fps),
        betas: median_betas(t.iter().map(|&fi| person.get(fi))),
    }
}

fn link_cost(a: &Ends, b: &Ends, p: &Params) -> Option<f64> {
    if b.start <= a.end || b.start - a.end - 1 > p.max_gap {
        return None;
    }
    let dt_s = (b.start - a.end) as f64 / p.fps;
    let fwd = a.tail.predict(b.start as f64);
    let bwd = b.head.predict(a.end as f64);
    let lateral = 0.5 * (fwd.lateral_m(&b.head.at) + bwd.lateral_m(&a.tail.at));
    let depth = a.tail.at.depth_ratio(&b.head.at);
    let centre = |x: &State, y: &State| {
        let h = y.bbox[3].abs().max(1.0);
        ((x.bbox[0] - y.bbox[0]).powi(2) + (x.bbox[1] - y.bbox[1]).powi(2)).sqrt() / h
    };
    let dc = 0.5 * (centre(&fwd, &b.head.at) + centre(&bwd, &a.tail.at));
    let db = betas_distance(&a.betas, &b.betas);
    let gate_m = p.stitch_gate_m + p.stitch_gate_m_per_s * dt_s;
    let gate_z = p.gate_depth + p.gate_depth_per_s * dt_s;
    let gate_c = p.stitch_gate_heights + p.stitch_gate_heights_per_s * dt_s;
    if !(lateral <= gate_m && depth <= gate_z && dc <= gate_c && db <= p.gate_betas) {
        return None;
    }
    Some(
        lateral / gate_m
            + 0.5 * depth / gate_z
            + dc / gate_c
            + db / p.gate_betas
            + dt_s / p.max_gap_s.max(1e-9) * 0.1,
    )
}

/// Joins tracklets into tracks; each track's observations in frame order.
pub(crate) fn stitch(tracklets: Vec<Tracklet>, person: &People<'_>, p: &Params) -> Vec<Tracklet> {
    if tracklets.len() < 2 || p.max_gap_s <= 0.0 {
        return tracklets;
    }
    let e: Vec<Ends> = tracklets.iter().map(|t| ends(t, person, p)).collect();
    let n = e.len();
    let links = assign(n, n, |a, b| link_cost(&e[a], &e[b], p));
    let mut next = vec![None; n];
    let mut has_prev = vec![false; n];
    for (a, b) in links {
        next[a] = Some(b);
        has_prev[b] = true;
    }
    let mut tracklets: Vec<Option<Tracklet>> = tracklets.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for (head, _) in has_prev.iter().enumerate().filter(|(_, &prev)| !prev) {
        let mut track = Vec::new();
        let mut at = Some(head);
        while let Some(i) = at {
            track.extend(tracklets[i].take().unwrap_or_default());
            at = next[i];
        }
        out.push(track);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Params, Settings};

    fn ends(start: usize, end: usize, x_at_start: f64, vx_per_frame: f64) -> Ends {
        let state = |x: f64| State {
            bbox: [500.0 + 100.0 * x, 300.0, 100.0, 300.0],
            ray: [x / 5.0, 0.6 / 5.0],
            log_z: 5.0f64.ln(),
        };
        let line = |at: usize| {
            let samples: Vec<(f64, State)> = (start..=end)
                .map(|f| {
                    (
                        f as f64,
                        state(x_at_start + vx_per_frame * (f - start) as f64),
                    )
                })
                .collect();
            Motion::fit(&samples, at as f64, 30.0)
        };
        Ends {
            start,
            end,
            head: line(start),
            tail: line(end),
            betas: [0.5; BETAS],
        }
    }

    #[test]
    fn links_need_order_a_short_gap_and_a_plausible_path() {
        // 30 fps, max_gap_s 1 s; walking at 1 m/s (1/30 m per frame), hidden 20 frames.
        let p = Params::new(&Settings::default());
        let v = 1.0 / 30.0;
        let a = ends(0, 40, 0.0, v);
        let b = ends(61, 100, 61.0 * v, v);
        assert!(link_cost(&a, &b, &p).is_some());
        // Not backwards, not overlapping.
        assert!(link_cost(&b, &a, &p).is_none());
        let overlapping = ends(40, 80, 40.0 * v, v);
        assert!(link_cost(&a, &overlapping, &p).is_none());
        // Not across more than max_gap_s (30 frames missing at most).
        let late = ends(72, 100, 72.0 * v, v);
        assert!(link_cost(&a, &late, &p).is_none());
        // Not 2 m off the path, nor with another body shape.
        let elsewhere = ends(61, 100, 61.0 * v + 2.0, v);
        assert!(link_cost(&a, &elsewhere, &p).is_none());
        let mut other_shape = ends(61, 100, 61.0 * v, v);
        other_shape.betas = [2.0; BETAS];
        assert!(link_cost(&a, &other_shape, &p).is_none());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
