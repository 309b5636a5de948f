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
use crate::geom::{betas_distance, iou, State};
use crate::stitch::median;
use crate::Params;

/// Overlap that makes two detections of consecutive frames one person for this measurement.
const SURE_IOU: f64 = 0.6;
/// Pairs needed before the measurement is used.
const MIN_PAIRS: usize = 8;
/// Gates are at least this many times the median jitter (for normal noise, 3.4 σ).
const JITTER_GATES: f64 = 5.0;

/// The video's jitter between detections of one person in consecutive frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Jitter {
    /// Median camera-position change across the viewing ray, metres.
    pub(crate) lateral_m: f64,
    /// Median depth change, as `|ln(z₁/z₂)|`.
    pub(crate) depth: f64,
    /// Median shape change, RMS per coefficient.
    pub(crate) betas: f64,
}

/// The median frame-to-frame changes between detections of one person, when enough sure pairs
/// exist.
pub(crate) fn jitter(dets: &[Vec<Detection<'_>>]) -> Option<Jitter> {
    let (mut dl, mut dz, mut db) = (Vec::new(), Vec::new(), Vec::new());
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
            let (sa, sb) = (State::of(oa), State::of(ob));
            dl.push(sa.lateral_m(&sb));
            dz.push(sa.depth_ratio(&sb));
            db.push(betas_distance(
                &oa.betas.map(f64::from),
                &ob.betas.map(f64::from),
            ));
        }
    }
    (dl.len() >= MIN_PAIRS).then(|| Jitter {
        lateral_m: median(&mut dl),
        depth: median(&mut dz),
        betas: median(&mut db),
    })
}

/// Widens the 3D and shape gates to the video's jitter (see the module doc).
pub(crate) fn adapt(p: &mut Params, dets: &[Vec<Detection<'_>>]) {
    let Some(j) = jitter(dets) else { return };
    let lateral = JITTER_GATES * j.lateral_m;
    p.gate_m = p.gate_m.max(lateral);
    p.gate_depth = p.gate_depth.max(JITTER_GATES * j.depth);
    p.gate_betas = p.gate_betas.max(JITTER_GATES * j.betas);
    if lateral > p.stitch_gate_m {
        // Across a gap the extrapolated position drifts by more than the gate itself: the
        // camera position cannot tell people apart here, so the boxes and shapes decide.
        p.stitch_gate_m = f64::INFINITY;
    }
}

#[cfg(test)]
mod tests {
    use crate::record::{BoxSource, FrameRecord, FrameStatus, Observation};
    use crate::synth::Rng;
    use crate::{track, Settings};

    /// One person walking right, boxes smooth, but a camera position and shape that jump the
    /// way a weak model's do: metres of depth and shape units from frame to frame.
    fn noisy_walk(frames: usize, seed: u64) -> Vec<Option<FrameRecord>> {
        let mut rng = Rng::new(seed);
        (0..frames)
            .map(|f| {
                let x = 100.0 + 6.0 * f as f32;
                let z = 150.0 * (1.0 + 0.3 * rng.normal() as f32).max(0.2);
                let person = Observation {
                    bbox: [x, 100.0, x + 80.0, 300.0],
                    score: Some(0.9),
                    box_source: BoxSource::Detector,
                    global_orient: [1.0, 0.0, 0.0, 0.0],
                    body_pose: [[1.0, 0.0, 0.0, 0.0]; 23],
                    betas: [0.0; 10].map(|_: f32| 0.6 * rng.normal() as f32),
                    cam_t: [2.0 * rng.normal() as f32, 0.5, z],
                    focal_length: 5000.0,
                    keypoints_3d: [[0.0; 3]; 44],
                };
                Some(FrameRecord {
                    status: FrameStatus::Ok,
                    image_size: [1280, 720],
                    vertices: false,
                    people: vec![person],
                })
            })
            .collect()
    }

    #[test]
    fn a_person_with_jumpy_3d_but_steady_boxes_keeps_one_track() {
        for seed in 0..5 {
            let frames = noisy_walk(60, seed);
            let tracked = track(&frames, &Settings::default());
            assert_eq!(tracked.tracks.len(), 1, "seed {seed}: {:?}", tracked.tracks);
            assert_eq!(tracked.tracks[0].frames, 60);
        }
    }

    #[test]
    fn consistent_3d_leaves_the_gates_as_they_are() {
        // The same walk with a steady camera position: the measured jitter is tiny.
        let mut frames = noisy_walk(60, 1);
        for r in frames.iter_mut().flatten() {
            r.people[0].cam_t = [0.0, 0.5, 8.0];
            r.people[0].betas = [0.1; 10];
        }
        let dets: Vec<Vec<crate::assoc::Detection<'_>>> = frames
            .iter()
            .map(|r| r.as_ref().unwrap().people.iter().enumerate().collect())
            .collect();
        let j = super::jitter(&dets).expect("enough sure pairs");
        assert!(
            j.lateral_m < 1e-6 && j.depth < 1e-6 && j.betas < 1e-6,
            "{j:?}"
        );
        let mut p = crate::Params::new(&Settings::default());
        let before = (p.gate_m, p.gate_depth, p.gate_betas, p.stitch_gate_m);
        super::adapt(&mut p, &dets);
        assert_eq!(
            (p.gate_m, p.gate_depth, p.gate_betas, p.stitch_gate_m),
            before
        );
    }
}
