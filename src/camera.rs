//! Camera maths of HMR2.0: from the model's crop camera to the full frame.
//!
//! The model predicts a weak-perspective camera `pred_cam = (s, tx, ty)` for the 256×256 crop.
//! HMR2.0 reads it as a perspective camera with a fixed focal length of 5000 px for a 256 px
//! image. To express the person in the *full* frame (so 2D keypoints land on the original pixels),
//! the focal length is rescaled to the frame (`F = 5000/256 · max(W, H)`) and the translation is
//! shifted by the offset of the box centre from the frame centre (`shared/HMR2_FACTS.md`,
//! "Camera"). The principal point is the frame centre.
//!
//! Everything is computed in `f64` and returned as `f32`, so the `1e-9` guard of the original
//! (which keeps `tz` finite when `s = 0`) is not lost to `f32` rounding.

/// Focal length, in pixels, that HMR2.0 assumes for its 256 px crop (`EXTRA.FOCAL_LENGTH`).
pub(crate) const FOCAL_LENGTH: f32 = 5000.0;

/// Side of the square image the model sees (`MODEL.IMAGE_SIZE`); the focal length is relative to it.
pub(crate) const MODEL_IMAGE_SIZE: f32 = 256.0;

/// The guard the original adds to `box_size · s` so a zero scale never divides by zero.
const EPS: f64 = 1e-9;

/// A person's camera in the full frame: what the result reports as `pred_cam_t_full` and
/// `focal_length`, and what [`project`] needs to put keypoints on the frame's pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FullCam {
    /// Translation `[tx, ty, tz]` of the body (model units, metres for real SMPL) in the camera
    /// frame of the full image.
    pub cam_t: [f32; 3],
    /// Focal length in full-frame pixels, `5000/256 · max(W, H)`.
    pub focal: f32,
}

/// The focal length, in pixels, of a `width`×`height` frame: the model's 5000 px at 256 px,
/// scaled to the frame's longer side.
fn focal_for_f64(width: u32, height: u32) -> f64 {
    FOCAL_LENGTH as f64 / MODEL_IMAGE_SIZE as f64 * width.max(height) as f64
}

/// Converts the crop camera `pred_cam = (s, tx, ty)` of a person whose crop box has centre
/// `center` and side `box_size` (original-image pixels, see `image::crop_box`) to the camera of the
/// full `width`×`height` frame.
///
/// `bs = box_size·s + 1e-9`, `tz = 2F/bs`, `tx' = 2(cx − W/2)/bs + tx`, `ty' = 2(cy − H/2)/bs + ty`.
pub(crate) fn cam_full(
    pred_cam: [f32; 3],
    center: [f32; 2],
    box_size: f32,
    width: u32,
    height: u32,
) -> FullCam {
    let f = focal_for_f64(width, height);
    let [s, tx, ty] = pred_cam.map(f64::from);
    let bs = box_size as f64 * s + EPS;
    let half_w = width as f64 / 2.0;
    let half_h = height as f64 / 2.0;
    FullCam {
        cam_t: [
            (2.0 * (center[0] as f64 - half_w) / bs + tx) as f32,
            (2.0 * (center[1] as f64 - half_h) / bs + ty) as f32,
            (2.0 * f / bs) as f32,
        ],
        focal: f as f32,
    }
}

