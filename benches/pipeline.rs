//! Micro-benchmarks of the CPU side of a frame: base64, JPEG/PNG decoding (full and DCT-scaled),
//! the HMR2 crop, and the detector's letterbox against other resizers. Run with `cargo bench --bench pipeline` (add `-- decode` etc. to filter).
//!
//! Frames are synthetic but not flat (gradients, waves, edges and noise), 1280×720, JPEG quality
//! 90, so their size (~150–250 KB) and decode cost are those of real video frames. The issue-6
//! target compares `frame/*` (everything the worker does to a frame on the CPU) with
//! `decode/jpeg_full` (the raw decode rate of the same frame). Criterion measures wall time:
//! jpeg-decoder (`decode/jpeg_1_*`, used only for DCT-scaled decoding) runs part of each decode
//! on helper threads, so its CPU cost is higher than its time here.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmr2_worker::image::{
    crop_box, crop_into, decode, decode_base64, full_frame_box, jpeg_scale_for, letterbox, probe,
    Limits, Pixels, CROP_BYTES,
};
use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

const W: u32 = 1280;
const H: u32 = 720;
const LIMITS: Limits = Limits {
    max_image_bytes: 64 << 20,
    max_pixels: 40_000_000,
};

/// A synthetic 1280×720 frame: smooth gradients and waves (most of a video frame), a few hard
/// edges, and mild per-pixel noise (sensor grain), deterministic.
fn synthetic_frame() -> image::RgbImage {
    image::RgbImage::from_fn(W, H, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let n =
            (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)).wrapping_mul(2_654_435_761);
        let noise = (n >> 28) as f32 - 8.0;
        let wave = 40.0 * ((xf / 41.0).sin() * (yf / 29.0).cos());
        let disc = if (xf - 640.0).hypot(yf - 380.0) < 200.0 {
            70.0
        } else {
            0.0
        };
        let bars = if (x / 64) % 2 == 0 { 25.0 } else { -25.0 };
        let r = 40.0 + xf * 0.12 + wave + disc + noise;
        let g = 60.0 + yf * 0.2 - wave + bars + noise;
        let b = 120.0 + disc - bars + 0.5 * wave + noise;
        image::Rgb([r, g, b].map(|v| v.clamp(0.0, 255.0) as u8))
    })
}

struct Inputs {
    jpeg: Vec<u8>,
    png: Vec<u8>,
    jpeg_base64: String,
}

fn inputs() -> Inputs {
    let img = synthetic_frame();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .unwrap();
    let mut png = Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    use base64::Engine;
    let jpeg_base64 = base64::engine::general_purpose::STANDARD.encode(&jpeg);
    eprintln!(
        "frame: 1280x720, JPEG {} KB, PNG {} KB",
        jpeg.len() / 1024,
        png.get_ref().len() / 1024
    );
    Inputs {
        jpeg,
        png: png.into_inner(),
        jpeg_base64,
    }
}

fn decode_at(bytes: &[u8], scale: u32) -> Pixels {
    let info = probe(bytes, &LIMITS).unwrap();
    decode(bytes, &info, scale).unwrap()
}

fn bench_decode(c: &mut Criterion, inp: &Inputs) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    for scale in [1, 2, 4, 8] {
        let name = if scale == 1 {
            "jpeg_full".to_string()
        } else {
            format!("jpeg_1_{scale}")
        };
        g.bench_function(name, |b| b.iter(|| decode_at(black_box(&inp.jpeg), scale)));
    }
    // For comparison: jpeg-decoder at full size (it is used only for scaled decoding). It hands
    // rows to helper threads, so its wall time here understates its CPU time (~1.5× zune's).
    g.bench_function("jpeg_full_jpeg_decoder", |b| {
        b.iter(|| {
            jpeg_decoder::Decoder::new(black_box(inp.jpeg.as_slice()))
                .decode()
                .unwrap()
        })
    });
    g.bench_function("png_full", |b| b.iter(|| decode_at(black_box(&inp.png), 1)));
    g.bench_function("probe_jpeg", |b| {
        b.iter(|| probe(black_box(&inp.jpeg), &LIMITS).unwrap())
    });
    g.finish();
}

fn bench_base64(c: &mut Criterion, inp: &Inputs) {
    let mut g = c.benchmark_group("base64");
    g.throughput(Throughput::Bytes(inp.jpeg.len() as u64));
    g.bench_function("decode_frame", |b| {
        b.iter(|| decode_base64(black_box(&inp.jpeg_base64), 64 << 20).unwrap())
    });
    g.finish();
}

