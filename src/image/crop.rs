//! The HMR2.0 crop of a decoded [`Pixels`]: the box geometry ([`crop_box`], [`validate_box`]),
//! the anti-alias blur ([`blur_sigma`]) and the blurred bilinear resampling ([`crop_into`]),
//! with an AVX2 build of its inner loops. See the [module doc](super) for the conventions.

use super::decode::Pixels;
use super::{CROP, CROP_BYTES};
use crate::error::InputError;
use std::cell::RefCell;

/// The box aspect HMR2.0 was trained on (`BBOX_SHAPE = [192, 256]`), width over height.
const BOX_ASPECT: f32 = 192.0 / 256.0;

/// A box side may be at most this many times the image's longer side. Larger boxes can only be
/// mistakes, and they would make the anti-alias blur kernel (which grows with the box) needlessly
/// expensive.
pub const MAX_BOX_FACTOR: f64 = 8.0;

/// The square crop of one person box, in original-image pixels: the box grown to HMR2.0's 3:4
/// (w:h) aspect, then squared. `center` and `size` are also what the camera maths needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    /// Box centre `(cx, cy)`.
    pub center: [f32; 2],
    /// Side of the square crop (`box_size`): the grown box's height.
    pub size: f32,
}

/// The crop of a person box `[x1, y1, x2, y2]`: same centre, grown to 3:4 (w:h) without
/// shrinking either side, side = the longer of the grown sides.
pub fn crop_box(b: [f32; 4]) -> CropBox {
    let [x1, y1, x2, y2] = b;
    let (w, h) = (x2 - x1, y2 - y1);
    let (w, h) = if w > h * BOX_ASPECT {
        (w, w / BOX_ASPECT)
    } else {
        (h * BOX_ASPECT, h)
    };
    CropBox {
        center: [(x1 + x2) / 2.0, (y1 + y2) / 2.0],
        size: w.max(h),
    }
}

/// The whole frame as a box, for jobs without boxes.
pub fn full_frame_box(width: u32, height: u32) -> [f32; 4] {
    [0.0, 0.0, width as f32, height as f32]
}

/// Checks a job's box against its `width`×`height` image: finite numbers, `x2 > x1`, `y2 > y1`,
/// at least 1 px wide and high, at most [`MAX_BOX_FACTOR`] times the image's longer side, and
/// overlapping the frame (a box partly outside is fine: black is filled in). Anything else is
/// [`InputError::InvalidBox`] with a message saying exactly what is wrong.
pub fn validate_box(b: [f64; 4], width: u32, height: u32) -> Result<[f32; 4], InputError> {
    let [x1, y1, x2, y2] = b;
    let shown = format!("[{x1}, {y1}, {x2}, {y2}]");
    let fail = |why: String| Err(InputError::InvalidBox(format!("{shown}: {why}")));
    if b.iter().any(|v| !v.is_finite()) {
        return fail("coordinates must be finite numbers".into());
    }
    for (lo, hi, a, b, what) in [(x1, x2, "x1", "x2", "wide"), (y1, y2, "y1", "y2", "high")] {
        if hi <= lo {
            return fail(format!("{b} ({hi}) must be greater than {a} ({lo})"));
        }
        if hi - lo < 1.0 {
            return fail(format!(
                "box is {} px {what}; at least 1 px is needed",
                hi - lo
            ));
        }
    }
    let longest = MAX_BOX_FACTOR * f64::from(width.max(height));
    if x2 - x1 > longest || y2 - y1 > longest {
        return fail(format!(
            "box is larger than {MAX_BOX_FACTOR}× the {width}x{height} image's longer side"
        ));
    }
    if x2 <= 0.0 || y2 <= 0.0 || x1 >= f64::from(width) || y1 >= f64::from(height) {
        return fail(format!(
            "box lies entirely outside the {width}x{height} image"
        ));
    }
    Ok([x1 as f32, y1 as f32, x2 as f32, y2 as f32])
}

/// HMR2.0's anti-alias blur for a crop of side `box_size` (full-resolution pixels): `Some(sigma)`
/// when `d = box_size/256/2 > 1.1`, with `sigma = (d − 1)/2`, in full-resolution pixels.
///
/// On a frame decoded at `1/k`, [`crop_into`] blurs with `sigma / k` in the frame's own pixels:
/// the same filter width on the picture. (The DCT scaling already averages k×k blocks; still,
/// against the reference `sigma / k` is the closest of the candidates: see `BENCHMARKS.md`.)
pub fn blur_sigma(box_size: f64) -> Option<f64> {
    let d = box_size / CROP as f64 / 2.0;
    (d > 1.1).then(|| (d - 1.0) / 2.0)
}

