//! The Rust crop against the Python reference (`models/crop.py`, run with the checkout's
//! `.venv/bin/python`): same images, same boxes, byte-for-byte comparison within a bound.
//!
//! Bounds, PNG (full resolution on both sides): mean absolute difference ≤ 1.0 grey level and
//! max ≤ 2. Both sides use the same formulas, kernel radius and rounding (`floor(v + 0.5)`); the
//! only differences are precision: the reference computes in f64 from the f64 box, the worker in
//! f32 from `f32` box centres (≈1e-4 px at 1000 px, times edges of up to ~200 grey levels a pixel
//! in these textures, is < 0.05 level) with f32 blur accumulation (relative error ~1e-6). A value
//! landing next to a `.5` rounding boundary may round the other way: 1 level. The second level is
//! margin for the two effects adding up at a sharp edge.
//!
//! Bounds, JPEG decoded at a DCT scale (jpeg-decoder; the worker's path for boxes of 3072 px and
//! up) against the reference crop of the same JPEG decoded at full resolution (zune-jpeg, the
//! worker's decoder otherwise): mean ≤ 1.0 grey level, and max ≤ 24 over the output
//! pixels that sample at least `scale + 1` pixels inside the image (measured: means 0.61, 0.49,
//! 0.22, interior max 7, 4, 13). The scaled decode averages k×k blocks where the reference blurs
//! with a Gaussian, so single pixels on hard 8 px checker edges with per-pixel noise can differ
//! by several levels; along the image edge the fade to black is one *scaled* pixel wide instead
//! of one pixel, so the edge itself differs by design (up to ~100 levels there) and is excluded
//! from the max.

use hmr2_worker::image::{
    crop_box, crop_into, decode, jpeg_scale_for, probe, Limits, Pixels, CROP,
};
use std::path::{Path, PathBuf};
use std::process::Command;

const LIMITS: Limits = Limits {
    max_image_bytes: 64 << 20,
    max_pixels: 40_000_000,
};

/// A synthetic, textured picture: gradients, a diagonal wave, 8 px checks and per-pixel noise,
/// different for each `seed`.
fn textured(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(73_856_093)
            ^ y.wrapping_mul(19_349_663)
            ^ seed.wrapping_mul(83_492_791))
        .wrapping_mul(2_654_435_761);
        let noise = (n >> 27) as f64 - 16.0;
        let wave = 50.0 * ((x as f64 + 2.0 * y as f64) / 23.0 + seed as f64).sin();
        let check = if (x / 8 + y / 8 + seed) % 2 == 0 {
            60.0
        } else {
            -60.0
        };
        let r = x as f64 * 255.0 / w as f64 + noise;
        let g = 128.0 + wave + noise / 2.0;
        let b = y as f64 * 200.0 / h as f64 + check + 30.0;
        image::Rgb([r, g, b].map(|v| v.round().clamp(0.0, 255.0) as u8))
    })
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `python -m models.crop` and returns the crop and the box size it reports.
fn reference(image: &Path, b: [f64; 4]) -> (Vec<u8>, f64) {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup first",
        python.display()
    );
    let out = image.with_extension(format!("{}.rgb", box_suffix(b)));
    let boxes = format!("{},{},{},{}", b[0], b[1], b[2], b[3]);
    let run = Command::new(&python)
        .current_dir(&root)
        .args(["-m", "models.crop", "--image"])
        .arg(image)
        .arg(format!("--box={boxes}"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run the Python reference crop");
    assert!(
        run.status.success(),
        "models.crop failed for {boxes}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON on stdout");
    let bytes = std::fs::read(&out).expect("reference output");
    assert_eq!(bytes.len(), CROP * CROP * 3);
    (bytes, info["box_size"].as_f64().expect("box_size"))
}

fn box_suffix(b: [f64; 4]) -> String {
    b.iter()
        .map(|v| format!("{v}"))
        .collect::<Vec<_>>()
        .join("_")
        .replace(['.', '-'], "m")
}

/// The worker's crop of `bytes` decoded at `scale`.
fn ours(bytes: &[u8], b: [f64; 4], scale: u32) -> (Vec<u8>, f32, Pixels) {
    let info = probe(bytes, &LIMITS).expect("probe");
    let frame = decode(bytes, &info, scale).expect("decode");
    let geom = crop_box(b.map(|v| v as f32));
    let mut out = vec![0u8; CROP * CROP * 3];
    crop_into(&frame, &geom, &mut out);
    (out, geom.size, frame)
}

/// Mean and max absolute difference.
fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    let max = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| x.abs_diff(y))
        .max()
        .unwrap_or(0);
    (sum as f64 / a.len() as f64, max)
}

