//! Cross-check of the own MOT figures with py-motmetrics, the reference implementation.
//!
//! Writes MOT-challenge files for several scenes (the tracker's output, a tracker bridging
//! shorter gaps, and deliberately corrupted hypotheses with swapped ids, dropped, jittered and
//! false boxes), runs `scripts/track_eval.py` on them and asserts the same IDF1, ID switches and
//! MOTA. Needs the project's Python (`.venv/bin/python`, or `HMR2_TRACK_EVAL_PYTHON`) with
//! `motmetrics` installed; without it the test says why and checks nothing.

use hmr2_track::eval::{mot_frames, mot_metrics, mot_text, MotFrames};
use hmr2_track::synth::{generate, Rng, SceneConfig};
use hmr2_track::{track, Settings};
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let py = std::env::var_os("HMR2_TRACK_EVAL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    if !py.exists() {
        return Err(format!("no Python at {}", py.display()));
    }
    let ok = Command::new(&py)
        .args(["-c", "import motmetrics"])
        .output()
        .map_err(|e| format!("{}: {e}", py.display()))?;
    if !ok.status.success() {
        return Err(format!("motmetrics is not importable by {}", py.display()));
    }
    Ok(py)
}

/// Ground truth with ids swapped between two people now and then, boxes dropped, jittered
/// (some below IoU 0.5) and false ones added.
fn corrupted(gt: &MotFrames, seed: u64) -> MotFrames {
    let mut rng = Rng::new(seed);
    let mut swap = false;
    gt.iter()
        .map(|frame| {
            if rng.chance(0.02) {
                swap = !swap;
            }
            let mut out = Vec::new();
            for &(id, mut b) in frame {
                if rng.chance(0.1) {
                    continue;
                }
                b.x += 6.0 * rng.normal();
                b.y += 6.0 * rng.normal();
                let id = match (swap, id) {
                    (true, 1) => 2,
                    (true, 2) => 1,
                    _ => id,
                };
                out.push((id + 100, b));
            }
            if rng.chance(0.05) {
                let mut b = frame
                    .first()
                    .map(|p| p.1)
                    .unwrap_or(hmr2_track::eval::MotBox {
                        x: 0.0,
                        y: 0.0,
                        w: 50.0,
                        h: 100.0,
                    });
                b.x += 300.0;
                out.push((999, b));
            }
            out
        })
        .collect()
}

#[test]
fn own_figures_match_motmetrics() {
    let py = match python() {
        Ok(py) => py,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("hmr2-track-mot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cases = Vec::new();
    for seed in 1..=3 {
        for people in [3, 5] {
            let cfg = SceneConfig {
                seed,
                people,
                ..SceneConfig::default()
            };
            let scene = generate(&cfg);
            let (gt, hyp) = mot_frames(&scene, &track(&scene.records, &Settings::default()));
            let short = Settings {
                max_gap_s: 0.1,
                ..Settings::default()
            };
            let (_, hyp_short) = mot_frames(&scene, &track(&scene.records, &short));
            let bad = corrupted(&gt, seed);
            for (name, h) in [
                ("tracker", hyp),
                ("short-gap", hyp_short),
                ("corrupted", bad),
            ] {
                let stem = format!("{name}-{people}-{seed}");
                let (g_path, h_path) = (
                    dir.join(format!("gt-{stem}.txt")),
                    dir.join(format!("{stem}.txt")),
                );
                std::fs::write(&g_path, mot_text(&gt)).unwrap();
                std::fs::write(&h_path, mot_text(&h)).unwrap();
                cases.push((g_path, h_path, mot_metrics(&gt, &h)));
            }
        }
    }
    let mut cmd = Command::new(&py);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/track_eval.py"));
    for (g, h, _) in &cases {
        cmd.arg(g).arg(h);
    }
    let out = cmd.output().expect("run scripts/track_eval.py");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{text}");
    let mut switches_seen = 0;
    for ((_, h, own), line) in cases.iter().zip(&lines) {
        let field = |key: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line}"))
        };
        assert!(line.starts_with(&h.display().to_string()), "{line}");
        let case = h.file_name().unwrap().to_string_lossy();
        assert!(
            (field("idf1") - own.idf1).abs() < 1e-6,
            "{case}: {line} vs {own:?}"
        );
        assert_eq!(
            field("idsw") as u64,
            own.id_switches,
            "{case}: {line} vs {own:?}"
        );
        assert!(
            (field("mota") - own.mota).abs() < 1e-6,
            "{case}: {line} vs {own:?}"
        );
        assert_eq!(field("idtp") as u64, own.idtp, "{case}");
        switches_seen += own.id_switches;
    }
    // The comparison covered switches, not only perfect tracks.
    println!(
        "{} cases, {switches_seen} ID switches, same figures",
        cases.len()
    );
    assert!(switches_seen >= 10, "{switches_seen}");
}