/// The resampling of one crop axis: for each of the 256 output coordinates, `taps` weights on
/// consecutive source positions (the bilinear pair, each blurred by the Gaussian: `2r + 2` taps),
/// with the source indices already clamped into the image (the blur repeats edge pixels) and
/// made relative to `lo`, the first source index any nonzero weight reads.
#[derive(Default)]
struct AxisPlan {
    taps: usize,
    index: Vec<u32>,
    weight: Vec<f32>,
    lo: u32,
    hi: u32,
}

impl AxisPlan {
    /// Plans the samples `first + u·step` (u = 0..256) on an axis of `len` pixels, with the
    /// normalised Gaussian `kernel` (`[1.0]` for no blur). A bilinear tap outside the image is
    /// black, so its weight is dropped; blurred values inside the image read clamped neighbours.
    fn build(&mut self, first: f64, step: f64, len: u32, kernel: &[f32]) {
        let r = (kernel.len() / 2) as i64;
        let taps = kernel.len() + 1;
        let last = i64::from(len) - 1;
        self.taps = taps;
        self.index.clear();
        self.weight.clear();
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for u in 0..CROP {
            let x = first + u as f64 * step;
            let x0 = x.floor();
            let fx = (x - x0) as f32;
            // Far outside coordinates only need to stay outside; keep the arithmetic in range.
            let x0 = x0.clamp(-1e9, 1e9) as i64;
            let start = x0 - r;
            for m in 0..taps {
                let mut w = 0.0;
                if (0..=last).contains(&x0) && m < kernel.len() {
                    w += (1.0 - fx) * kernel[m];
                }
                if (0..=last).contains(&(x0 + 1)) && m >= 1 {
                    w += fx * kernel[m - 1];
                }
                let i = (start + m as i64).clamp(0, last.max(0));
                if w != 0.0 {
                    lo = lo.min(i);
                    hi = hi.max(i);
                }
                self.index.push(i as u32);
                self.weight.push(w);
            }
        }
        if lo > hi {
            (lo, hi) = (0, 0);
        }
        for (i, w) in self.index.iter_mut().zip(&self.weight) {
            // Zero weights may point anywhere; keep every index inside [lo, hi].
            *i = if *w == 0.0 { 0 } else { *i - lo as u32 };
        }
        (self.lo, self.hi) = (lo as u32, hi as u32);
    }

    /// The taps of output coordinate `u`: relative source indices and weights.
    fn at(&self, u: usize) -> (&[u32], &[f32]) {
        let s = u * self.taps..(u + 1) * self.taps;
        (&self.index[s.clone()], &self.weight[s])
    }
}

/// Reused per thread, so a crop allocates nothing once a thread has done one of its size.
#[derive(Default)]
struct Scratch {
    kernel: Vec<f32>,
    x: AxisPlan,
    y: AxisPlan,
    line: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Writes the 256×256 RGB crop of `geom` (original-image pixels) from `frame` into `out`
/// (`CROP_BYTES` long, a slot of the batch buffer): HMR2.0's anti-alias blur when the crop
/// shrinks the original image by more than 2.2× ([`blur_sigma`], divided by `frame.scale`),
/// bilinear sampling, black outside the image. A degenerate `geom` (non-finite, size ≤ 0) gives
/// a black crop.
///
/// Blur and bilinear interpolation are both linear and separable, so they are applied together:
/// each output pixel is a `(2r + 2)²` weighted sum of source pixels (`r` the kernel radius),
/// computed as a vertical pass over the sampled rows' source span, then a horizontal pass at the
/// sampled columns. Nothing outside the crop's source region is read or blurred.
///
/// # Panics
/// If `out` is not `CROP_BYTES` long or `frame.pixels` does not match its dimensions.
pub fn crop_into(frame: &Pixels, geom: &CropBox, out: &mut [u8]) {
    assert_eq!(out.len(), CROP_BYTES, "crop slot size");
    let (pw, ph) = (frame.pixels_width, frame.pixels_height);
    assert_eq!(
        frame.pixels.len(),
        pw as usize * ph as usize * 3,
        "frame pixel buffer"
    );
    let ok = geom.size > 0.0 && geom.size.is_finite() && geom.center.iter().all(|c| c.is_finite());
    if !ok || pw == 0 || ph == 0 {
        out.fill(0);
        return;
    }
    // Original pixel-index coordinate X maps to (X + 0.5)/k − 0.5 in the scaled frame, whose
    // pixel j covers original pixels [jk, (j+1)k).
    let k = f64::from(frame.scale.max(1));
    let step = f64::from(geom.size) / k / CROP as f64;
    let first = |c: f32| (f64::from(c) + 0.5) / k - 0.5 - (CROP / 2) as f64 * step;
    let sigma = blur_sigma(f64::from(geom.size)).map_or(0.0, |s| s / k);
    let radius = (4.0 * sigma + 0.5) as usize;
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        gaussian_kernel(sigma, radius, &mut s.kernel);
        s.x.build(first(geom.center[0]), step, pw, &s.kernel);
        s.y.build(first(geom.center[1]), step, ph, &s.kernel);
        resample(frame, s, out);
        if s.line.capacity() > SCRATCH_KEEP {
            s.line = Vec::new();
        }
    });
}

