//! Decoding a [`probe`](super::probe)d image into an RGB8 [`Pixels`]: JPEGs with zune-jpeg at
//! full size or jpeg-decoder at a DCT scale ([`jpeg_scale_for`]), PNGs at full size. See the
//! [module doc](super) for the choice of decoders.

use super::input::{check_jpeg_complete, Format, ImageInfo};
use super::CROP;
use crate::error::InputError;
use std::io::Cursor;

/// A DCT scale `k` (4 or 8, see the [module doc] for why not 2) is used only while the smallest
/// crop box still spans at least this many scaled pixels (`box_size / k ≥ 768 = 3·CROP`), i.e.
/// the crop still shrinks the scaled frame at least 3×: a 4K whole-frame box (side 5120) decodes
/// at 1/4; 720p and 1080p frames, and boxes under 3072 px, at full size.
///
/// Why 3× and not 2×: just above `d = 2` the reference's own blur is too weak for its sampling
/// step, so its crop aliases the texture and the DCT's block average cannot reproduce that; the
/// difference only falls below a grey level from 3× on (figures: `BENCHMARKS.md`).
///
/// [module doc]: super
pub const JPEG_SCALE_MIN_BOX: f32 = 3.0 * CROP as f32;

/// The DCT scale (1, 4 or 8) to decode a JPEG at when its smallest crop box has side
/// `min_box_size` (original pixels): the largest `k` of 8 and 4 with `min_box_size / k ≥`
/// [`JPEG_SCALE_MIN_BOX`], so every crop still shrinks the scaled frame at least 3×; else 1.
/// (1/2 is never chosen: it costs more CPU than a full-resolution decode, see the [module doc].)
///
/// [module doc]: super
pub fn jpeg_scale_for(min_box_size: f32) -> u32 {
    [8, 4]
        .into_iter()
        .find(|&k| min_box_size / k as f32 >= JPEG_SCALE_MIN_BOX)
        .unwrap_or(1)
}

/// A decoded frame: RGB8 pixels, row-major, possibly at a reduced DCT scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    /// Width of the original image (boxes and the camera are in these pixels).
    pub width: u32,
    /// Height of the original image.
    pub height: u32,
    /// The JPEG was decoded at `1/scale` of its size (1, 2, 4 or 8; PNG always 1).
    pub scale: u32,
    /// Width of `pixels`: `ceil(width / scale)`.
    pub pixels_width: u32,
    /// Height of `pixels`: `ceil(height / scale)`.
    pub pixels_height: u32,
    /// `pixels_width × pixels_height × 3` bytes, RGB.
    pub pixels: Vec<u8>,
}

impl Pixels {
    /// A full-resolution frame from RGB8 pixels (tests, benchmarks, synthetic frames).
    ///
    /// # Panics
    /// If `pixels` is not `width × height × 3` bytes long.
    pub fn from_rgb(width: u32, height: u32, pixels: Vec<u8>) -> Pixels {
        assert_eq!(
            pixels.len(),
            width as usize * height as usize * 3,
            "RGB8 frame size"
        );
        Pixels {
            width,
            height,
            scale: 1,
            pixels_width: width,
            pixels_height: height,
            pixels,
        }
    }
}

/// Decodes an image [`probe`]d before (the dimensions are trusted from `info` and cross-checked
/// against the decoder's), a JPEG at `1/scale` of its size (`scale` of 1, 2, 4 or 8, see
/// [`jpeg_scale_for`]; reduced for tiny images), a PNG always at full size. Truncated or corrupt
/// data is [`InputError::InvalidImage`]; this never panics.
///
/// [`probe`]: super::probe
pub fn decode(bytes: &[u8], info: &ImageInfo, scale: u32) -> Result<Pixels, InputError> {
    // The decoders are fuzzed, but a panic must never take a worker thread down with it.
    std::panic::catch_unwind(|| match info.format {
        Format::Jpeg => decode_jpeg(bytes, info, scale),
        Format::Png => decode_png(bytes, info),
    })
    .unwrap_or_else(|_| {
        Err(InputError::InvalidImage(
            "decoder failed on corrupt data".into(),
        ))
    })
}

/// `image` decoder limits for a `w`×`h` image of at most `bytes_per_pixel`, plus room for the
/// decoder's own buffers.
fn image_limits(w: u32, h: u32, bytes_per_pixel: u64) -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(u64::from(w) * u64::from(h) * bytes_per_pixel + (16 << 20));
    limits
}

