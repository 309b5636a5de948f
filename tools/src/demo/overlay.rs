//! PNG overlays of a result: each person's box, the skeleton of the 25 OpenPose-order keypoints
//! (BODY_25) and the 19 other keypoints as small grey dots, drawn on the frame.

use ::image::{Rgb, RgbImage};
use hmr2_client::{BoxSource, Person};

/// The bones of OpenPose BODY_25 (the first 25 of the 44 keypoints, `shared/HMR2_FACTS.md`):
/// 0 nose, 1 neck, 2–4 right shoulder/elbow/wrist, 5–7 left shoulder/elbow/wrist, 8 mid hip,
/// 9–11 right hip/knee/ankle, 12–14 left hip/knee/ankle, 15/16 right/left eye, 17/18 right/left
/// ear, 19–21 left big toe/small toe/heel, 22–24 right big toe/small toe/heel.
pub const BODY_25_BONES: [(usize, usize); 24] = [
    (1, 8),
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (8, 9),
    (9, 10),
    (10, 11),
    (8, 12),
    (12, 13),
    (13, 14),
    (1, 0),
    (0, 15),
    (15, 17),
    (0, 16),
    (16, 18),
    (14, 19),
    (19, 20),
    (14, 21),
    (11, 22),
    (22, 23),
    (11, 24),
];

/// OpenPose's colour of each bone, in [`BODY_25_BONES`] order.
const BONE_COLOURS: [[u8; 3]; 24] = [
    [255, 0, 85],
    [255, 0, 0],
    [255, 85, 0],
    [255, 170, 0],
    [255, 255, 0],
    [170, 255, 0],
    [85, 255, 0],
    [255, 0, 0],
    [0, 255, 85],
    [0, 255, 170],
    [0, 255, 255],
    [0, 170, 255],
    [0, 85, 255],
    [0, 0, 255],
    [255, 0, 170],
    [170, 0, 255],
    [255, 0, 255],
    [85, 0, 255],
    [0, 0, 255],
    [0, 0, 255],
    [0, 0, 255],
    [0, 255, 255],
    [0, 255, 255],
    [0, 255, 255],
];

/// Draws every person of a result on `img` (box, the detector's score above a detected box, and
/// the 2D keypoints); line widths scale with the frame.
pub fn draw(img: &mut RgbImage, people: &[Person]) {
    let unit = (img.width().max(img.height()) as f32 / 400.0).max(1.0);
    for p in people {
        let colour = match p.box_source {
            BoxSource::Detector => [80, 255, 120],
            BoxSource::Job => [255, 255, 255],
            BoxSource::Frame => [160, 160, 160],
        };
        draw_box(img, p.bbox, unit.ceil() as u32, colour);
        if let Some(score) = p.score {
            let text = format!("{score:.2}");
            let scale = (2.0 * unit).round().max(2.0) as u32;
            let y = (p.bbox[1] - 7.0 * scale as f32).max(0.0) as u32;
            draw_text(img, p.bbox[0].max(0.0) as u32, y, &text, scale, colour);
        }
        let k = &p.keypoints_2d;
        for (&(a, b), colour) in BODY_25_BONES.iter().zip(BONE_COLOURS) {
            if let (Some(&pa), Some(&pb)) = (k.get(a), k.get(b)) {
                draw_segment(img, pa, pb, 1.2 * unit, colour);
            }
        }
        for (i, &q) in k.iter().enumerate() {
            if i < 25 {
                draw_segment(img, q, q, 2.2 * unit, [255, 255, 255]);
                draw_segment(img, q, q, 1.4 * unit, [20, 20, 20]);
            } else {
                draw_segment(img, q, q, 1.2 * unit, [160, 160, 160]);
            }
        }
    }
}

