//! Synthetic video frames for `demo` and `bench`: a textured background (gradients, waves, hard
//! edges and sensor-like grain, so a JPEG of it has the size and decode cost of a real video
//! frame, ~150–250 KB at 720p q90) with walking stick-figure people on it, and their boxes.
//!
//! Deterministic: frame `i` of a sequence is always the same picture, and consecutive frames show
//! the figures a step further along their walk, like consecutive frames of a video.

use ::image::{codecs::jpeg::JpegEncoder, Rgb, RgbImage};

/// JPEG quality of synthetic frames (what video splitters commonly write).
pub const JPEG_QUALITY: u8 = 90;

/// Most figures one frame can show.
pub const MAX_PEOPLE: usize = 3;

/// One encoded synthetic frame and the boxes of the figures on it.
#[derive(Debug, Clone)]
pub struct SyntheticFrame {
    pub jpeg: Vec<u8>,
    /// `[x1, y1, x2, y2]` of each figure, in pixels, clipped to the frame.
    pub boxes: Vec<[f64; 4]>,
}

/// A limb of a figure: a capsule (segment with a radius) and its colour.
struct Capsule {
    a: [f32; 2],
    b: [f32; 2],
    r: f32,
    colour: [f32; 3],
}

/// The figure of person `p` on frame `index` of a `width × height` sequence: capsules and box.
fn figure(width: u32, height: u32, p: usize, index: usize) -> (Vec<Capsule>, [f64; 4]) {
    let (w, h) = (width as f32, height as f32);
    // Each person walks across at its own pace and height; the gait phase advances per frame.
    let scale = [0.62, 0.48, 0.75][p % 3] * h;
    let lane = [0.5, 0.18, 0.82][p % 3];
    let speed = [0.011, 0.017, 0.008][p % 3];
    let x = w * ((lane + index as f32 * speed) % 1.0);
    let feet = h * (0.93 - 0.04 * p as f32);
    let phase = index as f32 * 0.45 + p as f32 * 1.7;
    let swing = phase.sin() * 0.45;

    let u = scale / 8.0; // one "head" unit: a figure is eight heads tall
    let hip = [x, feet - 4.0 * u];
    let neck = [x + 0.1 * u, feet - 6.9 * u];
    let head = [x + 0.15 * u, feet - 7.45 * u];
    let shoulder_l = [neck[0] - 0.9 * u, neck[1] + 0.3 * u];
    let shoulder_r = [neck[0] + 0.9 * u, neck[1] + 0.3 * u];
    let limb = |from: [f32; 2], len: f32, angle: f32| {
        [from[0] + len * angle.sin(), from[1] + len * angle.cos()]
    };
    let elbow_l = limb(shoulder_l, 1.5 * u, swing);
    let wrist_l = limb(elbow_l, 1.4 * u, swing + 0.35);
    let elbow_r = limb(shoulder_r, 1.5 * u, -swing);
    let wrist_r = limb(elbow_r, 1.4 * u, -swing + 0.35);
    let hip_l = [hip[0] - 0.45 * u, hip[1]];
    let hip_r = [hip[0] + 0.45 * u, hip[1]];
    let knee_l = limb(hip_l, 2.0 * u, -swing);
    let ankle_l = limb(knee_l, 1.9 * u, -swing - 0.25 * swing.abs());
    let knee_r = limb(hip_r, 2.0 * u, swing);
    let ankle_r = limb(knee_r, 1.9 * u, swing - 0.25 * swing.abs());

    let shirt = [
        [200.0, 60.0, 50.0],
        [40.0, 110.0, 200.0],
        [230.0, 190.0, 40.0],
    ][p % 3];
    let pants = [[40.0, 50.0, 90.0], [70.0, 70.0, 70.0], [30.0, 90.0, 50.0]][p % 3];
    let skin = [225.0, 180.0, 150.0];
    let cap = |a, b, r: f32, colour| Capsule {
        a,
        b,
        r: r * u,
        colour,
    };
    let foot_l = [ankle_l[0] + 0.5 * u, ankle_l[1]];
    let foot_r = [ankle_r[0] + 0.5 * u, ankle_r[1]];
    let capsules = vec![
        cap(hip_l, knee_l, 0.38, pants),
        cap(knee_l, ankle_l, 0.32, pants),
        cap(ankle_l, foot_l, 0.2, [30.0, 30.0, 30.0]),
        cap(hip_r, knee_r, 0.38, pants),
        cap(knee_r, ankle_r, 0.32, pants),
        cap(ankle_r, foot_r, 0.2, [30.0, 30.0, 30.0]),
        cap([hip[0], hip[1] - 0.2 * u], neck, 0.85, shirt),
        cap(shoulder_l, elbow_l, 0.3, shirt),
        cap(elbow_l, wrist_l, 0.25, skin),
        cap(shoulder_r, elbow_r, 0.3, shirt),
        cap(elbow_r, wrist_r, 0.25, skin),
        cap(neck, head, 0.2, skin),
        cap(head, [head[0], head[1] - 0.3 * u], 0.5, skin),
    ];
    let (mut x1, mut y1, mut x2, mut y2) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for c in &capsules {
        for q in [c.a, c.b] {
            x1 = x1.min(q[0] - c.r);
            y1 = y1.min(q[1] - c.r);
            x2 = x2.max(q[0] + c.r);
            y2 = y2.max(q[1] + c.r);
        }
    }
    let clip = |v: f32, max: f32| f64::from(v.clamp(0.0, max - 1.0));
    let bbox = [clip(x1, w), clip(y1, h), clip(x2, w), clip(y2, h)];
    (capsules, bbox)
}

