//! The untrusted input, checked before anything expensive: a job's base64 payload (size
//! refused before allocating) and the image header (format and dimensions against [`Limits`],
//! before a single pixel is allocated). See the [module doc](super).

use crate::error::InputError;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

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
    /// Width in stored pixels (EXIF orientation is ignored, see the [module doc](super)).
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
pub(super) fn check_jpeg_complete(b: &[u8]) -> Result<(), InputError> {
    let scan = jpeg_segment(b, |m| m == 0xDA)?;
    if b[scan..].windows(2).rev().any(|w| w == [0xFF, 0xD9]) {
        Ok(())
    } else {
        Err(InputError::InvalidImage(
            "JPEG is truncated: no end-of-image marker after its data".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_support::{code, jpeg_bytes, png_bytes, textured, LIMITS};

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
}
