//! Tracking and smoothing figures on synthetic scenes (docs/tracking.md).
//!
//! cargo run --release -p hmr2-track --example eval -- [--seeds N] [--out DIR]
//!
//! Tracking: seeds 1..=N × 2–5 people, 300 frames at 30 fps, the noise (box σ 3 px,
//! 5 % missed, 2 % false positives, rotations σ 5°, translation σ 2 cm); IDF1, ID switches and
//! MOTA per people count. With `--out`, writes `gt-<people>-<seed>.txt` and
//! `hyp-<people>-<seed>.txt` (MOT challenge format) for `scripts/track_eval.py`.
//! Smoothing: scenes of 3 people through `smoothing = none | default | strong`; with `--sweep`,
//! also a range of Gaussian σ.

use hmr2_track::eval::{mot_frames, mot_metrics, mot_text, smooth_metrics};
use hmr2_track::synth::{generate, generate_with, Rng, SceneConfig, Walker};
use hmr2_track::{track, track_with_sigma, Settings, Smoothing};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let sweep = args.iter().any(|a| a == "--sweep");
    let seeds: u64 = arg("--seeds").and_then(|s| s.parse().ok()).unwrap_or(20);
    let out = arg("--out");
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).expect("create --out");
    }
    println!("tracking (smoothing = default, max_gap_s = 1.0), seeds 1..={seeds}");
    println!("people | person-frames | IDF1   | IDSW | IDSW/1000 | MOTA");
    let (mut all_frames, mut all_sw, mut all_tp, mut all_len) = (0u64, 0u64, 0u64, 0u64);
    for people in 2..=5 {
        let (mut frames, mut sw, mut tp, mut len, mut errors) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for seed in 1..=seeds {
            let cfg = SceneConfig {
                seed,
                people,
                ..SceneConfig::default()
            };
            let scene = generate(&cfg);
            let tracked = track(&scene.records, &Settings::default());
            let (gt, hyp) = mot_frames(&scene, &tracked);
            let m = mot_metrics(&gt, &hyp);
            frames += m.gt_objects;
            sw += m.id_switches;
            tp += m.idtp;
            len += 2 * m.idtp + m.idfp + m.idfn;
            errors += m.misses + m.false_positives + m.id_switches;
            if let Some(dir) = &out {
                std::fs::write(format!("{dir}/gt-{people}-{seed}.txt"), mot_text(&gt)).unwrap();
                std::fs::write(format!("{dir}/hyp-{people}-{seed}.txt"), mot_text(&hyp)).unwrap();
                println!(
                    "  file {people}-{seed}: idf1 {} idsw {} mota {}",
                    m.idf1, m.id_switches, m.mota
                );
            }
        }
        println!(
            "{people:6} | {frames:13} | {:.4} | {sw:4} | {:9.2} | {:.4}",
            2.0 * tp as f64 / len as f64,
            1000.0 * sw as f64 / frames as f64,
            1.0 - errors as f64 / frames as f64
        );
        all_frames += frames;
        all_sw += sw;
        all_tp += tp;
        all_len += len;
    }
    println!(
        "   all | {all_frames:13} | {:.4} | {all_sw:4} | {:9.2} |",
        2.0 * all_tp as f64 / all_len as f64,
        1000.0 * all_sw as f64 / all_frames as f64
    );
    println!();
    println!("max_gap_s, 2–5 people, seeds 1..={seeds}");
    println!("max_gap_s | IDF1   | IDSW | IDSW/1000");
    for max_gap_s in [0.0, 0.2, 0.5, 1.0, 2.0] {
        let (mut frames, mut sw, mut tp, mut len) = (0u64, 0u64, 0u64, 0u64);
        for seed in 1..=seeds {
            for people in 2..=5 {
                let cfg = SceneConfig {
                    seed,
                    people,
                    ..SceneConfig::default()
                };
                let scene = generate(&cfg);
                let settings = Settings {
                    max_gap_s,
                    ..Settings::default()
                };
                let (gt, hyp) = mot_frames(&scene, &track(&scene.records, &settings));
                let m = mot_metrics(&gt, &hyp);
                frames += m.gt_objects;
                sw += m.id_switches;
                tp += m.idtp;
                len += 2 * m.idtp + m.idfp + m.idfn;
            }
        }
        println!(
            "{max_gap_s:9.1} | {:.4} | {sw:4} | {:9.2}",
            2.0 * tp as f64 / len as f64,
            1000.0 * sw as f64 / frames as f64
        );
    }
    println!();
    println!("harder conditions, 2–5 people, seeds 1..={seeds}");
    println!("condition                           | IDF1   | IDSW | IDSW/1000");
    let conditions = [
        (
            "15 % missed, 10 % false positives",
            SceneConfig {
                miss_rate: 0.15,
                false_positive_rate: 0.1,
                ..SceneConfig::default()
            },
        ),
        (
            "10 fps (100 frames)",
            SceneConfig {
                fps: 10.0,
                frames: 100,
                ..SceneConfig::default()
            },
        ),
        (
            "5 % error + 5 % missing frames",
            SceneConfig {
                error_rate: 0.05,
                missing_rate: 0.05,
                ..SceneConfig::default()
            },
        ),
        (
            "depth σ 5 % of the depth",
            SceneConfig {
                depth_sigma_rel: 0.05,
                ..SceneConfig::default()
            },
        ),
        (
            "depth σ 10 % of the depth",
            SceneConfig {
                depth_sigma_rel: 0.1,
                ..SceneConfig::default()
            },
        ),
        (
            "depth σ 20 % of the depth",
            SceneConfig {
                depth_sigma_rel: 0.2,
                ..SceneConfig::default()
            },
        ),
        (
            "rotations σ 10°, translation σ 5 cm",
            SceneConfig {
                rot_sigma_deg: 10.0,
                trans_sigma_m: 0.05,
                ..SceneConfig::default()
            },
        ),
    ];
    for (name, base) in conditions {
        let (mut frames, mut sw, mut tp, mut len) = (0u64, 0u64, 0u64, 0u64);
        for seed in 1..=seeds {
            for people in 2..=5 {
                let cfg = SceneConfig {
                    seed,
                    people,
                    ..base.clone()
                };
                let scene = generate(&cfg);
                let settings = Settings {
                    fps: cfg.fps,
                    ..Settings::default()
                };
                let (gt, hyp) = mot_frames(&scene, &track(&scene.records, &settings));
                let m = mot_metrics(&gt, &hyp);
                frames += m.gt_objects;
                sw += m.id_switches;
                tp += m.idtp;
                len += 2 * m.idtp + m.idfp + m.idfn;
            }
        }
        println!(
            "{name:35} | {:.4} | {sw:4} | {:9.2}",
            2.0 * tp as f64 / len as f64,
            1000.0 * sw as f64 / frames as f64
        );
    }
    println!();
    println!(
        "close encounters: 2 people, near one at 5 m walking right at 1 m/s, seeds 1..={seeds}"
    );
    println!(
        "other person                                         | hidden frames | IDF1   | IDSW"
    );
    let encounters = [
        ("5.4 m, walking left 1 m/s, same shape", 5.4, -1.0, true),
        ("5.2 m, walking left 0.5 m/s, same shape", 5.2, -0.5, true),
        ("5.2 m, walking left 0.5 m/s, own shape", 5.2, -0.5, false),
        (
            "5.4 m, walking right 0.3 m/s (overtaken), same shape",
            5.4,
            0.3,
            true,
        ),
        (
            "5.4 m, walking right 0.3 m/s (overtaken), own shape",
            5.4,
            0.3,
            false,
        ),
    ];
    for (name, depth, velocity, same_shape) in encounters {
        let (mut hidden, mut sw, mut tp, mut len) = (0usize, 0u64, 0u64, 0u64);
        for seed in 1..=seeds {
            let cfg = SceneConfig {
                seed,
                frames: 240,
                ..SceneConfig::default()
            };
            let mut rng = Rng::new(seed);
            let near = Walker::straight(0, -2.5, 5.0, 1.0, &mut rng);
            let x0 = if velocity > 0.0 { -1.0 } else { 2.5 };
            let mut other = Walker::straight(0, x0, depth, velocity, &mut rng);
            if same_shape {
                other.betas = near.betas;
            }
            let scene = generate_with(&cfg, vec![near, other]);
            hidden += scene.gt.iter().flatten().filter(|p| p.hidden).count();
            let (gt, hyp) = mot_frames(&scene, &track(&scene.records, &Settings::default()));
            let m = mot_metrics(&gt, &hyp);
            sw += m.id_switches;
            tp += m.idtp;
            len += 2 * m.idtp + m.idfp + m.idfn;
        }
        println!(
            "{name:52} | {hidden:13} | {:.4} | {sw:4}",
            2.0 * tp as f64 / len as f64
        );
    }
    println!();
    println!("smoothing, same scenes (3 people), seeds 1..={seeds}");
    println!(
        "smoothing | MPJPE mm | accel err mm/frame² | cam_t err mm | rotation err ° | lag frames"
    );
    for smoothing in [Smoothing::None, Smoothing::Default, Smoothing::Strong] {
        let (mut mpjpe, mut accel, mut cam, mut rot, mut lags) = (0.0, 0.0, 0.0, 0.0, Vec::new());
        for seed in 1..=seeds {
            let cfg = SceneConfig {
                seed,
                people: 3,
                ..SceneConfig::default()
            };
            let scene = generate(&cfg);
            let settings = Settings {
                smoothing,
                ..Settings::default()
            };
            let m = smooth_metrics(&scene, &track(&scene.records, &settings));
            mpjpe += m.mpjpe_mm / seeds as f64;
            accel += m.accel_mm / seeds as f64;
            cam += m.cam_mm / seeds as f64;
            rot += m.rot_deg / seeds as f64;
            lags.push(m.lag_frames);
        }
        lags.sort_unstable();
        println!(
            "{:9} | {mpjpe:8.1} | {accel:19.1} | {cam:12.1} | {rot:14.2} | {}..={}",
            format!("{smoothing:?}").to_lowercase(),
            lags[0],
            lags[lags.len() - 1]
        );
    }
    if sweep {
        println!();
        println!("σ sweep (seconds), same scenes");
        println!("sigma_s | MPJPE mm | accel err mm/frame² | cam_t err mm");
        for sigma in [0.0, 0.02, 0.033, 0.05, 0.067, 0.1, 0.133, 0.2] {
            let (mut mpjpe, mut accel, mut cam) = (0.0, 0.0, 0.0);
            for seed in 1..=seeds {
                let cfg = SceneConfig {
                    seed,
                    people: 3,
                    ..SceneConfig::default()
                };
                let scene = generate(&cfg);
                let tracked = track_with_sigma(&scene.records, &Settings::default(), sigma);
                let m = smooth_metrics(&scene, &tracked);
                mpjpe += m.mpjpe_mm / seeds as f64;
                accel += m.accel_mm / seeds as f64;
                cam += m.cam_mm / seeds as f64;
            }
            println!("{sigma:7.3} | {mpjpe:8.1} | {accel:19.1} | {cam:12.1}");
        }
    }
}
