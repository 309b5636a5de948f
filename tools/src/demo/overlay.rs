//! PNG overlays of a result: each person's box, the skeleton of the 25 OpenPose-order keypoints
//! (BODY_25) and the 19 other keypoints as small grey dots, drawn on the frame. A tracked
//! video's frame ([`draw_tracked`]) is drawn in one colour per track ([`track_colour`]) with the
//! track's id over the box; a person filled in by interpolation is drawn faded, its box dashed.

use ::image::{Rgb, RgbImage};
use hmr2_client::{BoxSource, Person, TrackedPerson};

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
pub(crate) fn draw_segment(
    img: &mut RgbImage,
    a: [f32; 2],
    b: [f32; 2],
    radius: f32,
    colour: [u8; 3],
) {
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

/// 3×5 bitmaps of the digits, the capital letters and a few signs, one row per 3-bit number
/// (lower-case letters are written as capitals; a character without a glyph leaves a blank).
const GLYPHS: [(char, [u8; 5]); 48] = [
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
    ('A', [2, 5, 7, 5, 5]),
    ('B', [6, 5, 6, 5, 6]),
    ('C', [3, 4, 4, 4, 3]),
    ('D', [6, 5, 5, 5, 6]),
    ('E', [7, 4, 6, 4, 7]),
    ('F', [7, 4, 6, 4, 4]),
    ('G', [3, 4, 5, 5, 3]),
    ('H', [5, 5, 7, 5, 5]),
    ('I', [7, 2, 2, 2, 7]),
    ('J', [1, 1, 1, 5, 2]),
    ('K', [5, 5, 6, 5, 5]),
    ('L', [4, 4, 4, 4, 7]),
    ('M', [5, 7, 7, 5, 5]),
    ('N', [6, 5, 5, 5, 5]),
    ('O', [2, 5, 5, 5, 2]),
    ('P', [6, 5, 6, 4, 4]),
    ('Q', [2, 5, 5, 6, 3]),
    ('R', [6, 5, 6, 5, 5]),
    ('S', [3, 4, 2, 1, 6]),
    ('T', [7, 2, 2, 2, 2]),
    ('U', [5, 5, 5, 5, 7]),
    ('V', [5, 5, 5, 5, 2]),
    ('W', [5, 5, 7, 7, 5]),
    ('X', [5, 5, 2, 5, 5]),
    ('Y', [5, 5, 2, 2, 2]),
    ('Z', [7, 1, 2, 4, 7]),
    ('#', [5, 7, 5, 7, 5]),
    ('-', [0, 0, 7, 0, 0]),
    ('+', [0, 2, 7, 2, 0]),
    ('=', [0, 7, 0, 7, 0]),
    (':', [0, 2, 0, 2, 0]),
    (',', [0, 0, 0, 2, 4]),
    ('/', [1, 1, 2, 4, 4]),
    ('(', [1, 2, 2, 2, 1]),
    (')', [4, 2, 2, 2, 4]),
    ('%', [5, 1, 2, 4, 5]),
    (' ', [0, 0, 0, 0, 0]),
];

/// How wide [`draw_text`] writes `text` at `scale`, backing included, pixels.
pub(crate) fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * 4 * scale + scale
}

/// How tall [`draw_text`] writes a line at `scale`, backing included, pixels.
pub(crate) fn text_height(scale: u32) -> u32 {
    7 * scale
}

/// Writes `text` (digits, letters and a few signs, [`GLYPHS`]) at `(x, y)`, each glyph pixel a
/// `scale`-sided square, on a dark backing so it reads on any frame.
pub(crate) fn draw_text(
    img: &mut RgbImage,
    x: u32,
    y: u32,
    text: &str,
    scale: u32,
    colour: [u8; 3],
) {
    draw_text_on(img, x, y, text, scale, colour, Some([20, 20, 20]));
}

