//! Tracking speed: a 10-minute video at 30 fps (18,000 frames, 3 people, no vertices) through
//! `track`, and one frame's record encoded and decoded.
//!
//! cargo bench -p hmr2-track --bench track

use criterion::{criterion_group, criterion_main, Criterion};
use hmr2_track::synth::{generate, SceneConfig};
use hmr2_track::{track, FrameRecord, Settings, Smoothing};
use std::hint::black_box;
use std::time::Duration;

fn video(frames: usize) -> Vec<Option<FrameRecord>> {
    generate(&SceneConfig {
        seed: 7,
        people: 3,
        frames,
        stay_in_view: true,
        ..SceneConfig::default()
    })
    .records
}

fn bench(c: &mut Criterion) {
    let records = video(18_000);
    let mut g = c.benchmark_group("track_10min_30fps_3people");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for smoothing in [Smoothing::None, Smoothing::Default] {
        let s = Settings {
            smoothing,
            ..Settings::default()
        };
        g.bench_function(format!("{smoothing:?}").to_lowercase(), |b| {
            b.iter(|| track(black_box(&records), &s))
        });
    }
    g.finish();

    let frame = records
        .iter()
        .flatten()
        .find(|r| r.people.len() == 3)
        .expect("a frame with 3 people")
        .clone();
    let bytes = frame.encode();
    let mut g = c.benchmark_group("record_3people");
    g.bench_function("encode", |b| b.iter(|| black_box(&frame).encode()));
    g.bench_function("decode", |b| {
        b.iter(|| FrameRecord::decode(black_box(&bytes)).expect("decodes"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