/// A line buffer larger than this (floats) is freed after use rather than kept per thread.
const SCRATCH_KEEP: usize = 1 << 20;

/// Applies the planned axes: for each output row, the weighted sum of its source rows over the
/// columns span `[x.lo, x.hi]`, then each output pixel from its weighted columns.
fn resample(frame: &Pixels, s: &mut Scratch, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { resample_avx2(frame, s, out) };
        return;
    }
    resample_portable(frame, s, out);
}

/// [`resample_portable`] compiled for AVX2: 8 float lanes instead of 4 in the row sums, where a
/// blurred crop spends most of its time; identical results (no FMA contraction either way).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resample_avx2(frame: &Pixels, s: &mut Scratch, out: &mut [u8]) {
    resample_portable(frame, s, out);
}

#[inline(always)]
fn resample_portable(frame: &Pixels, s: &mut Scratch, out: &mut [u8]) {
    let stride = frame.pixels_width as usize * 3;
    let (c_lo, span) = (s.x.lo as usize * 3, (s.x.hi - s.x.lo) as usize * 3 + 3);
    s.line.clear();
    s.line.resize(span, 0.0);
    for (v, orow) in out.chunks_exact_mut(CROP * 3).enumerate() {
        let (rows, wy) = s.y.at(v);
        if wy.iter().all(|&w| w == 0.0) {
            orow.fill(0);
            continue;
        }
        s.line.fill(0.0);
        let mut taps = rows.iter().zip(wy).filter(|(_, &w)| w != 0.0);
        let source = |row: u32| {
            let start = (row + s.y.lo) as usize * stride + c_lo;
            &frame.pixels[start..start + span]
        };
        // Two source rows per sweep over the line buffer: half the loads and stores of it.
        while let Some((&r0, &w0)) = taps.next() {
            let (r1, w1) = taps.next().map_or((r0, 0.0), |(&r, &w)| (r, w));
            for ((l, &p), &q) in s.line.iter_mut().zip(source(r0)).zip(source(r1)) {
                *l += w0 * f32::from(p) + w1 * f32::from(q);
            }
        }
        let taps = s.x.taps;
        let cols =
            s.x.index
                .chunks_exact(taps)
                .zip(s.x.weight.chunks_exact(taps));
        for (px, (cols, wx)) in orow.chunks_exact_mut(3).zip(cols) {
            let mut acc = [0f32; 3];
            for (&col, &w) in cols.iter().zip(wx) {
                let p = col as usize * 3;
                if let Some(src) = s.line.get(p..p + 3) {
                    acc[0] += w * src[0];
                    acc[1] += w * src[1];
                    acc[2] += w * src[2];
                }
            }
            px[0] = to_u8(acc[0]);
            px[1] = to_u8(acc[1]);
            px[2] = to_u8(acc[2]);
        }
    }
}

/// Normalised Gaussian weights on `-radius..=radius` (what scipy's `gaussian_filter1d` uses);
/// `[1.0]` for radius 0, i.e. no blur.
fn gaussian_kernel(sigma: f64, radius: usize, kernel: &mut Vec<f32>) {
    kernel.clear();
    if radius == 0 {
        kernel.push(1.0);
        return;
    }
    let r = radius as f64;
    let w: Vec<f64> = (0..=2 * radius)
        .map(|i| {
            let x = i as f64 - r;
            (-0.5 * x * x / (sigma * sigma)).exp()
        })
        .collect();
    let sum: f64 = w.iter().sum();
    kernel.extend(w.iter().map(|v| (v / sum) as f32));
}