/// Fills every pixel within `radius` of the segment `a`–`b` (a dot when `a == b`).
fn draw_segment(img: &mut RgbImage, a: [f32; 2], b: [f32; 2], radius: f32, colour: [u8; 3]) {
    if !(a.iter().chain(&b).all(|v| v.is_finite())) {
        return;
    }
    let (w, h) = (img.width() as f32, img.height() as f32);
    let x1 = (a[0].min(b[0]) - radius).floor().max(0.0);
    let x2 = (a[0].max(b[0]) + radius).ceil().min(w - 1.0);
    let y1 = (a[1].min(b[1]) - radius).floor().max(0.0);
    let y2 = (a[1].max(b[1]) + radius).ceil().min(h - 1.0);
    if x1 > x2 || y1 > y2 {
        return;
    }
    let (abx, aby) = (b[0] - a[0], b[1] - a[1]);
    let len2 = abx * abx + aby * aby;
    for y in y1 as u32..=y2 as u32 {
        for x in x1 as u32..=x2 as u32 {
            let (px, py) = (x as f32 - a[0], y as f32 - a[1]);
            let t = if len2 > 0.0 {
                ((px * abx + py * aby) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            if (px - t * abx).hypot(py - t * aby) <= radius {
                img.put_pixel(x, y, Rgb(colour));
            }
        }
    }
}

/// 3×5 bitmaps of the digits and the decimal point, one row per 3-bit number.
const GLYPHS: [(char, [u8; 5]); 11] = [
    ('0', [7, 5, 5, 5, 7]),
    ('1', [2, 6, 2, 2, 7]),
    ('2', [7, 1, 7, 4, 7]),
    ('3', [7, 1, 7, 1, 7]),
    ('4', [5, 5, 7, 1, 1]),
    ('5', [7, 4, 7, 1, 7]),
    ('6', [7, 4, 7, 5, 7]),
    ('7', [7, 1, 1, 1, 1]),
    ('8', [7, 5, 7, 5, 7]),
    ('9', [7, 5, 7, 1, 7]),
    ('.', [0, 0, 0, 0, 2]),
];

/// Writes `text` (digits and '.') at `(x, y)`, each glyph pixel a `scale`-sided square, on a
/// dark backing so it reads on any frame.
fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32, colour: [u8; 3]) {
    let (w, h) = (img.width(), img.height());
    let mut put = |px: u32, py: u32, c: [u8; 3]| {
        if px < w && py < h {
            img.put_pixel(px, py, Rgb(c));
        }
    };
    let width = text.chars().count() as u32 * 4 * scale + scale;
    for py in y..y + 7 * scale {
        for px in x..x + width {
            put(px, py, [20, 20, 20]);
        }
    }
    for (i, ch) in text.chars().enumerate() {
        let Some((_, rows)) = GLYPHS.iter().find(|(c, _)| *c == ch) else {
            continue;
        };
        let gx = x + scale + i as u32 * 4 * scale;
        for (r, bits) in rows.iter().enumerate() {
            for c in 0..3u32 {
                if bits >> (2 - c) & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(
                                gx + c * scale + dx,
                                y + scale + r as u32 * scale + dy,
                                colour,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn draw_box(img: &mut RgbImage, b: [f32; 4], width: u32, colour: [u8; 3]) {
    let r = width as f32 / 2.0;
    let [x1, y1, x2, y2] = b;
    for (p, q) in [
        ([x1, y1], [x2, y1]),
        ([x2, y1], [x2, y2]),
        ([x2, y2], [x1, y2]),
        ([x1, y2], [x1, y1]),
    ] {
        draw_segment(img, p, q, r, colour);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_written_in_digits_on_a_dark_backing() {
        let mut img = RgbImage::from_pixel(40, 20, Rgb([255, 255, 255]));
        draw_text(&mut img, 0, 0, "1.", 1, [0, 200, 0]);
        // '1' row 0 is .X. : the middle column, one pixel in from the backing's edge.
        assert_eq!(img.get_pixel(2, 1).0, [0, 200, 0]);
        assert_eq!(img.get_pixel(1, 1).0, [20, 20, 20]);
        // '.' lights only its bottom-middle pixel.
        assert_eq!(img.get_pixel(6, 5).0, [0, 200, 0]);
        assert_eq!(img.get_pixel(6, 1).0, [20, 20, 20]);
        // Outside the backing nothing changed; text off the frame is clipped, not a panic.
        assert_eq!(img.get_pixel(30, 10).0, [255, 255, 255]);
        draw_text(&mut img, 38, 18, "0.99", 3, [1, 2, 3]);
    }

    #[test]
    fn bones_stay_within_the_openpose_25() {
        for (a, b) in BODY_25_BONES {
            assert!(a < 25 && b < 25 && a != b);
        }
        // Every one of the 25 joints is connected (a tree: 25 joints, 24 bones).
        let mut seen = [false; 25];
        for (a, b) in BODY_25_BONES {
            seen[a] = true;
            seen[b] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn drawing_marks_the_keypoints_and_ignores_points_off_frame() {
        let mut img = RgbImage::new(100, 100);
        let mut keypoints = vec![[5.0, 95.0]; 44];
        keypoints[1] = [50.0, 20.0];
        keypoints[8] = [50.0, 80.0];
        keypoints[30] = [f32::NAN, 1e9];
        keypoints[31] = [-1e6, -1e6];
        let p = Person {
            bbox: [10.0, 10.0, 90.0, 90.0],
            box_source: hmr2_client::BoxSource::Job,
            score: None,
            box_center: [50.0, 50.0],
            box_size: 80.0,
            pred_cam: [1.0, 0.0, 0.0],
            pred_cam_t_full: [0.0, 0.0, 10.0],
            focal_length: 500.0,
            global_orient: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            body_pose: Vec::new(),
            betas: Vec::new(),
            keypoints_3d: Vec::new(),
            keypoints_2d: keypoints,
            vertices: None,
        };
        draw(&mut img, &[p]);
        // The neck–mid-hip bone (1, 8) is drawn in its colour half-way between them.
        assert_eq!(img.get_pixel(50, 35).0, BONE_COLOURS[0]);
        assert_eq!(img.get_pixel(10, 50).0, [255, 255, 255], "box edge");
        assert_eq!(img.get_pixel(70, 50).0, [0, 0, 0], "background untouched");
    }
}
