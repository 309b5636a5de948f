//! Frame input: base64 → JPEG/PNG bytes → RGB pixels → the 256×256 person crops the model eats.
//!
//! The steps are separate functions so the worker can check everything cheap before paying for
//! anything expensive: [`decode_base64`] refuses an oversized payload before allocating,
//! [`probe`] reads only the header (format and dimensions, checked against [`Limits`] before a
//! single pixel is allocated: no decompression bombs), [`validate_box`] checks the person boxes,
//! [`jpeg_scale_for`] picks a DCT scale, [`decode`] decodes, and [`crop_into`] writes each crop
//! straight into its slot of the batch buffer.
//!
//! ## The crop (HMR2.0, `shared/HMR2_FACTS.md` "Input")
//! A box is grown to a 3:4 (w:h) aspect and then made square ([`crop_box`]); when the crop shrinks
//! the image by more than 2.2× the image is first blurred with a Gaussian of
//! `sigma = (d − 1)/2`, `d = box_size/256/2` (scikit-image `gaussian`: kernel truncated at
//! 4 sigma, edge pixels repeated); then an affine map sends the box centre to the crop centre and
//! ±box_size/2 to ±128, sampled bilinearly, black outside the image. The pixel-centre convention
//! follows the Python reference `models/crop.py`, which `tests/it/crop.rs` checks against:
//! output pixel `u` (0..256, pixel centres at integer coordinates) samples the source at
//! `cx + (u − 128)·box_size/256`.
//!
//! Blur and bilinear sampling are applied together as one separable filter, evaluated only at the
//! 256×256 sample points: the source region the crop touches is read once per output row, and
//! nothing outside it is blurred.
//!
//! ## JPEG decoders, and DCT scaling
//! At full resolution JPEGs are decoded with zune-jpeg (the `image` crate's decoder):
//! single-threaded and the cheapest in CPU time. A JPEG can also be decoded at 1/2, 1/4 or 1/8 of
//! its size (the inverse DCT keeps fewer coefficients), which only jpeg-decoder offers; it is used
//! for that alone ([`jpeg_scale_for`]). Measured on 2 cores, CPU time per frame, decode plus a
//! whole-frame crop (q90 frames with mild grain): 720p zune 2.4 ms against jpeg-decoder
//! 3.9/3.5/3.2 ms at 1/2, 1/4, 1/8; 1080p 5.3 against 7.0/5.0-5.3/4.8-5.6; 4K 21.3 against
//! 28/22/20-21. jpeg-decoder hands rows to helper threads on every decode and its entropy
//! decoding is slower, so scaling does not pay for itself in CPU; it is kept for the largest
//! boxes (4K frames and up), where it is CPU-neutral and the frame takes 16× less memory.
//! [`Frame::scale`] records the scale, and [`crop_into`] maps original-image coordinates onto the
//! scaled pixels and blurs with the same filter width on the picture (`sigma / scale` scaled
//! pixels, see [`blur_sigma`]).
//!
//! ## EXIF orientation: ignored, on purpose
//! Pixels are used in their *stored* orientation. Frames come from video splitters, which write no
//! orientation tag, and the person boxes sent with a job are in stored-pixel coordinates (that is
//! what every detector run on the decoded array produces); rotating the image would silently move
//! the boxes off their people. A unit test pins this down.
//!
//! ## Colour
//! Greyscale images are expanded to RGB; CMYK JPEGs are converted naively; 16-bit PNGs are reduced
//! to 8 bits; an alpha channel is dropped (transparent pixels keep their stored colour).

use crate::error::InputError;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use std::cell::RefCell;
use std::io::Cursor;

/// Side of the square crop the model takes, in pixels (HMR2.0's `MODEL.IMAGE_SIZE`).
pub const CROP: usize = 256;

/// Bytes of one crop in the batch buffer (RGB, row-major, 256×256×3).
pub const CROP_BYTES: usize = CROP * CROP * 3;

/// The box aspect HMR2.0 was trained on (`BBOX_SHAPE = [192, 256]`), width over height.
const BOX_ASPECT: f32 = 192.0 / 256.0;