/// [`draw_text`] on a backing of the given colour, or on none.
pub(crate) fn draw_text_on(
    img: &mut RgbImage,
    x: u32,
    y: u32,
    text: &str,
    scale: u32,
    colour: [u8; 3],
    backing: Option<[u8; 3]>,
) {
    let (w, h) = (img.width(), img.height());
    let mut put = |px: u32, py: u32, c: [u8; 3]| {
        if px < w && py < h {
            img.put_pixel(px, py, Rgb(c));
        }
    };
    if let Some(b) = backing {
        for py in y..y.saturating_add(text_height(scale)) {
            for px in x..x.saturating_add(text_width(text, scale)) {
                put(px, py, b);
            }
        }
    }
    for (i, ch) in text.chars().enumerate() {
        let ch = ch.to_ascii_uppercase();
        let Some((_, rows)) = GLYPHS.iter().find(|(c, _)| *c == ch) else {
            continue;
        };
        let gx = x.saturating_add(scale + i as u32 * 4 * scale);
        for (r, bits) in rows.iter().enumerate() {
            for c in 0..3u32 {
                if bits >> (2 - c) & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(
                                gx.saturating_add(c * scale + dx),
                                y.saturating_add(scale + r as u32 * scale + dy),
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

/// Distinct colours for tracks, in the order of their ids (track 1 the first); ids past the end
/// go round. Strong hues that stay apart from each other and from grey backgrounds.
pub const TRACK_COLOURS: [[u8; 3]; 8] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [255, 225, 25],
    [250, 190, 212],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
];

/// The colour of track `track_id` (the same in every frame of a video).
pub fn track_colour(track_id: u32) -> [u8; 3] {
    TRACK_COLOURS[(track_id.saturating_sub(1) as usize) % TRACK_COLOURS.len()]
}

/// How much of its own colour an interpolated person keeps over the frame (the rest is the
/// frame showing through).
pub const INTERPOLATED_OPACITY: f32 = 0.45;

/// Draws the people of one frame of a tracked video on `img`, each in its track's colour: the
/// box with `track <id>` over it, the skeleton of the 25 OpenPose keypoints and their joints.
/// A person filled in by interpolation is drawn faded ([`INTERPOLATED_OPACITY`]) with a dashed
/// box and `track <id> interp.` over it.
pub fn draw_tracked(img: &mut RgbImage, people: &[TrackedPerson]) {
    let unit = (img.width().max(img.height()) as f32 / 400.0).max(1.0);
    for p in people {
        let colour = track_colour(p.track_id);
        if p.interpolated {
            let mut layer = img.clone();
            draw_tracked_person(&mut layer, p, colour, unit);
            blend(img, &layer, INTERPOLATED_OPACITY);
        } else {
            draw_tracked_person(img, p, colour, unit);
        }
    }
}

fn draw_tracked_person(img: &mut RgbImage, p: &TrackedPerson, colour: [u8; 3], unit: f32) {
    let width = (1.5 * unit).ceil() as u32;
    if p.interpolated {
        draw_dashed_box(img, p.bbox, width, 8.0 * unit, colour);
    } else {
        draw_box(img, p.bbox, width, colour);
    }
    let k = &p.keypoints_2d;
    for &(a, b) in &BODY_25_BONES {
        if let (Some(&pa), Some(&pb)) = (k.get(a), k.get(b)) {
            draw_segment(img, pa, pb, 1.3 * unit, colour);
        }
    }
    for &q in k.iter().take(25) {
        draw_segment(img, q, q, 2.4 * unit, [255, 255, 255]);
        draw_segment(img, q, q, 1.5 * unit, colour);
    }
    let label = if p.interpolated {
        format!("track {} interp.", p.track_id)
    } else {
        format!("track {}", p.track_id)
    };
    let scale = (1.5 * unit).round().max(2.0) as u32;
    let y = (p.bbox[1] - text_height(scale) as f32 - unit).max(0.0) as u32;
    draw_text(img, p.bbox[0].max(0.0) as u32, y, &label, scale, colour);
}

/// Mixes `layer` into `img` where they differ: `opacity` of the layer, the rest of the image.
fn blend(img: &mut RgbImage, layer: &RgbImage, opacity: f32) {
    for (dst, src) in img.pixels_mut().zip(layer.pixels()) {
        if dst != src {
            for c in 0..3 {
                let v = opacity * src.0[c] as f32 + (1.0 - opacity) * dst.0[c] as f32;
                dst.0[c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// A box whose edges are dashes of `dash` pixels with gaps as long.
fn draw_dashed_box(img: &mut RgbImage, b: [f32; 4], width: u32, dash: f32, colour: [u8; 3]) {
    let r = width as f32 / 2.0;
    let [x1, y1, x2, y2] = b;
    if !b.iter().all(|v| v.is_finite()) {
        return;
    }
    for (p, q) in [
        ([x1, y1], [x2, y1]),
        ([x2, y1], [x2, y2]),
        ([x2, y2], [x1, y2]),
        ([x1, y2], [x1, y1]),
    ] {
        let len = (q[0] - p[0]).hypot(q[1] - p[1]);
        // At most a few thousand dashes, whatever the box says.
        let dash = dash.max(1.0).max(len / 4096.0);
        let mut t = 0.0;
        while t < len {
            let e = (t + dash).min(len);
            let at = |s: f32| {
                [
                    p[0] + (q[0] - p[0]) * s / len,
                    p[1] + (q[1] - p[1]) * s / len,
                ]
            };
            draw_segment(img, at(t), at(e), r, colour);
            t += 2.0 * dash;
        }
    }
}

/// One row of a [`draw_legend`]: a swatch (solid, or dashed and faded for interpolated people)
/// and its text.
pub struct LegendRow {
    pub colour: [u8; 3],
    pub dashed: bool,
    pub text: String,
}

/// Draws a legend in the top-left corner: `title`, then one row per entry.
pub fn draw_legend(img: &mut RgbImage, title: &str, rows: &[LegendRow]) {
    let unit = (img.width().max(img.height()) as f32 / 400.0).max(1.0);
    let scale = (1.5 * unit).round().max(2.0) as u32;
    let line = text_height(scale) + scale;
    let swatch = 6 * scale;
    let widest = rows
        .iter()
        .map(|r| swatch + scale + text_width(&r.text, scale))
        .chain([text_width(title, scale)])
        .max()
        .unwrap_or(0);
    let height = line * (rows.len() as u32 + 1) + scale;
    let x0 = 2 * scale;
    let y0 = 2 * scale;
    for y in y0..(y0 + height).min(img.height()) {
        for x in x0..(x0 + widest + 2 * scale).min(img.width()) {
            img.put_pixel(x, y, Rgb([20, 20, 20]));
        }
    }
    draw_text(img, x0 + scale, y0 + scale, title, scale, [230, 230, 230]);
    for (i, r) in rows.iter().enumerate() {
        let y = y0 + scale + line * (i as u32 + 1);
        let mid = (y + text_height(scale) / 2) as f32;
        let (a, b) = (
            [(x0 + scale) as f32, mid],
            [(x0 + scale + swatch) as f32, mid],
        );
        if r.dashed {
            let faded = r.colour.map(|c| {
                (INTERPOLATED_OPACITY * c as f32 + (1.0 - INTERPOLATED_OPACITY) * 20.0) as u8
            });
            let d = swatch as f32 / 5.0;
            for k in [0.0, 2.0, 4.0] {
                draw_segment(
                    img,
                    [a[0] + k * d, mid],
                    [a[0] + (k + 1.0) * d, mid],
                    unit,
                    faded,
                );
            }
        } else {
            draw_segment(img, a, b, unit, r.colour);
        }
        draw_text(img, x0 + 2 * scale + swatch, y, &r.text, scale, r.colour);
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

    fn tracked(id: u32, bbox: [f32; 4], interpolated: bool) -> TrackedPerson {
        let mut keypoints = vec![[-100.0, -100.0]; 44];
        keypoints[1] = [50.0, 30.0];
        keypoints[8] = [50.0, 70.0];
        TrackedPerson {
            track_id: id,
            bbox,
            score: Some(0.9),
            box_source: BoxSource::Detector,
            global_orient: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            body_pose: Vec::new(),
            betas: Vec::new(),
            pred_cam_t_full: [0.0, 0.0, 10.0],
            focal_length: 5000.0,
            keypoints_2d: keypoints,
            keypoints_3d: Vec::new(),
            interpolated,
            vertices: None,
        }
    }

    #[test]
    fn each_track_keeps_one_colour_and_tracks_side_by_side_differ() {
        // The same id gets the same colour every time (every frame of a video).
        assert_eq!(track_colour(2), track_colour(2));
        assert_eq!(track_colour(1), TRACK_COLOURS[0]);
        // The first tracks are all told apart, clearly (no two closer than 100 in RGB).
        let n = TRACK_COLOURS.len() as u32;
        for a in 1..=n {
            for b in a + 1..=n {
                let (p, q) = (track_colour(a), track_colour(b));
                let d: f32 = (0..3)
                    .map(|c| (p[c] as f32 - q[c] as f32).powi(2))
                    .sum::<f32>()
                    .sqrt();
                assert!(d > 100.0, "tracks {a} and {b}: {p:?} vs {q:?}");
            }
        }
        // Past the palette the colours go round; id 0 (never given) does not panic.
        assert_eq!(track_colour(n + 1), track_colour(1));
        let _ = track_colour(0);
    }

    #[test]
    fn a_tracked_person_is_drawn_in_its_track_colour_an_interpolated_one_faded_and_dashed() {
        let grey = Rgb([100, 100, 100]);
        let mut img = RgbImage::from_pixel(200, 100, grey);
        let seen = tracked(3, [10.0, 10.0, 90.0, 90.0], false);
        let mut filled = tracked(2, [110.0, 10.0, 190.0, 90.0], true);
        filled.keypoints_2d[1] = [150.0, 30.0];
        filled.keypoints_2d[8] = [150.0, 70.0];
        draw_tracked(&mut img, &[seen, filled]);
        let (c3, c2) = (track_colour(3), track_colour(2));
        // Track 3: its bone and its box's left edge in its colour.
        assert_eq!(img.get_pixel(50, 50).0, c3, "bone");
        assert_eq!(img.get_pixel(10, 60).0, c3, "box edge");
        // Track 2, interpolated: the bone is its colour mixed with the frame.
        let mixed = |c: [u8; 3]| {
            c.map(|v| {
                (INTERPOLATED_OPACITY * v as f32 + (1.0 - INTERPOLATED_OPACITY) * 100.0).round()
                    as u8
            })
        };
        assert_eq!(img.get_pixel(150, 50).0, mixed(c2), "faded bone");
        assert!(
            !img.pixels().any(|p| p.0 == c2),
            "nothing of track 2 at full strength"
        );
        // Its left edge is dashed: some rows of the edge drawn, some left as the frame.
        let edge: Vec<bool> = (20..80)
            .map(|y| img.get_pixel(110, y).0 != grey.0)
            .collect();
        assert!(
            edge.iter().any(|&d| d) && edge.iter().any(|&d| !d),
            "{edge:?}"
        );
    }

    #[test]
    fn letters_and_signs_have_glyphs_and_lower_case_is_written_as_capitals() {
        let mut upper = RgbImage::new(80, 10);
        let mut lower = RgbImage::new(80, 10);
        draw_text(&mut upper, 0, 0, "TRACK #2", 1, [255, 255, 255]);
        draw_text(&mut lower, 0, 0, "track #2", 1, [255, 255, 255]);
        assert_eq!(upper, lower);
        for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ#-+=:,/()%".chars() {
            let (_, rows) = GLYPHS.iter().find(|(c, _)| *c == ch).expect("a glyph");
            assert!(rows.iter().any(|&r| r != 0), "{ch} draws something");
        }
        // No two glyphs alike.
        for (i, (a, ra)) in GLYPHS.iter().enumerate() {
            for (b, rb) in &GLYPHS[i + 1..] {
                assert!(ra != rb, "{a} and {b} look the same");
            }
        }
    }
}
