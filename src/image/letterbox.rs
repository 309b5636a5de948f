//! The detector's input (DESIGN §12): the frame scaled by `r = S / max(W, H)` to
//! `(round(W·r), round(H·r))` with a SIMD convolution (fast_image_resize, bilinear with a kernel
//! that widens on downscaling, like PIL's) and placed at the top-left of an `S×S` canvas filled
//! with 114. A detector box maps back to the frame as `x / r`.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::Pixels;

/// Grey of the letterbox's padding (the YOLO family's convention).
pub const LETTERBOX_FILL: u8 = 114;

/// A frame letterboxed for the detector.
#[derive(Debug, Clone)]
pub struct Letterboxed {
    /// `S × S × 3` RGB bytes.
    pub pixels: Vec<u8>,
    /// Pixels pixels → letterbox pixels.
    pub r: f32,
}

/// Letterboxes `frame` into an `size × size` canvas. `r` refers to the frame's original size
/// (a DCT-scaled frame is resized from its scaled pixels to the same target).
pub fn letterbox(frame: &Pixels, size: u32) -> Letterboxed {
    let r = size as f64 / frame.width.max(frame.height) as f64;
    let nw = ((frame.width as f64 * r).round() as u32).clamp(1, size);
    let nh = ((frame.height as f64 * r).round() as u32).clamp(1, size);
    let s = size as usize;
    let mut pixels = vec![LETTERBOX_FILL; s * s * 3];
    let resized = resize(frame, nw, nh);
    let row = nw as usize * 3;
    for (y, src) in resized.chunks_exact(row).enumerate() {
        pixels[y * s * 3..y * s * 3 + row].copy_from_slice(src);
    }
    Letterboxed {
        pixels,
        r: r as f32,
    }
}

/// The frame's pixels resized to `w × h` (RGB8).
fn resize(frame: &Pixels, w: u32, h: u32) -> Vec<u8> {
    let (pw, ph) = (frame.pixels_width, frame.pixels_height);
    if (pw, ph) == (w, h) {
        return frame.pixels.clone();
    }
    let src = ImageRef::new(pw, ph, &frame.pixels, PixelType::U8x3)
        .expect("a frame's buffer holds its pixels");
    let mut dst = Image::new(w, h, PixelType::U8x3);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .expect("same pixel type, non-empty images");
    dst.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32, rgb: [u8; 3]) -> Pixels {
        Pixels::from_rgb(w, h, rgb.repeat((w * h) as usize))
    }

    fn px(l: &Letterboxed, s: usize, x: usize, y: usize) -> [u8; 3] {
        let i = (y * s + x) * 3;
        [l.pixels[i], l.pixels[i + 1], l.pixels[i + 2]]
    }

    #[test]
    fn a_landscape_frame_sits_at_the_top_left_and_the_rest_is_grey() {
        let l = letterbox(&frame(1280, 720, [200, 10, 50]), 320);
        assert_eq!(l.r, 0.25);
        assert_eq!(l.pixels.len(), 320 * 320 * 3);
        // 1280x720 → 320x180: rows 0..180 are the frame, below is fill.
        assert_eq!(px(&l, 320, 0, 0), [200, 10, 50]);
        assert_eq!(px(&l, 320, 319, 179), [200, 10, 50]);
        assert_eq!(px(&l, 320, 0, 180), [114; 3]);
        assert_eq!(px(&l, 320, 319, 319), [114; 3]);
    }

    #[test]
    fn portrait_and_odd_sizes_round_like_the_contract_says() {
        // 333x1000 → r = 0.32, width round(106.56) = 107.
        let l = letterbox(&frame(333, 1000, [1, 2, 3]), 320);
        assert!((l.r - 0.32).abs() < 1e-6);
        assert_eq!(px(&l, 320, 106, 319), [1, 2, 3]);
        assert_eq!(px(&l, 320, 107, 0), [114; 3]);
        // A frame smaller than the input is scaled up.
        let l = letterbox(&frame(100, 50, [9, 9, 9]), 320);
        assert_eq!(l.r, 3.2);
        assert_eq!(px(&l, 320, 319, 159), [9; 3]);
        assert_eq!(px(&l, 320, 0, 160), [114; 3]);
    }

    #[test]
    fn content_keeps_its_place() {
        // A white square at (400..600, 200..400) of a black 1000x500 frame, r = 0.32.
        let (w, h) = (1000u32, 500u32);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        for y in 200..400 {
            for x in 400..600 {
                let i = ((y * w + x) * 3) as usize;
                rgb[i..i + 3].copy_from_slice(&[255; 3]);
            }
        }
        let l = letterbox(&Pixels::from_rgb(w, h, rgb), 320);
        assert_eq!(px(&l, 320, 160, 96), [255; 3]); // (500, 300) in the frame
        assert_eq!(px(&l, 320, 100, 96), [0; 3]);
        assert_eq!(px(&l, 320, 160, 200), [114; 3]);
    }
}