/// A DCT scale `k` (4 or 8, see the module doc for why not 2) is used only while the smallest
/// crop box still spans at least this many scaled pixels (`box_size / k ≥ 768 = 3·CROP`), i.e.
/// the crop still shrinks the scaled frame at least 3×: a 4K whole-frame box (side 5120) decodes
/// at 1/4; 720p and 1080p frames, and boxes under 3072 px, at full size.
///
/// Why 3× and not 2×: measured against the reference crop of the full-resolution decode
/// (1080p JPEG, q90, per-pixel noise and 8 px checks), the mean difference at 1/2 scale is
/// 6.3 grey levels for a 1024 px box, 2.0 at 1100, 1.0 at 1536, 0.5 at 1800 and ≤ 0.3 from 2048
/// on (1/4 scale: 0.8 at 2048, ≤ 0.5 from 3072); on smooth content it stays under 0.7
/// throughout. Just above `d = 2` the reference's own blur is too weak for its sampling step, so
/// its crop aliases the texture and the DCT's block average cannot reproduce that.
pub const JPEG_SCALE_MIN_BOX: f32 = 3.0 * CROP as f32;

/// A box side may be at most this many times the image's longer side. Larger boxes can only be
/// mistakes, and they would make the anti-alias blur kernel (which grows with the box) needlessly
/// expensive.
pub const MAX_BOX_FACTOR: f64 = 8.0;

/// Size limits of one input image, from the configuration (`limits.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted encoded image, in bytes (after base64 decoding).
    pub max_image_bytes: usize,
    /// Largest accepted `width × height`; checked from the header before pixels are allocated.
    pub max_pixels: u64,
}

/// The encodings a job's image may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG (baseline, extended or progressive; Huffman-coded).
    Jpeg,
    /// PNG (any colour type and bit depth).
    Png,
}

/// What [`probe`] learns from an image's header, without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Detected from the magic bytes, not from any name or media type.
    pub format: Format,
    /// Width in stored pixels (EXIF orientation is ignored, see the module doc).
    pub width: u32,
    /// Height in stored pixels.
    pub height: u32,
}

/// The engine of the wire contract: standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a job's `image_base64`: standard base64, an optional `data:<type>;base64,` prefix,
/// padding optional, line breaks and spaces tolerated (MIME-wrapped payloads). A payload whose
/// decoded size would exceed `max_bytes` is refused with [`InputError::ImageTooLarge`] before
/// anything is allocated.
pub fn decode_base64(s: &str, max_bytes: usize) -> Result<Vec<u8>, InputError> {
    let payload = strip_data_url(s)?;
    let mut symbols = 0usize;
    let mut spaces = false;
    for b in payload.bytes() {
        if b.is_ascii_whitespace() {
            spaces = true;
        } else if b != b'=' {
            symbols += 1;
        }
    }
    if symbols == 0 {
        return Err(InputError::InvalidBase64("payload is empty".into()));
    }
    let decoded = symbols / 4 * 3 + (symbols % 4 * 3) / 4;
    if decoded > max_bytes {
        return Err(InputError::ImageTooLarge(format!(
            "{decoded} bytes after base64 decoding, limit {max_bytes}"
        )));
    }
    let result = if spaces {
        let compact: String = payload
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        BASE64.decode(compact)
    } else {
        BASE64.decode(payload)
    };
    result.map_err(|e| InputError::InvalidBase64(e.to_string()))
}

/// Removes a `data:...;base64,` prefix, if any.
fn strip_data_url(s: &str) -> Result<&str, InputError> {
    let s = s.trim();
    let Some(rest) = s
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("data:"))
        .map(|_| &s[5..])
    else {
        return Ok(s);
    };
    let Some((header, data)) = rest.split_once(',') else {
        return Err(InputError::InvalidBase64("data URL without a comma".into()));
    };
    if !header.to_ascii_lowercase().ends_with(";base64") {
        return Err(InputError::InvalidBase64(format!(
            "data URL `data:{header},` is not base64-encoded"
        )));
    }
    Ok(data)
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Reads format and dimensions from the header only (no pixel allocation) and checks them
/// against `limits`: more than `max_image_bytes` bytes or `width × height > max_pixels` is
/// [`InputError::ImageTooLarge`]; anything but a JPEG or PNG, a truncated header or a zero
/// width/height is [`InputError::InvalidImage`].
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<ImageInfo, InputError> {
    if bytes.len() > limits.max_image_bytes {
        return Err(InputError::ImageTooLarge(format!(
            "{} bytes, limit {}",
            bytes.len(),
            limits.max_image_bytes
        )));
    }
    let (format, width, height) = if bytes.starts_with(PNG_SIGNATURE) {
        let (w, h) = png_dimensions(bytes)?;
        (Format::Png, w, h)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let (w, h) = jpeg_dimensions(bytes)?;
        (Format::Jpeg, w, h)
    } else {
        return Err(InputError::InvalidImage("not a JPEG or PNG".into()));
    };
    if width == 0 || height == 0 {
        return Err(InputError::InvalidImage(format!(
            "{width}x{height} image has no pixels"
        )));
    }
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(InputError::ImageTooLarge(format!(
            "{width}x{height} = {pixels} pixels, limit {}",
            limits.max_pixels
        )));
    }
    Ok(ImageInfo {
        format,
        width,
        height,
    })
}