/// Perspective projection of 3D points (model output, camera axes) translated by `cam.cam_t`,
/// with focal length `cam.focal` and principal point at the frame centre `(W/2, H/2)`: the
/// result's `keypoints_2d`, in full-frame pixels.
///
/// A point in the camera plane (`z = 0` after translation) has no image; its coordinates come
/// out non-finite, as in the original. That needs a camera behind or inside the body, which the
/// model does not predict for a visible person.
pub(crate) fn project(
    points: &[[f32; 3]],
    cam: &FullCam,
    width: u32,
    height: u32,
) -> Vec<[f32; 2]> {
    let f = cam.focal as f64;
    let [tx, ty, tz] = cam.cam_t.map(f64::from);
    let cx = width as f64 / 2.0;
    let cy = height as f64 / 2.0;
    points
        .iter()
        .map(|p| {
            let x = p[0] as f64 + tx;
            let y = p[1] as f64 + ty;
            let z = p[2] as f64 + tz;
            [(f * x / z + cx) as f32, (f * y / z + cy) as f32]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) -> bool {
        let (a, b) = (a as f64, b);
        (a - b).abs() <= 1e-5 * b.abs().max(1.0)
    }

    #[test]
    fn focal_scales_with_the_longer_side() {
        assert_eq!(focal_for_f64(1280, 720), 25_000.0);
        assert_eq!(focal_for_f64(720, 1280), 25_000.0);
        assert_eq!(focal_for_f64(256, 256), 5_000.0);
    }

    #[test]
    fn centred_box_has_no_lateral_offset() {
        // W=1280, H=720, box centred at (640, 360), side 512, s=1:
        // F = 5000/256·1280 = 25000, bs = 512, tz = 2·25000/512 = 97.65625.
        let c = cam_full([1.0, 0.0, 0.0], [640.0, 360.0], 512.0, 1280, 720);
        assert_eq!(c.focal, 25_000.0);
        assert!(close(c.cam_t[0], 0.0) && close(c.cam_t[1], 0.0));
        assert!(close(c.cam_t[2], 97.656_25), "{:?}", c);
    }

    #[test]
    fn crop_translation_is_kept_and_offsets_added() {
        // Box at (1000, 200), side 256, s=0.5 → bs = 128;
        // tx = 2·(1000−640)/128 + 0.1 = 5.725, ty = 2·(200−360)/128 − 0.2 = −2.7,
        // tz = 2·25000/128 = 390.625.
        let c = cam_full([0.5, 0.1, -0.2], [1000.0, 200.0], 256.0, 1280, 720);
        assert!(close(c.cam_t[0], 5.725), "{:?}", c);
        assert!(close(c.cam_t[1], -2.7), "{:?}", c);
        assert!(close(c.cam_t[2], 390.625), "{:?}", c);
    }

    #[test]
    fn portrait_frame_uses_its_height() {
        // W=720, H=1280: F = 25000; box (100, 1100) side 400, s=2 → bs = 800;
        // tx = 2·(100−360)/800 = −0.65, ty = 2·(1100−640)/800 = 1.15, tz = 62.5.
        let c = cam_full([2.0, 0.0, 0.0], [100.0, 1100.0], 400.0, 720, 1280);
        assert!(close(c.cam_t[0], -0.65) && close(c.cam_t[1], 1.15) && close(c.cam_t[2], 62.5));
    }

    #[test]
    fn zero_scale_stays_finite() {
        let c = cam_full([0.0, 0.0, 0.0], [0.0, 0.0], 100.0, 640, 480);
        assert!(c.cam_t.iter().all(|v| v.is_finite()), "{:?}", c);
    }

    #[test]
    fn point_on_the_axis_lands_on_the_frame_centre() {
        let cam = FullCam {
            cam_t: [0.0, 0.0, 50.0],
            focal: 25_000.0,
        };
        let uv = project(&[[0.0, 0.0, 0.0], [0.0, 0.0, 3.0]], &cam, 1280, 720);
        assert_eq!(uv, vec![[640.0, 360.0], [640.0, 360.0]]);
    }

    #[test]
    fn projection_matches_hand_values() {
        // (0.5, −0.25, 0) + (0.1, 0.2, 50) = (0.6, −0.05, 50):
        // u = 25000·0.6/50 + 640 = 940, v = 25000·(−0.05)/50 + 360 = 335.
        let cam = FullCam {
            cam_t: [0.1, 0.2, 50.0],
            focal: 25_000.0,
        };
        let uv = project(&[[0.5, -0.25, 0.0]], &cam, 1280, 720);
        assert!(close(uv[0][0], 940.0) && close(uv[0][1], 335.0), "{:?}", uv);
    }

    #[test]
    fn the_body_origin_projects_to_the_box_centre() {
        // With zero crop translation the body origin sits on the ray through the box centre:
        // the full-frame camera must project it back onto (cx, cy), for any box and frame.
        for (center, size, s, w, h) in [
            ([640.0, 360.0], 512.0, 1.0, 1280, 720),
            ([100.0, 650.0], 300.0, 0.8, 1280, 720),
            ([1800.0, 90.0], 150.0, 1.3, 1920, 1080),
            ([360.0, 1000.0], 700.0, 0.6, 720, 1280),
        ] {
            let cam = cam_full([s, 0.0, 0.0], center, size, w, h);
            let uv = project(&[[0.0, 0.0, 0.0]], &cam, w, h)[0];
            assert!((uv[0] - center[0]).abs() < 1e-2, "{uv:?} vs {center:?}");
            assert!((uv[1] - center[1]).abs() < 1e-2, "{uv:?} vs {center:?}");
        }
    }
}