fn segment_distance(p: [f32; 2], a: [f32; 2], b: [f32; 2]) -> f32 {
    let (abx, aby) = (b[0] - a[0], b[1] - a[1]);
    let (apx, apy) = (p[0] - a[0], p[1] - a[1]);
    let len2 = abx * abx + aby * aby;
    let t = if len2 > 0.0 {
        ((apx * abx + apy * aby) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (apx - t * abx).hypot(apy - t * aby)
}

/// The textured background: smooth gradients and waves (most of a video frame), hard edges,
/// and per-pixel grain, moving slightly from frame to frame.
fn background(width: u32, height: u32, index: usize) -> RgbImage {
    let shift = index as f32 * 3.0;
    RgbImage::from_fn(width, height, |x, y| {
        let (xf, yf) = (x as f32 + shift, y as f32);
        let n = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ (index as u32))
            .wrapping_mul(2_654_435_761);
        let noise = (n >> 28) as f32 - 8.0;
        let wave = 40.0 * ((xf / 41.0).sin() * (yf / 29.0).cos());
        let bars = if ((xf as u32) / 64) % 2 == 0 {
            25.0
        } else {
            -25.0
        };
        let floor = if yf > height as f32 * 0.7 { -30.0 } else { 0.0 };
        let r = 60.0 + xf * 0.08 + wave + noise + floor;
        let g = 80.0 + yf * 0.15 - wave + bars + noise + floor;
        let b = 130.0 - bars + 0.5 * wave + noise;
        Rgb([r, g, b].map(|v| v.clamp(0.0, 255.0) as u8))
    })
}

/// Frame `index` of a sequence with `people` (0..=[`MAX_PEOPLE`]) walking figures, as pixels,
/// and the figures' boxes.
pub fn render(width: u32, height: u32, people: usize, index: usize) -> (RgbImage, Vec<[f64; 4]>) {
    let mut img = background(width, height, index);
    let mut boxes = Vec::new();
    for p in 0..people.min(MAX_PEOPLE) {
        let (capsules, bbox) = figure(width, height, p, index);
        let [x1, y1, x2, y2] = bbox.map(|v| v as u32);
        for y in y1..=y2.min(height - 1) {
            for x in x1..=x2.min(width - 1) {
                let q = [x as f32, y as f32];
                // The last capsule drawn wins (arms over the torso, the head on top).
                let hit = capsules
                    .iter()
                    .rev()
                    .find(|c| segment_distance(q, c.a, c.b) <= c.r);
                if let Some(c) = hit {
                    // A little shading towards the capsule's edge, so it is not flat.
                    let d = segment_distance(q, c.a, c.b) / c.r;
                    let shade = 1.0 - 0.35 * d * d;
                    let px = img.get_pixel_mut(x, y);
                    for (ch, v) in px.0.iter_mut().zip(c.colour) {
                        *ch = (v * shade).clamp(0.0, 255.0) as u8;
                    }
                }
            }
        }
        boxes.push(bbox);
    }
    (img, boxes)
}

/// Encodes RGB pixels as a JPEG.
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .expect("encoding to memory cannot fail");
    out
}

/// `count` consecutive frames of a sequence, rendered and encoded on every core.
pub fn synthetic_frames(
    width: u32,
    height: u32,
    people: usize,
    count: usize,
) -> Vec<SyntheticFrame> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut out: Vec<Option<SyntheticFrame>> = vec![None; count];
    let per = count.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (t, slots) in out.chunks_mut(per).enumerate() {
            s.spawn(move || {
                for (k, slot) in slots.iter_mut().enumerate() {
                    let (img, boxes) = render(width, height, people, t * per + k);
                    *slot = Some(SyntheticFrame {
                        jpeg: encode_jpeg(&img, JPEG_QUALITY),
                        boxes,
                    });
                }
            });
        }
    });
    out.into_iter().map(|f| f.expect("rendered")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_textured_and_boxes_hold_their_figures() {
        let frames = synthetic_frames(640, 360, 2, 3);
        assert_eq!(frames.len(), 3);
        for f in &frames {
            // A flat frame would compress to a few KB; a textured one does not.
            assert!(f.jpeg.len() > 30_000, "JPEG of {} bytes", f.jpeg.len());
            assert_eq!(f.boxes.len(), 2);
            for b in &f.boxes {
                assert!(b[0] < b[2] && b[1] < b[3] && b[2] < 640.0 && b[3] < 360.0);
                // Figures are tall, not wide.
                assert!(b[3] - b[1] > b[2] - b[0]);
            }
        }
        assert_ne!(frames[0].jpeg, frames[1].jpeg, "consecutive frames differ");
    }

    #[test]
    fn rendering_is_deterministic() {
        assert_eq!(render(320, 180, 1, 5), render(320, 180, 1, 5));
    }
}
