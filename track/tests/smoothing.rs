//! Smoothing on known smooth motion plus the noise (rotations σ 5°, translation σ 2 cm):
//! much less jitter, no worse pose, no lag; outlier frames replaced; one shape per person.

use hmr2_track::eval::smooth_metrics;
use hmr2_track::synth::{generate, SceneConfig};
use hmr2_track::{track, Settings, Smoothing};

fn scene(seed: u64) -> hmr2_track::synth::Scene {
    generate(&SceneConfig {
        seed,
        people: 2,
        frames: 240,
        stay_in_view: true,
        ..SceneConfig::default()
    })
}

fn with(smoothing: Smoothing) -> Settings {
    Settings {
        smoothing,
        ..Settings::default()
    }
}

#[test]
fn default_smoothing_cuts_jitter_without_lag_or_pose_error() {
    for seed in 1..=4 {
        let s = scene(seed);
        let raw = smooth_metrics(&s, &track(&s.records, &with(Smoothing::None)));
        let default = smooth_metrics(&s, &track(&s.records, &with(Smoothing::Default)));
        let strong = smooth_metrics(&s, &track(&s.records, &with(Smoothing::Strong)));
        assert!(raw.samples > 400, "seed {seed}: {raw:?}");
        assert!(
            default.accel_mm * 3.0 <= raw.accel_mm,
            "seed {seed}: acceleration error {} → {}",
            raw.accel_mm,
            default.accel_mm
        );
        assert!(strong.accel_mm <= default.accel_mm, "seed {seed}");
        assert!(
            default.mpjpe_mm <= raw.mpjpe_mm,
            "seed {seed}: MPJPE {raw:?} → {default:?}"
        );
        assert!(default.cam_mm <= raw.cam_mm, "seed {seed}");
        assert!(
            default.rot_deg < raw.rot_deg,
            "seed {seed}: {raw:?} → {default:?}"
        );
        assert_eq!(default.lag_frames, 0, "seed {seed}: {default:?}");
        assert_eq!(strong.lag_frames, 0, "seed {seed}: {strong:?}");
    }
}

#[test]
fn lag_would_be_seen() {
    // The lag figure is not blind: the truth delayed by two frames reads as −2.
    let s = generate(
        &SceneConfig {
            seed: 2,
            people: 1,
            frames: 150,
            ..SceneConfig::default()
        }
        .noiseless(),
    );
    let mut tracked = track(&s.records, &with(Smoothing::None));
    let kps: Vec<Vec<_>> = tracked
        .frames
        .iter()
        .map(|f| f.iter().map(|p| p.obs.keypoints_3d).collect())
        .collect();
    for f in 2..tracked.frames.len() {
        for (k, p) in tracked.frames[f].iter_mut().enumerate() {
            if let Some(old) = kps[f - 2].get(k) {
                p.obs.keypoints_3d = *old;
            }
        }
    }
    assert_eq!(smooth_metrics(&s, &tracked).lag_frames, -2);
}

fn one_walker() -> hmr2_track::synth::Scene {
    generate(
        &SceneConfig {
            seed: 4,
            people: 1,
            frames: 120,
            ..SceneConfig::default()
        }
        .noiseless(),
    )
}

#[test]
fn outlier_frames_are_replaced_and_marked() {
    let mut s = one_walker();
    // Frame 60: the model put the person 0.4 m deeper and flipped the keypoints upside down.
    let bad = &mut s.records[60].as_mut().unwrap().people[0];
    bad.cam_t[2] += 0.4;
    for k in &mut bad.keypoints_3d {
        k[1] = -k[1];
    }
    let tracked = track(&s.records, &with(Smoothing::Default));
    assert_eq!(tracked.tracks.len(), 1);
    let p = &tracked.frames[60][0];
    assert!(p.interpolated);
    assert!(
        p.obs.score.is_some(),
        "a detection was there: its score stays"
    );
    let truth = &s.gt[60][0].obs;
    assert!(
        (p.obs.cam_t[2] - truth.cam_t[2]).abs() < 0.05,
        "{:?}",
        p.obs.cam_t
    );
    let flipped = p.obs.keypoints_3d.iter().zip(&truth.keypoints_3d);
    assert!(
        flipped
            .map(|(a, b)| (a[1] - b[1]).abs())
            .fold(0.0, f32::max)
            < 0.05
    );
    assert!(!tracked.frames[59][0].interpolated && !tracked.frames[61][0].interpolated);
    // Without smoothing, raw values stay, outlier included.
    let raw = track(&s.records, &with(Smoothing::None));
    assert!(!raw.frames[60][0].interpolated);
    assert_eq!(
        raw.frames[60][0].obs.cam_t,
        s.records[60].as_ref().unwrap().people[0].cam_t
    );
}

