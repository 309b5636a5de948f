//! Offline stitching: joins tracklets across gaps of up to `max_gap_s` (a person hidden behind
//! another, or missed by the detector for a while), looking both ways in time.
//!
//! For every pair (an earlier tracklet's end, a later tracklet's start) with no temporal overlap
//! and a gap short enough, the earlier one's motion is extrapolated forward to the later one's
//! first frame and the later one's backward to the earlier one's last frame (straight lines fitted
//! to their first/last observations); the pair is allowed when both land near the other's
//! observed camera position and box, and their body shapes (median `betas`) agree. One
//! Hungarian assignment over all ends and starts picks the links; chains of links make tracks.

use crate::assign::assign;
use crate::assoc::Tracklet;
use crate::geom::{betas_distance, cam_distance, Motion, State};
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
    let d3 = 0.5
        * (cam_distance(&fwd.cam_t, &b.head.at.cam_t) + cam_distance(&bwd.cam_t, &a.tail.at.cam_t));
    let centre = |x: &State, y: &State| {
        let h = y.bbox[3].abs().max(1.0);
        ((x.bbox[0] - y.bbox[0]).powi(2) + (x.bbox[1] - y.bbox[1]).powi(2)).sqrt() / h
    };
    let dc = 0.5 * (centre(&fwd, &b.head.at) + centre(&bwd, &a.tail.at));
    let db = betas_distance(&a.betas, &b.betas);
    let gate_m = p.stitch_gate_m + p.stitch_gate_m_per_s * dt_s;
    let gate_c = p.stitch_gate_heights + p.stitch_gate_heights_per_s * dt_s;
    if !(d3 <= gate_m && dc <= gate_c && db <= p.gate_betas) {
        return None;
    }
    Some(d3 / gate_m + dc / gate_c + db / p.gate_betas + dt_s / p.max_gap_s.max(1e-9) * 0.1)
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