/// Full-resolution JPEG decoding: zune-jpeg (through `image`), single-threaded and the cheapest
/// in CPU time (see the [module doc](super)).
fn decode_jpeg_full(bytes: &[u8], info: &ImageInfo) -> Result<Pixels, InputError> {
    use image::{codecs::jpeg::JpegDecoder, DynamicImage, ImageDecoder};
    let corrupt = |e: image::ImageError| InputError::InvalidImage(format!("JPEG: {e}"));
    check_jpeg_complete(bytes)?;
    let (w, h) = (info.width, info.height);
    let mut dec = JpegDecoder::new(Cursor::new(bytes)).map_err(corrupt)?;
    dec.set_limits(image_limits(w, h, 4)).map_err(corrupt)?;
    let img = DynamicImage::from_decoder(dec).map_err(corrupt)?;
    if (img.width(), img.height()) != (w, h) {
        return Err(InputError::InvalidImage(
            "JPEG: inconsistent frame headers".into(),
        ));
    }
    Ok(Pixels::from_rgb(w, h, img.into_rgb8().into_raw()))
}

fn decode_jpeg(bytes: &[u8], info: &ImageInfo, scale: u32) -> Result<Pixels, InputError> {
    let corrupt = |e: jpeg_decoder::Error| InputError::InvalidImage(format!("JPEG: {e}"));
    let (w, h) = (info.width, info.height);
    let mut k = match scale {
        0..=1 => 1,
        2..=3 => 2,
        4..=7 => 4,
        _ => 8,
    };
    // Below 2k pixels the decoder's choice of scale would be ambiguous; such images are tiny.
    while k > 1 && w.min(h) < 2 * k {
        k /= 2;
    }
    if k == 1 {
        return decode_jpeg_full(bytes, info);
    }
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    // The decoder must not allocate more than the probed dimensions allow (RGB, or CMYK).
    dec.set_max_decoding_buffer_size((w as usize).saturating_mul(h as usize).saturating_mul(4));
    dec.read_info().map_err(corrupt)?;
    let header = dec
        .info()
        .ok_or_else(|| InputError::InvalidImage("JPEG: no header".into()))?;
    if (u32::from(header.width), u32::from(header.height)) != (w, h) {
        return Err(InputError::InvalidImage(
            "JPEG: inconsistent frame headers".into(),
        ));
    }
    let (pw, ph) = (w.div_ceil(k), h.div_ceil(k));
    if k > 1 {
        let got = dec.scale(pw as u16, ph as u16).map_err(corrupt)?;
        if (u32::from(got.0), u32::from(got.1)) != (pw, ph) {
            return Err(InputError::InvalidImage(
                "JPEG: unexpected scaled size".into(),
            ));
        }
    }
    let data = dec.decode().map_err(corrupt)?;
    let format = dec.info().map(|i| i.pixel_format);
    let n = pw as usize * ph as usize;
    use jpeg_decoder::PixelFormat as P;
    let pixels = match format {
        Some(P::RGB24) if data.len() == n * 3 => data,
        Some(P::L8) if data.len() == n => data.iter().flat_map(|&v| [v, v, v]).collect(),
        Some(P::L16) if data.len() == n * 2 => data
            .chunks_exact(2)
            .flat_map(|c| {
                let v = (u16::from_ne_bytes([c[0], c[1]]) >> 8) as u8;
                [v, v, v]
            })
            .collect(),
        Some(P::CMYK32) if data.len() == n * 4 => data
            .chunks_exact(4)
            .flat_map(|c| {
                // jpeg-decoder returns inverted CMYK; RGB = (1 − c)(1 − k).
                let f = |v: u8| ((255 - u16::from(v)) * (255 - u16::from(c[3])) / 255) as u8;
                [f(c[0]), f(c[1]), f(c[2])]
            })
            .collect(),
        _ => {
            return Err(InputError::InvalidImage(
                "JPEG: unexpected pixel data".into(),
            ))
        }
    };
    Ok(Pixels {
        width: w,
        height: h,
        scale: k,
        pixels_width: pw,
        pixels_height: ph,
        pixels,
    })
}

