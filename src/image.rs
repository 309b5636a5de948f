//! Frame input: base64 → JPEG/PNG bytes → RGB pixels → the 256×256 person crops the model eats.
//!
//! The steps are separate functions so the worker can check everything cheap before paying for
//! anything expensive: [`decode_base64`] refuses an oversized payload before allocating,
//! [`probe`] reads only the header (format and dimensions, checked against [`Limits`] before a
//! single pixel is allocated: no decompression bombs), [`validate_box`] checks the person boxes,
//! [`jpeg_scale_for`] picks a DCT scale, [`decode`](fn@decode) decodes, and [`crop_into`]
//! writes each crop into the job's crop buffer (one allocation per job, people back to back);
//! the batcher copies them into the batch buffer, which the model reads in place.
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
//! for that alone ([`jpeg_scale_for`]). jpeg-decoder hands rows to helper threads on every decode
//! and its entropy decoding is slower, so scaling does not pay for itself in CPU; it is kept for
//! the largest boxes (4K frames and up), where it is CPU-neutral and the frame takes 16× less
//! memory (figures: `BENCHMARKS.md`, "Image path: decoder and scale choices").
//! [`Pixels::scale`] records the scale, and [`crop_into`] maps original-image coordinates onto the
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
//!
//! ## Layout
//! - `input`: the payload and the header: base64 decoding, [`probe`], [`Limits`], [`Format`].
//! - `decode`: JPEG/PNG decoding into a [`Pixels`], and the DCT scale ([`jpeg_scale_for`]).
//! - `crop`: the crop geometry ([`crop_box`], [`validate_box`]) and the blurred bilinear
//!   resampling ([`crop_into`], with an AVX2 build of its inner loops).
//! - `letterbox`: the detector's input ([`letterbox`]).

mod crop;
mod decode;
mod input;
mod letterbox;
#[cfg(test)]
mod test_support;

pub use crop::{
    blur_sigma, crop_box, crop_into, full_frame_box, validate_box, CropBox, MAX_BOX_FACTOR,
};
pub use decode::{decode, jpeg_scale_for, Pixels, JPEG_SCALE_MIN_BOX};
pub use input::{decode_base64, probe, Format, ImageInfo, Limits};
pub use letterbox::{letterbox, Letterboxed, LETTERBOX_FILL};

/// Side of the square crop the model takes, in pixels (HMR2.0's `MODEL.IMAGE_SIZE`).
pub const CROP: usize = 256;

/// Bytes of one crop in the batch buffer (RGB, row-major, 256×256×3).
pub const CROP_BYTES: usize = CROP * CROP * 3;
