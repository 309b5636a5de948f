//! How far one video's 3D cues can be trusted. The association and stitching gates on camera
//! position and body shape are sized for a model whose per-frame estimates of one person agree
//! to within centimetres and a fraction of a shape unit. A weaker model (a small or
//! randomly-initialised one, or real footage far outside the training data) can make them jump
//! by metres from frame to frame; fixed gates would then split every person into fragments. So
//! the gates are widened to the video's own frame-to-frame jitter, measured on the pairs whose
//! identity the boxes alone make certain (mutually best overlap above 0.6 in consecutive
//! frames): with consistent 3D nothing changes; with noisy 3D the boxes decide (and stitching
//! across gaps ignores a camera position that jitters more than its own gate).

use crate::assoc::Detection;
use crate::geom::{betas_distance, cam_distance, iou, State};
use crate::stitch::median;
use crate::Params;

/// Overlap that makes two detections of consecutive frames one person for this measurement.
const SURE_IOU: f64 = 0.6;
/// Pairs needed before the measurement is used.
const MIN_PAIRS: usize = 8;
/// Gates are at least this many times the median jitter.
const JITTER_GATES: f64 = 3.0;

/// The median frame-to-frame change of camera position and of shape between detections of one
/// person, when enough sure pairs exist.
pub(crate) fn jitter(dets: &[Vec<Detection<'_>>]) -> Option<(f64, f64)> {
    let (mut d3, mut db) = (Vec::new(), Vec::new());
    for pair in dets.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let boxes = |v: &[Detection<'_>]| -> Vec<[f64; 4]> {
            v.iter().map(|d| State::of(d.1).corners()).collect()
        };
        let (ba, bb) = (boxes(a), boxes(b));
        let best = |x: &[f64; 4], ys: &[[f64; 4]]| {
            ys.iter()
                .enumerate()
                .map(|(j, y)| (j, iou(x, y)))
                .max_by(|p, q| p.1.total_cmp(&q.1))
        };
        for (i, x) in ba.iter().enumerate() {
            let Some((j, o)) = best(x, &bb) else { continue };
            if o < SURE_IOU || best(&bb[j], &ba).map(|(k, _)| k) != Some(i) {
                continue;
            }
            let (oa, ob) = (a[i].1, b[j].1);
            d3.push(cam_distance(
                &oa.cam_t.map(f64::from),
                &ob.cam_t.map(f64::from),
            ));
            db.push(betas_distance(
                &oa.betas.map(f64::from),
                &ob.betas.map(f64::from),
            ));
        }
    }
    (d3.len() >= MIN_PAIRS).then(|| (median(&mut d3), median(&mut db)))
}

/// Widens the 3D and shape gates to the video's jitter (see the module doc).
pub(crate) fn adapt(p: &mut Params, dets: &[Vec<Detection<'_>>]) {
    let Some((d3, db)) = jitter(dets) else { return };
    let m = JITTER_GATES * d3;
    p.gate_m = p.gate_m.max(m);
    if m > p.stitch_gate_m {
        // Across a gap the extrapolated position drifts by more than the gate itself: the
        // camera position cannot tell people apart here, so the boxes and shapes decide.
        p.stitch_gate_m = f64::INFINITY;
    }
    p.gate_betas = p.gate_betas.max(JITTER_GATES * db);
}