/// Max absolute difference over the output pixels that sample the image at least `scale + 1`
/// pixels from its edge: along the edge the fade to black is one *scaled* pixel wide, so it
/// differs by design.
fn interior_max_diff(a: &[u8], b: &[u8], bx: [f64; 4], scale: u32, w: u32, h: u32) -> u8 {
    let geom = crop_box(bx.map(|v| v as f32));
    let step = f64::from(geom.size) / CROP as f64;
    let margin = f64::from(scale + 1);
    let at = |c: f32, i: usize| f64::from(c) + (i as f64 - (CROP / 2) as f64) * step;
    let inside = |v: f64, len: u32| v >= margin && v <= f64::from(len) - 1.0 - margin;
    let mut max = 0;
    for i in 0..CROP {
        for j in 0..CROP {
            if inside(at(geom.center[0], j), w) && inside(at(geom.center[1], i), h) {
                for c in 0..3 {
                    let k = (i * CROP + j) * 3 + c;
                    max = max.max(a[k].abs_diff(b[k]));
                }
            }
        }
    }
    max
}

fn write_png(dir: &Path, name: &str, img: &image::RgbImage) -> PathBuf {
    let path = dir.join(name);
    img.save(&path).expect("write PNG");
    path
}

#[test]
fn crop_matches_the_python_reference_on_png() {
    let dir = tempfile::tempdir().unwrap();
    let images = [
        ("a.png", textured(640, 480, 1)),
        ("b.png", textured(1280, 720, 2)),
        ("c.png", textured(301, 517, 3)),
    ];
    let cases: &[(usize, [f64; 4], &str)] = &[
        (
            0,
            [200.0, 150.0, 300.0, 330.0],
            "inside, upsampled, no blur",
        ),
        (
            0,
            [100.0, 200.0, 400.0, 260.0],
            "wide 5:1 box, grown to 3:4",
        ),
        (0, [-80.0, -40.0, 200.0, 300.0], "partly outside (top left)"),
        (
            0,
            [0.0, 0.0, 640.0, 480.0],
            "whole frame, blurred (sigma 0.33)",
        ),
        (
            1,
            [0.0, 0.0, 1280.0, 720.0],
            "whole 720p frame, blurred (sigma 1.17)",
        ),
        (
            1,
            [600.0, -100.0, 1500.0, 900.0],
            "large, partly outside, blurred",
        ),
        (
            1,
            [640.3, 360.7, 660.9, 395.2],
            "tiny box, fractional coordinates",
        ),
        (
            1,
            [400.0, 60.0, 850.0, 660.0],
            "d just above 1.1 (kernel of radius 0)",
        ),
        (2, [10.0, 0.0, 290.0, 517.0], "tall box on a portrait image"),
        (
            2,
            [-500.0, -500.0, 800.0, 1000.0],
            "box much larger than the image",
        ),
        (2, [299.5, 515.0, 320.0, 540.0], "corner, mostly outside"),
    ];
    let paths: Vec<PathBuf> = images
        .iter()
        .map(|(name, img)| write_png(dir.path(), name, img))
        .collect();
    let mut failures = Vec::new();
    for &(i, b, what) in cases {
        let bytes = std::fs::read(&paths[i]).unwrap();
        let (want, ref_size) = reference(&paths[i], b);
        let (got, size, frame) = ours(&bytes, b, 1);
        assert_eq!(frame.scale, 1);
        assert!(
            (f64::from(size) - ref_size).abs() < 1e-3 * ref_size,
            "{what}: box size"
        );
        let (mean, max) = diff(&got, &want);
        eprintln!("png {what:45} box {b:?}: mean {mean:.4}, max {max}");
        if mean > 1.0 || max > 2 {
            failures.push(format!("{what} {b:?}: mean {mean:.4}, max {max}"));
        }
    }
    assert!(
        failures.is_empty(),
        "crops differ from the reference: {failures:#?}"
    );
}

#[test]
fn dct_scaled_jpeg_crop_stays_close_to_the_full_resolution_reference() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    // (frame, box, DCT scale measured, the scale the worker picks for that box)
    for (w, h, b, scale, policy) in [
        (1280, 720, [0.0, 0.0, 1280.0, 720.0], 2, 1),
        (1920, 1080, [0.0, 0.0, 1920.0, 1080.0], 2, 1),
        (1920, 1080, [-200.0, -300.0, 2120.0, 1380.0], 4, 4),
    ] {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&textured(w, h, 7))
            .unwrap();
        // The reference sees exactly the pixels our decoder produces at full resolution, so only
        // the DCT scaling is measured, not two JPEG decoders.
        let full = ours(&jpeg, b, 1).2;
        let full_img = image::RgbImage::from_raw(w, h, full.pixels).unwrap();
        let png = write_png(dir.path(), &format!("full{w}.png"), &full_img);
        let (want, ref_size) = reference(&png, b);
        assert_eq!(jpeg_scale_for(ref_size as f32), policy, "box {b:?}");
        let (got, _, frame) = ours(&jpeg, b, scale);
        assert_eq!(frame.scale, scale);
        let (mean, max) = diff(&got, &want);
        let inner = interior_max_diff(&got, &want, b, scale, w, h);
        eprintln!(
            "jpeg {w}x{h} box {b:?} at 1/{scale}: mean {mean:.4}, max {max}, interior max {inner}"
        );
        if mean > 1.0 || inner > 24 {
            failures.push(format!(
                "{w}x{h} {b:?} at 1/{scale}: mean {mean:.4}, max {inner}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "scaled crops too far from the reference: {failures:#?}"
    );
}