/// Width and height from a PNG's IHDR chunk, which must come first.
fn png_dimensions(b: &[u8]) -> Result<(u32, u32), InputError> {
    if b.len() < 24 {
        return Err(InputError::InvalidImage("truncated PNG header".into()));
    }
    if &b[12..16] != b"IHDR" {
        return Err(InputError::InvalidImage(
            "PNG does not start with an IHDR chunk".into(),
        ));
    }
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Ok((be(16), be(20)))
}

/// Width and height from a JPEG's frame header (SOFn).
fn jpeg_dimensions(b: &[u8]) -> Result<(u32, u32), InputError> {
    // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC).
    let is_sof = |m: u8| matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC);
    let at = jpeg_segment(b, is_sof)?;
    let truncated = || InputError::InvalidImage("truncated JPEG header".into());
    let sof = b.get(at + 2..at + 7).ok_or_else(truncated)?;
    let height = u16::from_be_bytes([sof[1], sof[2]]);
    let width = u16::from_be_bytes([sof[3], sof[4]]);
    Ok((u32::from(width), u32::from(height)))
}

/// Walks a JPEG's marker segments from the start and returns the position of the length field
/// of the first segment whose marker satisfies `wanted` (only header segments are walked; the
/// first scan, SOS, ends the walk).
fn jpeg_segment(b: &[u8], wanted: impl Fn(u8) -> bool) -> Result<usize, InputError> {
    let truncated = || InputError::InvalidImage("truncated JPEG header".into());
    let mut i = 2;
    loop {
        if i >= b.len() {
            return Err(truncated());
        }
        if b[i] != 0xFF {
            return Err(InputError::InvalidImage(format!(
                "corrupt JPEG header: no marker at byte {i}"
            )));
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1; // fill bytes
        }
        let marker = *b.get(i).ok_or_else(truncated)?;
        i += 1;
        if wanted(marker) {
            return Ok(i);
        }
        match marker {
            // Markers without a length field.
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 | 0xDA => {
                return Err(InputError::InvalidImage(
                    "JPEG has no frame header before its data".into(),
                ));
            }
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([
            *b.get(i).ok_or_else(truncated)?,
            *b.get(i + 1).ok_or_else(truncated)?,
        ]));
        if len < 2 {
            return Err(InputError::InvalidImage(
                "corrupt JPEG header: bad segment length".into(),
            ));
        }
        i += len;
    }
}

/// Refuses a JPEG cut short: its compressed data must be followed by an end-of-image marker
/// (`FF D9`, which cannot occur inside entropy-coded data; an embedded EXIF thumbnail's EOI comes
/// before the first scan and is not counted; bytes appended after the EOI are fine). The
/// full-resolution decoder would otherwise fill the missing part with grey, as browsers do.
fn check_jpeg_complete(b: &[u8]) -> Result<(), InputError> {
    let scan = jpeg_segment(b, |m| m == 0xDA)?;
    if b[scan..].windows(2).rev().any(|w| w == [0xFF, 0xD9]) {
        Ok(())
    } else {
        Err(InputError::InvalidImage(
            "JPEG is truncated: no end-of-image marker after its data".into(),
        ))
    }
}

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

/// The DCT scale (1, 4 or 8) to decode a JPEG at when its smallest crop box has side
/// `min_box_size` (original pixels): the largest `k` of 8 and 4 with `min_box_size / k ≥`
/// [`JPEG_SCALE_MIN_BOX`], so every crop still shrinks the scaled frame at least 3×; else 1.
/// (1/2 is never chosen: it costs more CPU than a full-resolution decode, see the module doc.)
pub fn jpeg_scale_for(min_box_size: f32) -> u32 {
    [8, 4]
        .into_iter()
        .find(|&k| min_box_size / k as f32 >= JPEG_SCALE_MIN_BOX)
        .unwrap_or(1)
}

/// A decoded frame: RGB8 pixels, row-major, possibly at a reduced DCT scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
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

