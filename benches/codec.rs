//! Micro-benchmarks of the wire contract (`hmr2-client`): parsing a job (`Job::parse`) and
//! encoding a result (`JobResult::to_json`). Run with `cargo bench --bench codec` (add `-- parse` etc. to filter).
//!
//! Jobs: a 1280×720 frame's worth of base64 (~250 KB) inside the JSON, the same job sending the
//! bytes in the `image` field (small JSON), and a job with three boxes. Results: one person and
//! three people, each with and without the 6890 vertices, with realistic (non-round) values so
//! the float formatting costs what it costs in production.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hmr2_client::{Job, JobResult, Person, Status, Timings, VERSION};
use hmr2_worker::config::Config;
use std::hint::black_box;
use std::time::Duration;

/// Deterministic pseudo-random floats in `[lo, hi)`.
struct Values(u64);

impl Values {
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let u = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    fn mat3(&mut self) -> [[f32; 3]; 3] {
        [(); 3].map(|_| [(); 3].map(|_| self.next(-1.0, 1.0)))
    }
}

fn person(v: &mut Values, vertices: bool) -> Person {
    let x1 = v.next(0.0, 900.0);
    let y1 = v.next(0.0, 300.0);
    Person {
        bbox: [x1, y1, x1 + v.next(100.0, 300.0), y1 + v.next(200.0, 400.0)],
        box_source: hmr2_client::BoxSource::Detector,
        score: Some(v.next(0.5, 1.0)),
        box_center: [v.next(0.0, 1280.0), v.next(0.0, 720.0)],
        box_size: v.next(200.0, 600.0),
        pred_cam: [v.next(0.5, 1.2), v.next(-0.1, 0.1), v.next(-0.1, 0.1)],
        pred_cam_t_full: [v.next(-2.0, 2.0), v.next(-1.0, 1.0), v.next(20.0, 60.0)],
        focal_length: 25_000.0,
        global_orient: v.mat3(),
        body_pose: (0..23).map(|_| v.mat3()).collect(),
        betas: (0..10).map(|_| v.next(-2.0, 2.0)).collect(),
        keypoints_3d: (0..44)
            .map(|_| [v.next(-0.8, 0.8), v.next(-1.0, 1.0), v.next(-0.3, 0.3)])
            .collect(),
        keypoints_2d: (0..44)
            .map(|_| [v.next(0.0, 1280.0), v.next(0.0, 720.0)])
            .collect(),
        vertices: vertices.then(|| {
            (0..6890)
                .map(|_| [v.next(-0.8, 0.8), v.next(-1.0, 1.0), v.next(-0.3, 0.3)])
                .collect()
        }),
    }
}

fn result(people: usize, vertices: bool) -> JobResult {
    let mut v = Values(42);
    JobResult {
        v: VERSION,
        job_id: Some("video-8f3a:000123".into()),
        entry_id: "1732811234567-0".into(),
        video_id: Some("video-8f3a".into()),
        frame_number: Some(123),
        status: Status::Ok,
        error: None,
        image_size: Some([1280, 720]),
        people: (0..people).map(|_| person(&mut v, vertices)).collect(),
        detected: None,
        warnings: Vec::new(),
        timings_ms: Timings {
            queue_wait: 12.345,
            decode: 4.321,
            inference: 8.765,
            total: 15.678,
        },
        worker: "gpu-node-7/4242".into(),
        device: "cuda:0".into(),
        model: "hmr2 full bf16".into(),
    }
}

fn jobs() -> Vec<(&'static str, Vec<u8>, bool)> {
    use base64::Engine;
    // The size of a 720p q90 JPEG; parse never decodes the base64, only carries the string.
    let image: Vec<u8> = (0..190_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
    let base = Job::new("video-8f3a:000123").video("video-8f3a", 123);
    let with_b64 = base.clone().image_base64(b64);
    let three = base
        .clone()
        .boxes(vec![
            [100.5, 150.25, 300.0, 700.0],
            [560.0, 200.0, 760.75, 620.0],
            [900.0, 50.0, 1250.0, 710.0],
        ])
        .vertices(true);
    vec![
        ("base64_frame", with_b64.to_json().into_bytes(), false),
        ("raw_image_field", base.to_json().into_bytes(), true),
        ("raw_three_boxes", three.to_json().into_bytes(), true),
    ]
}

fn bench_parse(c: &mut Criterion) {
    let limits = Config::defaults().limits.job();
    let mut g = c.benchmark_group("parse");
    for (name, raw, has_image) in jobs() {
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| Job::parse(black_box(&raw), has_image, &limits).unwrap())
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("to_json");
    for (name, people, vertices) in [
        ("one_person", 1, false),
        ("one_person_vertices", 1, true),
        ("three_people", 3, false),
        ("three_people_vertices", 3, true),
    ] {
        let r = result(people, vertices);
        let len = r.to_json().len();
        eprintln!("to_json/{name}: {} KB", len / 1024);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| b.iter(|| black_box(&r).to_json()));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_parse, bench_encode
}
criterion_main!(benches);
