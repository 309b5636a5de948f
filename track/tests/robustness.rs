//! `track` never panics, whatever it is given, and keeps its output's shape.

use hmr2_track::synth::{generate, Rng, SceneConfig};
use hmr2_track::{track, BoxSource, FrameRecord, FrameStatus, Observation, Settings, Smoothing};
use proptest::prelude::*;

fn float() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -5.0f32..5.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(0.0f32),
        1 => -1e30f32..1e30,
        1 => Just(f32::MAX),
        1 => Just(-f32::MAX),
    ]
}

fn person() -> impl Strategy<Value = Observation> {
    (
        prop::array::uniform4(0.0f32..500.0),
        prop::option::of(float()),
        float(),
        prop::collection::vec(float(), 4 + 23 * 4 + 10 + 3 + 44 * 3),
    )
        .prop_map(|(b, score, focal, v)| {
            let mut it = v.into_iter();
            let mut next = || it.next().unwrap_or(0.0);
            Observation {
                bbox: [b[0], b[1], b[0] + b[2], b[1] + b[3]],
                score,
                box_source: BoxSource::Detector,
                global_orient: [next(), next(), next(), next()],
                body_pose: std::array::from_fn(|_| [next(), next(), next(), next()]),
                betas: std::array::from_fn(|_| next()),
                cam_t: [next(), next(), next()],
                focal_length: focal,
                keypoints_3d: std::array::from_fn(|_| [next(), next(), next()]),
            }
        })
}

fn frame() -> impl Strategy<Value = Option<FrameRecord>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(FrameRecord {
            status: FrameStatus::Error { code: "x".into(), message: "y".into() },
            image_size: [0, 0],
            vertices: false,
            people: vec![],
        })),
        6 => prop::collection::vec(person(), 0..4).prop_map(|people| Some(FrameRecord {
            status: FrameStatus::Ok,
            image_size: [640, 480],
            vertices: false,
            people,
        })),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![
            Just(30.0),
            Just(1e-9),
            Just(1e9),
            Just(0.0),
            Just(-5.0),
            Just(f64::NAN),
            0.5f64..240.0
        ],
        prop_oneof![
            Just(1.0),
            Just(0.0),
            Just(-1.0),
            Just(f64::INFINITY),
            Just(f64::NAN),
            0.0f64..5.0
        ],
        prop_oneof![
            Just(Smoothing::None),
            Just(Smoothing::Default),
            Just(Smoothing::Strong)
        ],
    )
        .prop_map(|(fps, max_gap_s, smoothing)| Settings {
            fps,
            max_gap_s,
            smoothing,
        })
}

/// A synthetic scene whose numbers are now and then replaced by bad ones.
fn corrupted_scene(
    seed: u64,
    frames: usize,
    people: usize,
    bad_rate: f64,
) -> Vec<Option<FrameRecord>> {
    let mut records = generate(&SceneConfig {
        seed,
        frames,
        people,
        error_rate: 0.05,
        missing_rate: 0.05,
        ..SceneConfig::default()
    })
    .records;
    let mut rng = Rng::new(seed);
    let bad = [f32::NAN, f32::INFINITY, -f32::INFINITY, f32::MAX, 1e30, 0.0];
    for rec in records.iter_mut().flatten() {
        for o in &mut rec.people {
            if !rng.chance(bad_rate) {
                continue;
            }
            let v = bad[(rng.next_u64() % bad.len() as u64) as usize];
            match rng.next_u64() % 6 {
                0 => o.bbox[(rng.next_u64() % 4) as usize] = v,
                1 => o.cam_t[(rng.next_u64() % 3) as usize] = v,
                2 => o.global_orient = [v; 4],
                3 => o.body_pose[(rng.next_u64() % 23) as usize][0] = v,
                4 => o.keypoints_3d[(rng.next_u64() % 44) as usize][1] = v,
                _ => o.score = Some(v),
            }
        }
    }
    records
}

fn check(frames: &[Option<FrameRecord>], s: &Settings) -> Result<(), TestCaseError> {
    {
        let out = track(frames, s);
        prop_assert_eq!(out.frames.len(), frames.len());
        for (f, people) in out.frames.iter().enumerate() {
            let ok = matches!(&frames[f], Some(r) if r.status == FrameStatus::Ok);
            prop_assert!(ok || people.is_empty());
            prop_assert!(people.windows(2).all(|w| w[0].track_id < w[1].track_id));
            for p in people {
                let o = &p.obs;
                let numbers = o
                    .bbox
                    .iter()
                    .chain(&o.global_orient)
                    .chain(o.body_pose.iter().flatten())
                    .chain(&o.betas)
                    .chain(&o.cam_t)
                    .chain([&o.focal_length])
                    .chain(o.keypoints_3d.iter().flatten());
                for v in numbers {
                    prop_assert!(v.is_finite(), "{:?}", o);
                }
            }
        }
        for (k, t) in out.tracks.iter().enumerate() {
            prop_assert_eq!(t.track_id as usize, k + 1);
            let n = out
                .frames
                .iter()
                .flatten()
                .filter(|p| p.track_id == t.track_id)
                .count();
            prop_assert_eq!(t.frames as usize, n);
            prop_assert!(t.first_frame <= t.last_frame);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn garbage_never_panics(frames in prop::collection::vec(frame(), 0..40), s in settings()) {
        check(&frames, &s)?;
    }

    #[test]
    fn corrupted_scenes_never_panic(
        seed in any::<u64>(),
        frames in 1usize..120,
        people in 0usize..4,
        bad_rate in 0.0f64..0.3,
        s in settings(),
    ) {
        check(&corrupted_scene(seed, frames, people, bad_rate), &s)?;
    }
}

#[test]
fn empty_and_single_frame_videos() {
    assert_eq!(track(&[], &Settings::default()).frames.len(), 0);
    let one = Some(FrameRecord {
        status: FrameStatus::Ok,
        image_size: [640, 480],
        vertices: false,
        people: vec![],
    });
    let out = track(&[one, None], &Settings::default());
    assert_eq!(out.frames.len(), 2);
    assert!(out.tracks.is_empty());
}

#[test]
fn bad_numbers_are_ignored_and_the_rest_tracked() {
    for seed in 1..=5 {
        let clean = track(&corrupted_scene(seed, 200, 3, 0.0), &Settings::default());
        let bad = track(&corrupted_scene(seed, 200, 3, 0.1), &Settings::default());
        assert!(!clean.tracks.is_empty());
        assert_eq!(bad.tracks.len(), clean.tracks.len(), "seed {seed}");
        check(&corrupted_scene(seed, 200, 3, 0.1), &Settings::default()).unwrap();
    }
}