fn bench_crop(c: &mut Criterion, inp: &Inputs) {
    let full = decode_at(&inp.jpeg, 1);
    let half = decode_at(&inp.jpeg, 2);
    let whole = crop_box(full_frame_box(W, H));
    let person = crop_box([560.0, 200.0, 760.0, 620.0]); // 420 px tall: upsampled, no blur
    let big = crop_box([300.0, -100.0, 1000.0, 800.0]); // side 933: blurred at full resolution
    let mut out = vec![0u8; CROP_BYTES];
    let mut g = c.benchmark_group("crop");
    g.throughput(Throughput::Elements(1));
    for (name, frame, geom) in [
        ("whole_frame_full", &full, &whole),
        ("whole_frame_half", &half, &whole),
        ("large_box_full", &full, &big),
        ("person_box_full", &full, &person),
    ] {
        g.bench_with_input(
            BenchmarkId::from_parameter(name),
            &(frame, geom),
            |b, (f, gm)| b.iter(|| crop_into(black_box(f), gm, &mut out)),
        );
    }
    g.finish();
}

/// Everything the worker does to one JPEG frame on the CPU: probe, decode at the scale its
/// boxes allow, crop each box into the batch buffer.
fn bench_frame(c: &mut Criterion, inp: &Inputs) {
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    let cases: [(&str, Vec<[f32; 4]>); 3] = [
        ("no_boxes", vec![full_frame_box(W, H)]),
        ("one_person", vec![[560.0, 200.0, 760.0, 620.0]]),
        (
            "three_people",
            vec![
                [100.0, 150.0, 300.0, 700.0],
                [560.0, 200.0, 760.0, 620.0],
                [900.0, 50.0, 1250.0, 710.0],
            ],
        ),
    ];
    let mut batch = vec![0u8; CROP_BYTES * 3];
    for (name, boxes) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let info = probe(black_box(&inp.jpeg), &LIMITS).unwrap();
                let geoms: Vec<_> = boxes.iter().map(|&bx| crop_box(bx)).collect();
                let min = geoms.iter().map(|g| g.size).fold(f32::INFINITY, f32::min);
                let frame = decode(&inp.jpeg, &info, jpeg_scale_for(min)).unwrap();
                for (geom, slot) in geoms.iter().zip(batch.chunks_exact_mut(CROP_BYTES)) {
                    crop_into(&frame, geom, slot);
                }
            })
        });
    }
    g.finish();
}

/// The detector's letterbox of a decoded 1280×720 frame: the worker's SIMD convolution
/// (fast_image_resize, bilinear with a widening kernel) against the `image` crate's resize with
/// the same filter, and its nearest-neighbour resize (cheaper, but aliased: not used).
fn bench_letterbox(c: &mut Criterion, inp: &Inputs) {
    let frame = decode_at(&inp.jpeg, 1);
    let rgb = image::RgbImage::from_raw(W, H, frame.pixels.clone()).unwrap();
    let mut g = c.benchmark_group("letterbox");
    g.throughput(Throughput::Elements(1));
    for side in [320u32, 640] {
        g.bench_with_input(BenchmarkId::new("fir_bilinear", side), &side, |b, &s| {
            b.iter(|| black_box(letterbox(black_box(&frame), s)))
        });
        let (nw, nh) = (side, (H as f64 * side as f64 / W as f64).round() as u32);
        for (name, filter) in [
            ("image_triangle", image::imageops::FilterType::Triangle),
            ("image_nearest", image::imageops::FilterType::Nearest),
        ] {
            g.bench_with_input(BenchmarkId::new(name, side), &side, |b, &s| {
                b.iter(|| {
                    let small = image::imageops::resize(black_box(&rgb), nw, nh, filter);
                    let mut canvas = image::RgbImage::from_pixel(s, s, image::Rgb([114; 3]));
                    image::imageops::replace(&mut canvas, &small, 0, 0);
                    black_box(canvas)
                })
            });
        }
    }
    g.finish();
}

fn all(c: &mut Criterion) {
    let inp = inputs();
    bench_letterbox(c, &inp);
    bench_decode(c, &inp);
    bench_base64(c, &inp);
    bench_crop(c, &inp);
    bench_frame(c, &inp);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = all
}
criterion_main!(benches);
