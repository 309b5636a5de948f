//! Helpers shared by the image submodules' unit tests.

use super::Limits;
use crate::error::{ErrorCode, InputError};
use ::image::{codecs::jpeg::JpegEncoder, ImageFormat, RgbImage};
use std::io::Cursor;

pub(super) const LIMITS: Limits = Limits {
    max_image_bytes: 50 << 20,
    max_pixels: 50_000_000,
};

/// A synthetic but not flat picture: gradients, stripes and deterministic noise.
pub(super) fn textured(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let n =
            (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)).wrapping_mul(2_654_435_761);
        let noise = (n >> 27) as i32 - 16;
        let r = (x * 255 / w.max(1)) as i32 + noise;
        let g = (y * 255 / h.max(1)) as i32 - noise;
        let b = if (x / 8 + y / 8) % 2 == 0 { 200 } else { 40 } + noise;
        ::image::Rgb([r, g, b].map(|v| v.clamp(0, 255) as u8))
    })
}

pub(super) fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

pub(super) fn jpeg_bytes(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .unwrap();
    out
}

pub(super) fn code(r: Result<impl std::fmt::Debug, InputError>) -> ErrorCode {
    r.expect_err("expected an error").code()
}

pub(super) fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}