fn decode_png(bytes: &[u8], info: &ImageInfo) -> Result<Pixels, InputError> {
    use image::{codecs::png::PngDecoder, DynamicImage};
    let corrupt = |e: image::ImageError| InputError::InvalidImage(format!("PNG: {e}"));
    let (w, h) = (info.width, info.height);
    // RGBA16 is the largest layout: 8 bytes a pixel.
    let dec =
        PngDecoder::with_limits(Cursor::new(bytes), image_limits(w, h, 8)).map_err(corrupt)?;
    let img = DynamicImage::from_decoder(dec).map_err(corrupt)?;
    if (img.width(), img.height()) != (w, h) {
        return Err(InputError::InvalidImage("PNG: inconsistent header".into()));
    }
    Ok(Pixels::from_rgb(w, h, img.into_rgb8().into_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::probe;
    use crate::image::test_support::{
        code, jpeg_bytes, mean_abs_diff, png_bytes, textured, LIMITS,
    };
    use ::image::{codecs::jpeg::JpegEncoder, ImageFormat, RgbImage};

    fn decode_all(bytes: &[u8], scale: u32) -> Result<Pixels, InputError> {
        decode(bytes, &probe(bytes, &LIMITS)?, scale)
    }

    #[test]
    fn png_decodes_exactly_and_drops_alpha() {
        let img = textured(37, 21);
        let f = decode_all(&png_bytes(&img), 4).unwrap();
        assert_eq!(
            (f.width, f.height, f.scale, f.pixels_width),
            (37, 21, 1, 37)
        );
        assert_eq!(f.pixels, img.as_raw().as_slice());

        let rgba =
            ::image::RgbaImage::from_fn(5, 4, |x, y| ::image::Rgba([x as u8, y as u8, 9, 0]));
        let mut buf = Cursor::new(Vec::new());
        rgba.write_to(&mut buf, ImageFormat::Png).unwrap();
        let f = decode_all(buf.get_ref(), 1).unwrap();
        assert_eq!(&f.pixels[(2 * 5 + 3) * 3..][..3], &[3, 2, 9]);

        let grey = ::image::GrayImage::from_fn(4, 4, |x, _| ::image::Luma([x as u8 * 50]));
        let mut buf = Cursor::new(Vec::new());
        grey.write_to(&mut buf, ImageFormat::Png).unwrap();
        let f = decode_all(buf.get_ref(), 1).unwrap();
        assert_eq!(&f.pixels[..6], &[0, 0, 0, 50, 50, 50]);
    }

    #[test]
    fn jpeg_decodes_close_to_the_source() {
        let img = textured(64, 48);
        let f = decode_all(&jpeg_bytes(&img, 95), 1).unwrap();
        assert_eq!((f.width, f.height, f.scale), (64, 48, 1));
        let mean = mean_abs_diff(&f.pixels, img.as_raw());
        assert!(mean < 6.0, "mean abs diff {mean}");

        let grey = ::image::GrayImage::from_fn(16, 8, |x, _| ::image::Luma([x as u8 * 16]));
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(&grey)
            .unwrap();
        let f = decode_all(&out, 1).unwrap();
        assert_eq!(f.pixels.len(), 16 * 8 * 3);
        assert_eq!(f.pixels[30], f.pixels[31]); // R = G = B
    }

    #[test]
    fn truncated_or_corrupt_images_are_errors_not_panics() {
        let jpeg = jpeg_bytes(&textured(96, 64), 90);
        let info = probe(&jpeg, &LIMITS).unwrap();
        for cut in [jpeg.len() / 3, jpeg.len() / 2, jpeg.len() - 40] {
            for scale in [1, 2, 8] {
                assert_eq!(code(decode(&jpeg[..cut], &info, scale)), "invalid_image");
            }
        }
        let png = png_bytes(&textured(96, 64));
        let pinfo = probe(&png, &LIMITS).unwrap();
        assert_eq!(
            code(decode(&png[..png.len() / 2], &pinfo, 1)),
            "invalid_image"
        );
        // Garbage after valid headers: an error or some pixels, never a panic.
        for seed in 0..20u32 {
            let mut bad = jpeg.clone();
            for i in (200..bad.len()).step_by(7 + seed as usize) {
                bad[i] = (i as u32).wrapping_mul(seed + 1) as u8;
            }
            let _ = decode(&bad, &info, 1 << (seed % 4));
            let mut bad = png.clone();
            for i in (60..bad.len()).step_by(5 + seed as usize) {
                bad[i] ^= 0x5A;
            }
            let _ = decode(&bad, &pinfo, 1);
        }
        // A header that claims more pixels than the data holds: the decoder fills the rest
        // (as libjpeg does) or fails, within the claimed size.
        let mut lying = jpeg.clone();
        let sof = lying.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        lying[sof + 7..sof + 9].copy_from_slice(&4000u16.to_be_bytes());
        let fake = probe(&lying, &LIMITS).unwrap();
        assert_eq!(fake.width, 4000);
        if let Ok(f) = decode(&lying, &fake, 1) {
            assert_eq!(f.pixels.len(), 4000 * 64 * 3);
        }
        assert_eq!(
            code(decode(&jpeg, &fake, 1)),
            "invalid_image",
            "probe and decoder disagree"
        );
    }

    #[test]
    fn dct_scaled_decoding_has_the_reduced_size() {
        let img = textured(1001, 333);
        let jpeg = jpeg_bytes(&img, 90);
        for (scale, w, h) in [(1, 1001, 333), (2, 501, 167), (4, 251, 84), (8, 126, 42)] {
            let f = decode_all(&jpeg, scale).unwrap();
            assert_eq!((f.scale, f.pixels_width, f.pixels_height), (scale, w, h));
            assert_eq!((f.width, f.height), (1001, 333));
            assert_eq!(f.pixels.len(), (w * h * 3) as usize);
        }
        // Too small to scale meaningfully: the scale is reduced.
        let tiny = decode_all(&jpeg_bytes(&textured(12, 40), 90), 8).unwrap();
        assert_eq!(
            (tiny.scale, tiny.pixels_width, tiny.pixels_height),
            (4, 3, 10)
        );
    }

    #[test]
    fn dct_scaled_pixels_average_the_full_ones() {
        let img = RgbImage::from_fn(256, 128, |x, y| ::image::Rgb([x as u8, (y * 2) as u8, 128]));
        let jpeg = jpeg_bytes(&img, 95);
        let full = decode_all(&jpeg, 1).unwrap();
        let half = decode_all(&jpeg, 2).unwrap();
        let mut worst = 0f64;
        for y in 0..64usize {
            for x in 0..128usize {
                for c in 0..3 {
                    let at = |xx: usize, yy: usize| full.pixels[(yy * 256 + xx) * 3 + c] as f64;
                    let avg = (at(2 * x, 2 * y)
                        + at(2 * x + 1, 2 * y)
                        + at(2 * x, 2 * y + 1)
                        + at(2 * x + 1, 2 * y + 1))
                        / 4.0;
                    let got = half.pixels[(y * 128 + x) * 3 + c] as f64;
                    worst = worst.max((got - avg).abs());
                }
            }
        }
        assert!(
            worst <= 4.0,
            "scaled pixel differs from the 2×2 mean by {worst}"
        );
    }

    /// Inserts an EXIF APP1 segment with `Orientation = 6` (rotate 90° clockwise to display)
    /// right after the SOI marker.
    fn with_exif_orientation(jpeg: &[u8]) -> Vec<u8> {
        let mut tiff = b"MM\0\x2A\0\0\0\x08".to_vec();
        tiff.extend_from_slice(&[0, 1]); // one IFD entry
        tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]); // Orientation, SHORT, 6
        tiff.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_ignored() {
        // Left half red, right half blue, stored 32 wide and 16 high.
        let img = RgbImage::from_fn(32, 16, |x, _| {
            ::image::Rgb(if x < 16 { [230, 20, 20] } else { [20, 20, 230] })
        });
        let jpeg = with_exif_orientation(&jpeg_bytes(&img, 95));
        // The tag is really there and well-formed.
        let mut check = jpeg_decoder::Decoder::new(jpeg.as_slice());
        check.decode().unwrap();
        assert_eq!(
            check.exif_data().map(|e| e[..4].to_vec()),
            Some(b"MM\0\x2A".to_vec())
        );

        let f = decode_all(&jpeg, 1).unwrap();
        assert_eq!(
            (f.width, f.height),
            (32, 16),
            "stored, not displayed, orientation"
        );
        let px = |x: usize, y: usize| &f.pixels[(y * 32 + x) * 3..][..3];
        assert!(px(2, 8)[0] > 200 && px(2, 8)[2] < 60, "{:?}", px(2, 8));
        assert!(px(29, 8)[2] > 200 && px(29, 8)[0] < 60, "{:?}", px(29, 8));
    }

    #[test]
    fn jpeg_scale_choice() {
        for (size, k) in [
            (100.0, 1),
            (1536.0, 1),
            (1706.7, 1), // 1280×720 whole frame
            (2560.0, 1), // 1920×1080 whole frame
            (3071.9, 1),
            (3072.0, 4),
            (5120.0, 4), // 3840×2160 whole frame
            (6144.0, 8),
            (1e9, 8),
            (f32::NAN, 1),
        ] {
            assert_eq!(jpeg_scale_for(size), k, "box {size}");
        }
    }
}
