//! Release-mode timing and memory of one long video (docs/tracking.md).
//!
//! cargo run --release -p hmr2-track --example speed -- [--frames N] [--people P]
//!
//! Synthesises the video (default 18,000 frames = 10 minutes at 30 fps, 3 people in view
//! throughout, no vertices), encodes every frame's record, decodes them back, tracks them with
//! each smoothing strength; prints wall times (one core: the crate spawns no threads), record
//! bytes per person, and the process's peak resident memory (Linux `VmHWM`) after each step.

use hmr2_track::synth::{generate, SceneConfig};
use hmr2_track::{track, FrameRecord, Settings, Smoothing};
use std::time::Instant;

/// A `/proc/self/status` figure (`VmHWM`: peak resident, `VmRSS`: resident now), MiB.
fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn peak_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Starts a new peak: the high-water mark is reset to the current resident size (Linux).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (frames, people) = (arg("--frames", 18_000), arg("--people", 3));
    let scene = generate(&SceneConfig {
        seed: 7,
        people,
        frames,
        stay_in_view: true,
        ..SceneConfig::default()
    });
    let persons: usize = scene.records.iter().flatten().map(|r| r.people.len()).sum();
    println!(
        "{frames} frames, {persons} person-frames; peak {:.0} MiB after synthesis",
        peak_mib()
    );

    let t = Instant::now();
    let encoded: Vec<Vec<u8>> = scene
        .records
        .iter()
        .flatten()
        .map(FrameRecord::encode)
        .collect();
    let enc = t.elapsed();
    let bytes: usize = encoded.iter().map(Vec::len).sum();
    let t = Instant::now();
    let decoded: Vec<Option<FrameRecord>> = encoded
        .iter()
        .map(|b| FrameRecord::decode(b).ok())
        .collect();
    let dec = t.elapsed();
    drop(scene);
    drop(encoded);
    println!(
        "records: {bytes} bytes ({:.0} per person-frame); encode {:.3} s, decode {:.3} s; peak {:.0} MiB",
        bytes as f64 / persons as f64,
        enc.as_secs_f64(),
        dec.as_secs_f64(),
        peak_mib()
    );
    for smoothing in [Smoothing::None, Smoothing::Default, Smoothing::Strong] {
        let s = Settings {
            smoothing,
            ..Settings::default()
        };
        reset_peak();
        let before = status_mib("VmRSS:");
        let t = Instant::now();
        let out = track(&decoded, &s);
        let secs = t.elapsed().as_secs_f64();
        let after = status_mib("VmRSS:");
        drop(out);
        println!(
            "track, smoothing = {:8}: {secs:.3} s; resident {before:.0} MiB before (the records), \
             peak {:.0} MiB during, {after:.0} MiB with the output",
            format!("{smoothing:?}").to_lowercase(),
            peak_mib(),
        );
    }
}