impl Frame {
    /// A full-resolution frame from RGB8 pixels (tests, benchmarks, synthetic frames).
    ///
    /// # Panics
    /// If `pixels` is not `width × height × 3` bytes long.
    pub fn from_rgb(width: u32, height: u32, pixels: Vec<u8>) -> Frame {
        assert_eq!(
            pixels.len(),
            width as usize * height as usize * 3,
            "RGB8 frame size"
        );
        Frame {
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
pub fn decode(bytes: &[u8], info: &ImageInfo, scale: u32) -> Result<Frame, InputError> {
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
/// in CPU time (see the module doc).
fn decode_jpeg_full(bytes: &[u8], info: &ImageInfo) -> Result<Frame, InputError> {
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
    Ok(Frame::from_rgb(w, h, img.into_rgb8().into_raw()))
}

fn decode_jpeg(bytes: &[u8], info: &ImageInfo, scale: u32) -> Result<Frame, InputError> {
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
    Ok(Frame {
        width: w,
        height: h,
        scale: k,
        pixels_width: pw,
        pixels_height: ph,
        pixels,
    })
}

fn decode_png(bytes: &[u8], info: &ImageInfo) -> Result<Frame, InputError> {
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
    Ok(Frame::from_rgb(w, h, img.into_rgb8().into_raw()))
}

/// HMR2.0's anti-alias blur for a crop of side `box_size` (full-resolution pixels): `Some(sigma)`
/// when `d = box_size/256/2 > 1.1`, with `sigma = (d − 1)/2`, in full-resolution pixels.
///
/// On a frame decoded at `1/k`, [`crop_into`] blurs with `sigma / k` in the frame's own pixels:
/// the same filter width on the picture. (The DCT scaling already averages k×k blocks; still,
/// measured against the reference on textured 720p/1080p frames, `sigma / k` is closest: mean
/// difference 0.61/0.79 grey levels against 0.67/1.08 when the block average's variance is
/// subtracted, and 1.56/1.73 with `(d/k − 1)/2`, the formula applied to the scaled frame.)
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
pub fn crop_into(frame: &Frame, geom: &CropBox, out: &mut [u8]) {
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
fn resample(frame: &Frame, s: &mut Scratch, out: &mut [u8]) {
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
unsafe fn resample_avx2(frame: &Frame, s: &mut Scratch, out: &mut [u8]) {
    resample_portable(frame, s, out);
}

#[inline(always)]
fn resample_portable(frame: &Frame, s: &mut Scratch, out: &mut [u8]) {
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
    use ::image::{codecs::jpeg::JpegEncoder, ImageFormat, RgbImage};

    const LIMITS: Limits = Limits {
        max_image_bytes: 50 << 20,
        max_pixels: 50_000_000,
    };

    /// A synthetic but not flat picture: gradients, stripes and deterministic noise.
    fn textured(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let n = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663))
                .wrapping_mul(2_654_435_761);
            let noise = (n >> 27) as i32 - 16;
            let r = (x * 255 / w.max(1)) as i32 + noise;
            let g = (y * 255 / h.max(1)) as i32 - noise;
            let b = if (x / 8 + y / 8) % 2 == 0 { 200 } else { 40 } + noise;
            ::image::Rgb([r, g, b].map(|v| v.clamp(0, 255) as u8))
        })
    }

    fn png_bytes(img: &RgbImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn jpeg_bytes(img: &RgbImage, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, quality)
            .encode_image(img)
            .unwrap();
        out
    }

    fn decode_all(bytes: &[u8], scale: u32) -> Result<Frame, InputError> {
        decode(bytes, &probe(bytes, &LIMITS)?, scale)
    }

    fn code(r: Result<impl std::fmt::Debug, InputError>) -> &'static str {
        r.expect_err("expected an error").code()
    }

    #[test]
    fn base64_plain_prefixed_unpadded_and_wrapped() {
        let data = b"\x89PNG\r\n\x1a\n some bytes!".to_vec();
        let enc = BASE64.encode(&data);
        assert!(enc.ends_with('='), "test data must need padding");
        assert_eq!(decode_base64(&enc, 1000).unwrap(), data);
        assert_eq!(
            decode_base64(&format!("data:image/png;base64,{enc}"), 1000).unwrap(),
            data
        );
        assert_eq!(
            decode_base64(&format!("DATA:image/jpeg;BASE64,{enc}"), 1000).unwrap(),
            data
        );
        assert_eq!(
            decode_base64(enc.trim_end_matches('='), 1000).unwrap(),
            data
        );
        let wrapped = format!("{}\r\n{}\n", &enc[..8], &enc[8..]);
        assert_eq!(decode_base64(&wrapped, 1000).unwrap(), data);
    }

    #[test]
    fn base64_rejections() {
        assert_eq!(
            code(decode_base64("aGVsbG8*d29ybGQ=", 1000)),
            "invalid_base64"
        );
        assert_eq!(
            code(decode_base64("aGVsbG8=d29ybGQ=", 1000)),
            "invalid_base64"
        );
        assert_eq!(
            code(decode_base64("data:image/png,aGVsbG8=", 1000)),
            "invalid_base64"
        );
        assert_eq!(
            code(decode_base64("data:image/png;base64", 1000)),
            "invalid_base64"
        );
        assert_eq!(code(decode_base64("", 1000)), "invalid_base64");
        assert_eq!(
            code(decode_base64("data:image/png;base64,", 1000)),
            "invalid_base64"
        );
        // 12 bytes fit a 12-byte limit, 13 do not; the limit is checked before decoding, so
        // even an invalid oversized payload is reported as too large.
        assert_eq!(
            decode_base64(&BASE64.encode([7u8; 12]), 12).unwrap().len(),
            12
        );
        assert_eq!(
            code(decode_base64(&BASE64.encode([7u8; 13]), 12)),
            "image_too_large"
        );
        assert_eq!(
            code(decode_base64(&"!".repeat(4 << 20), 1 << 20)),
            "image_too_large"
        );
    }

    #[test]
    fn probe_reads_headers() {
        let img = textured(40, 30);
        let png = probe(&png_bytes(&img), &LIMITS).unwrap();
        assert_eq!(
            png,
            ImageInfo {
                format: Format::Png,
                width: 40,
                height: 30
            }
        );
        let jpg = probe(&jpeg_bytes(&img, 90), &LIMITS).unwrap();
        assert_eq!(
            jpg,
            ImageInfo {
                format: Format::Jpeg,
                width: 40,
                height: 30
            }
        );
    }

    /// A PNG signature and an IHDR chunk claiming `w`×`h` (the CRC is not checked by `probe`).
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut b = PNG_SIGNATURE.to_vec();
        b.extend_from_slice(&13u32.to_be_bytes());
        b.extend_from_slice(b"IHDR");
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    /// SOI, a JFIF APP0 segment and a baseline SOF0 claiming `w`×`h`.
    fn jpeg_header(w: u16, h: u16) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16];
        b.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        b.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8]);
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        b
    }

    #[test]
    fn probe_rejections() {
        let not_image = probe(b"GIF89a not what we take", &LIMITS);
        assert_eq!(
            not_image,
            Err(InputError::InvalidImage("not a JPEG or PNG".into()))
        );
        assert_eq!(code(probe(b"", &LIMITS)), "invalid_image");
        // Truncated headers.
        assert_eq!(
            code(probe(&png_header(10, 10)[..20], &LIMITS)),
            "invalid_image"
        );
        let jpeg = jpeg_bytes(&textured(16, 16), 90);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        for cut in [3, 4, 5, 12, sof + 1, sof + 3, sof + 6] {
            assert_eq!(
                code(probe(&jpeg[..cut], &LIMITS)),
                "invalid_image",
                "cut at {cut}"
            );
        }
        assert_eq!(
            code(probe(&jpeg_header(10, 10)[..26], &LIMITS)),
            "invalid_image"
        );
        // Zero-size images.
        assert_eq!(code(probe(&png_header(0, 10), &LIMITS)), "invalid_image");
        assert_eq!(code(probe(&png_header(10, 0), &LIMITS)), "invalid_image");
        assert_eq!(code(probe(&jpeg_header(10, 0), &LIMITS)), "invalid_image");
        // Decompression bombs: tiny files claiming huge dimensions.
        assert_eq!(
            code(probe(&png_header(100_000, 100_000), &LIMITS)),
            "image_too_large"
        );
        assert_eq!(
            code(probe(&jpeg_header(65_535, 65_535), &LIMITS)),
            "image_too_large"
        );
        assert!(probe(&jpeg_header(5_000, 10_000), &LIMITS).is_ok());
        // Too many bytes.
        let small = Limits {
            max_image_bytes: 100,
            ..LIMITS
        };
        assert_eq!(code(probe(&jpeg, &small)), "image_too_large");
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

    fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).abs())
            .sum::<f64>()
            / a.len() as f64
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

    fn crop(frame: &Frame, b: [f32; 4]) -> Vec<u8> {
        let mut out = vec![1u8; CROP_BYTES];
        crop_into(frame, &crop_box(b), &mut out);
        out
    }

    fn constant_frame(w: u32, h: u32, v: u8) -> Frame {
        Frame::from_rgb(w, h, vec![v; (w * h * 3) as usize])
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
        let f = Frame::from_rgb(
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
        let full = Frame::from_rgb(
            w,
            h,
            (0..w * h)
                .flat_map(|i| val((i % w) as f64, (i / w) as f64).map(|v| v.round() as u8))
                .collect(),
        );
        let (pw, ph) = (w / 2, h / 2);
        let half = Frame {
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