#[test]
fn implausible_jumps_are_refused_or_replaced() {
    let truth = |s: &hmr2_track::synth::Scene| s.gt[60][0].obs.cam_t;
    // 1 m sideways in one frame (30 m/s): the association refuses it, the frame is filled.
    let mut s = one_walker();
    s.records[60].as_mut().unwrap().people[0].cam_t[0] += 1.0;
    for smoothing in [Smoothing::None, Smoothing::Default] {
        let tracked = track(&s.records, &with(smoothing));
        assert_eq!(tracked.tracks.len(), 1);
        let p = &tracked.frames[60][0];
        assert!(p.interpolated, "{smoothing:?}");
        assert!(
            (p.obs.cam_t[0] - truth(&s)[0]).abs() < 0.05,
            "{smoothing:?}"
        );
    }
    // 1.5 m deeper: a model's depth can err that much, so the frame stays in the track, and
    // the smoothing replaces it as an outlier.
    let mut s = one_walker();
    s.records[60].as_mut().unwrap().people[0].cam_t[2] += 1.5;
    let tracked = track(&s.records, &with(Smoothing::Default));
    let p = &tracked.frames[60][0];
    assert!(p.interpolated && p.obs.score.is_some());
    assert!((p.obs.cam_t[2] - truth(&s)[2]).abs() < 0.05);
}

#[test]
fn one_shape_per_track_when_smoothing() {
    let s = scene(6);
    let tracked = track(&s.records, &with(Smoothing::Default));
    for t in &tracked.tracks {
        let betas: Vec<_> = tracked
            .frames
            .iter()
            .flatten()
            .filter(|p| p.track_id == t.track_id)
            .map(|p| p.obs.betas)
            .collect();
        assert!(
            betas.windows(2).all(|w| w[0] == w[1]),
            "track {}",
            t.track_id
        );
    }
    // The shape is the person's (noise σ 0.1 per coefficient around the truth).
    let p = &tracked.frames[10][0];
    let truth = s.gt[10]
        .iter()
        .map(|g| &g.obs.betas)
        .min_by(|a, b| {
            let d = |x: &[f32; 10]| -> f32 {
                x.iter()
                    .zip(&p.obs.betas)
                    .map(|(u, v)| (u - v).powi(2))
                    .sum()
            };
            d(a).total_cmp(&d(b))
        })
        .unwrap();
    for (a, b) in truth.iter().zip(&p.obs.betas) {
        assert!((a - b).abs() < 0.1, "{truth:?} vs {:?}", p.obs.betas);
    }
}

#[test]
fn rotations_near_a_half_turn_are_smoothed_not_cancelled() {
    // The root is turned about 180° (standing up in camera space): with w ≥ 0 in every record,
    // its quaternion changes sign from frame to frame. Averaging those as they come would
    // cancel them; the output root must stay near the truth.
    let s = generate(&SceneConfig {
        seed: 12,
        people: 1,
        frames: 150,
        stay_in_view: true,
        ..SceneConfig::default()
    });
    let roots: Vec<[f32; 4]> = s
        .records
        .iter()
        .flatten()
        .filter_map(|r| r.people.first().map(|p| p.global_orient))
        .collect();
    let flips = roots
        .windows(2)
        .filter(|w| w[0].iter().zip(&w[1]).map(|(a, b)| a * b).sum::<f32>() < 0.0)
        .count();
    assert!(flips >= 10, "{flips} sign flips");
    let tracked = track(&s.records, &with(Smoothing::Strong));
    let (mut worst, mut sum, mut n) = (0.0f64, 0.0f64, 0usize);
    for (g, h) in s.gt.iter().zip(&tracked.frames) {
        if let (Some(g), Some(h)) = (g.first(), h.first()) {
            let dot: f32 = g
                .obs
                .global_orient
                .iter()
                .zip(&h.obs.global_orient)
                .map(|(a, b)| a * b)
                .sum();
            let angle = 2.0 * f64::from(dot.abs().min(1.0)).acos().to_degrees();
            worst = worst.max(angle);
            sum += angle;
            n += 1;
        }
    }
    // The records' root is off by 8° on average (5° per axis); cancelled quaternions would be
    // off by up to 180°.
    assert!(n > 100);
    assert!(
        sum / (n as f64) < 5.0,
        "root off by {}° on average",
        sum / n as f64
    );
    assert!(worst < 20.0, "root off by up to {worst}°");
}