/// Rounds to the nearest grey level, ties up (`floor(v + 0.5)`, as the reference), clamped to
/// 0..=255. (`as u8` truncates toward zero and saturates, which equals floor-then-clamp for
/// `v + 0.5 ≥ 0` and gives 0 below; `f32::floor` would be a libm call per channel here.)
#[inline]
fn to_u8(v: f32) -> u8 {
    (v + 0.5) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_support::mean_abs_diff;

    #[test]
    fn crop_box_grows_to_three_by_four() {
        // Already 3:4.
        assert_eq!(
            crop_box([10.0, 20.0, 40.0, 60.0]),
            CropBox {
                center: [25.0, 40.0],
                size: 40.0
            }
        );
        // Wide: height grows to w·4/3.
        let c = crop_box([0.0, 0.0, 1280.0, 720.0]);
        assert_eq!(c.center, [640.0, 360.0]);
        assert!((c.size - 1706.6666).abs() < 1e-2, "{c:?}");
        // Tall: the width grows, the side is the height.
        assert_eq!(crop_box([100.0, 0.0, 130.0, 200.0]).size, 200.0);
        // Square: height grows to 4/3 of the width.
        assert!((crop_box([0.0, 0.0, 300.0, 300.0]).size - 400.0).abs() < 1e-3);
    }

    #[test]
    fn box_validation() {
        let ok = validate_box([-50.0, 10.0, 100.5, 700.0], 1280, 720).unwrap();
        assert_eq!(ok, [-50.0, 10.0, 100.5, 700.0]);
        assert!(validate_box([0.0, 0.0, 1280.0, 720.0], 1280, 720).is_ok());
        let err = |b: [f64; 4]| match validate_box(b, 1280, 720) {
            Err(InputError::InvalidBox(m)) => m,
            other => panic!("{b:?}: expected invalid_box, got {other:?}"),
        };
        assert!(err([f64::NAN, 0.0, 10.0, 10.0]).contains("finite"));
        assert!(err([0.0, 0.0, f64::INFINITY, 10.0]).contains("finite"));
        assert!(err([0.0, f64::NEG_INFINITY, 10.0, 10.0]).contains("finite"));
        assert!(err([50.0, 0.0, 10.0, 10.0]).contains("x2 (10) must be greater than x1 (50)"));
        assert!(err([0.0, 30.0, 10.0, 20.0]).contains("y2 (20) must be greater than y1 (30)"));
        assert!(err([10.0, 0.0, 10.0, 10.0]).contains("must be greater"));
        assert!(err([10.0, 0.0, 10.5, 10.0]).contains("0.5 px wide"));
        assert!(err([0.0, 5.0, 10.0, 5.25]).contains("0.25 px high"));
        for outside in [
            [-100.0, 0.0, 0.0, 10.0],
            [1280.0, 0.0, 1300.0, 10.0],
            [0.0, -30.0, 10.0, -1.0],
            [0.0, 720.0, 10.0, 800.0],
        ] {
            assert!(
                err(outside).contains("entirely outside the 1280x720 image"),
                "{outside:?}"
            );
        }
        assert!(err([0.0, 0.0, 20_000.0, 10.0]).contains("larger than"));
    }

    fn crop(frame: &Pixels, b: [f32; 4]) -> Vec<u8> {
        let mut out = vec![1u8; CROP_BYTES];
        crop_into(frame, &crop_box(b), &mut out);
        out
    }

    fn constant_frame(w: u32, h: u32, v: u8) -> Pixels {
        Pixels::from_rgb(w, h, vec![v; (w * h * 3) as usize])
    }

    #[test]
    fn crop_of_a_constant_image_is_constant_inside_and_black_outside() {
        // Small box, no blur; large box, blurred: the image's value wherever the crop is inside.
        // Box [500, 500, 2500, 2500]: crop side 2667 (d = 5.2, sigma 2.1), inside the image.
        let f = constant_frame(3000, 3000, 100);
        assert!(crop(&f, [800.0, 600.0, 950.0, 800.0])
            .iter()
            .all(|&v| v == 100));
        assert!(crop(&f, [500.0, 500.0, 2500.0, 2500.0])
            .iter()
            .all(|&v| v == 100));

        // Box [-100, 0, 100, 100] on a 200×100 image: crop side 266.67 centred on (0, 50), so
        // output column u samples x = (u − 128)·1.0417 and row v samples y = 50 + (v − 128)·1.0417.
        let f = constant_frame(200, 100, 100);
        let out = crop(&f, [-100.0, 0.0, 100.0, 100.0]);
        let px = |u: usize, v: usize| out[(v * CROP + u) * 3];
        for v in 0..CROP {
            for u in 0..CROP {
                let (x, y) = (
                    (u as f64 - 128.0) * 1.041_67,
                    50.0 + (v as f64 - 128.0) * 1.041_67,
                );
                let inside = (0.0..=199.0).contains(&x) && (0.0..=99.0).contains(&y);
                let outside = x <= -1.0 || y <= -1.0 || x >= 200.0 || y >= 100.0;
                if inside {
                    assert_eq!(px(u, v), 100, "({u}, {v})");
                } else if outside {
                    assert_eq!(px(u, v), 0, "({u}, {v})");
                }
            }
        }
        assert!(out.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    }

    #[test]
    fn crop_geometry_follows_the_pixel_centre_convention() {
        // Grey value = x: a box of side 256 is a pure shift, output column u samples x = u − 32
        // (box [0, 0, 192, 256]: centre (96, 128), side 256).
        let f = Pixels::from_rgb(
            256,
            256,
            (0..256 * 256).flat_map(|i| [(i % 256) as u8; 3]).collect(),
        );
        let out = crop(&f, [0.0, 0.0, 192.0, 256.0]);
        for u in 0..CROP {
            let want = if u < 32 { 0 } else { (u - 32) as u8 };
            assert_eq!(out[(100 * CROP + u) * 3], want, "column {u}");
        }
        // A half-size box upsamples 2×: column u samples x = 48 + (u − 128)/2.
        let out = crop(&f, [0.0, 64.0, 96.0, 192.0]);
        for u in 0..CROP {
            let x = 48.0 + (u as f64 - 128.0) / 2.0;
            let want = x.max(0.0); // left of x = 0 the fade to black meets P(0) = 0
            assert!(
                (out[(7 * CROP + u) * 3] as f64 - want).abs() <= 0.5,
                "column {u}"
            );
        }
    }

    #[test]
    fn crop_of_a_dct_scaled_frame_matches_full_resolution() {
        // A smooth image decoded at 1/2 (here: averaged 2×2 by hand) crops like the full one.
        let (w, h) = (1280u32, 720u32);
        let val = |x: f64, y: f64| {
            [
                x * 0.15 + 20.0,
                y * 0.3 + 10.0,
                128.0 + 60.0 * (x / 97.0).sin(),
            ]
        };
        let full = Pixels::from_rgb(
            w,
            h,
            (0..w * h)
                .flat_map(|i| val((i % w) as f64, (i / w) as f64).map(|v| v.round() as u8))
                .collect(),
        );
        let (pw, ph) = (w / 2, h / 2);
        let half = Pixels {
            scale: 2,
            pixels_width: pw,
            pixels_height: ph,
            pixels: (0..pw * ph)
                .flat_map(|i| {
                    let (x, y) = ((i % pw) as f64 * 2.0 + 0.5, (i / pw) as f64 * 2.0 + 0.5);
                    val(x, y).map(|v| v.round() as u8)
                })
                .collect(),
            ..full.clone()
        };
        // Crops inside the frame agree everywhere; crops over the edge differ only along the
        // edge (the bilinear fade to black is one scaled pixel wide), so only their mean counts.
        for (b, inside) in [
            ([400.0, 200.0, 800.0, 600.0], true),
            ([400.0, 20.0, 880.0, 660.0], true), // blurred at full resolution, not at 1/2
            ([0.0, 0.0, 1280.0, 720.0], false),
            ([-200.0, 0.0, 600.0, 720.0], false),
        ] {
            let (a, c) = (crop(&full, b), crop(&half, b));
            let mean = mean_abs_diff(&a, &c);
            let max = a
                .iter()
                .zip(&c)
                .map(|(&x, &y)| x.abs_diff(y))
                .max()
                .unwrap();
            assert!(
                mean < 1.0 && (max <= 3 || !inside),
                "box {b:?}: mean {mean}, max {max}"
            );
        }
    }

    #[test]
    fn degenerate_geometry_gives_black_and_never_reads_outside() {
        let f = constant_frame(64, 48, 200);
        for geom in [
            CropBox {
                center: [f32::NAN, 0.0],
                size: 10.0,
            },
            CropBox {
                center: [10.0, 10.0],
                size: 0.0,
            },
            CropBox {
                center: [10.0, 10.0],
                size: f32::INFINITY,
            },
            CropBox {
                center: [1e9, -1e9],
                size: 100.0,
            },
            CropBox {
                center: [1e6, 20.0],
                size: 4000.0,
            },
        ] {
            let mut out = vec![7u8; CROP_BYTES];
            crop_into(&f, &geom, &mut out);
            assert!(out.iter().all(|&v| v == 0), "{geom:?}");
        }
        // Huge box far larger than the image: blurred, mostly black, but no panic.
        let mut out = vec![0u8; CROP_BYTES];
        crop_into(
            &f,
            &CropBox {
                center: [32.0, 24.0],
                size: 5000.0,
            },
            &mut out,
        );
        assert!(out.iter().any(|&v| v > 0));
    }
}
