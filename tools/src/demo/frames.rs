//! Synthetic video frames for `demo`, `bench` and `synth`: a textured background (gradients,
//! waves, hard edges and sensor-like grain, so a JPEG of it has the size and decode cost of a
//! real video frame, ~150–250 KB at 720p q90) with walking stick-figure people on it, and their
//! boxes.
//!
//! Two kinds of pictures, both deterministic:
//! - [`render`]: frame `i` of a sequence, the figures in fixed lanes a step further along their
//!   walk on each frame, like consecutive frames of a video (`demo`, `bench`).
//! - [`render_random`]: a picture drawn from a seed, 0–3 figures of any size anywhere, on a
//!   background of random colours and texture (training and testing the person detector).

use std::f32::consts::TAU;

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

/// Where a figure stands, how tall it is and how far along its stride.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    /// x of the hips, in pixels.
    pub x: f32,
    /// y of the ground under the feet, in pixels.
    pub feet: f32,
    /// Height in pixels (eight heads; the box, head top to soles, is ~5% more).
    pub height: f32,
    /// Gait phase in radians: arms and legs swing with its sine.
    pub phase: f32,
}

/// Colours of a figure (RGB, 0–255).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Look {
    pub shirt: [f32; 3],
    pub pants: [f32; 3],
    pub skin: [f32; 3],
}

/// The looks of the sequence figures, by person index.
const LOOKS: [Look; 3] = [
    Look {
        shirt: [200.0, 60.0, 50.0],
        pants: [40.0, 50.0, 90.0],
        skin: [225.0, 180.0, 150.0],
    },
    Look {
        shirt: [40.0, 110.0, 200.0],
        pants: [70.0, 70.0, 70.0],
        skin: [225.0, 180.0, 150.0],
    },
    Look {
        shirt: [230.0, 190.0, 40.0],
        pants: [30.0, 90.0, 50.0],
        skin: [225.0, 180.0, 150.0],
    },
];

/// A limb of a figure: a capsule (segment with a radius) and its colour.
struct Capsule {
    a: [f32; 2],
    b: [f32; 2],
    r: f32,
    colour: [f32; 3],
}

/// Person `p` of a sequence on frame `index`: each walks across at its own pace, height and
/// ground line; the gait phase advances per frame.
fn lane_pose(width: u32, height: u32, p: usize, index: usize) -> Pose {
    let (w, h) = (width as f32, height as f32);
    let lane = [0.5, 0.18, 0.82][p % 3];
    let speed = [0.011, 0.017, 0.008][p % 3];
    Pose {
        x: w * ((lane + index as f32 * speed) % 1.0),
        feet: h * (0.93 - 0.04 * p as f32),
        height: [0.62, 0.48, 0.75][p % 3] * h,
        phase: index as f32 * 0.45 + p as f32 * 1.7,
    }
}

/// A figure in `pose` and `look` on a `width × height` frame: its capsules and its box (tight,
/// clipped to the frame).
fn figure(width: u32, height: u32, pose: &Pose, look: &Look) -> (Vec<Capsule>, [f64; 4]) {
    let (w, h) = (width as f32, height as f32);
    let (x, feet) = (pose.x, pose.feet);
    let swing = pose.phase.sin() * 0.45;

    let u = pose.height / 8.0; // one "head" unit: a figure is eight heads tall
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

    let Look { shirt, pants, skin } = *look;
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

/// The parameters of a textured background.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Backdrop {
    /// Horizontal shift of the pattern, in pixels (the camera panning).
    shift: f32,
    /// RGB at the top-left corner, before waves, bars and grain.
    base: [f32; 3],
    /// Amplitude and periods (x, y) of the waves.
    wave: f32,
    period: [f32; 2],
    /// Width and amplitude of the vertical bars (hard edges).
    bar_width: u32,
    bars: f32,
    /// Where the floor starts (fraction of the height) and how much darker it is.
    floor_at: f32,
    floor: f32,
    /// Seed of the per-pixel grain.
    grain: u32,
}

impl Backdrop {
    /// The background of frame `index` of a sequence.
    fn sequence(index: usize) -> Self {
        Backdrop {
            shift: index as f32 * 3.0,
            base: [60.0, 80.0, 130.0],
            wave: 40.0,
            period: [41.0, 29.0],
            bar_width: 64,
            bars: 25.0,
            floor_at: 0.7,
            floor: -30.0,
            grain: index as u32,
        }
    }

    /// A background of random colours and texture.
    fn random(rng: &mut SplitMix64) -> Self {
        Backdrop {
            shift: rng.range(0.0, 1000.0),
            base: [
                rng.range(10.0, 150.0),
                rng.range(20.0, 150.0),
                rng.range(30.0, 200.0),
            ],
            wave: rng.range(5.0, 60.0),
            period: [rng.range(12.0, 90.0), rng.range(10.0, 70.0)],
            bar_width: 8 + rng.below(150) as u32,
            bars: rng.range(0.0, 45.0),
            floor_at: rng.range(0.45, 0.95),
            floor: rng.range(-50.0, 30.0),
            grain: rng.next_u64() as u32,
        }
    }
}

/// The textured background: smooth gradients and waves (most of a video frame), hard edges,
/// and per-pixel grain.
fn background(width: u32, height: u32, d: &Backdrop) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let (xf, yf) = (x as f32 + d.shift, y as f32);
        let n = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ d.grain)
            .wrapping_mul(2_654_435_761);
        let noise = (n >> 28) as f32 - 8.0;
        let wave = d.wave * ((xf / d.period[0]).sin() * (yf / d.period[1]).cos());
        let bars = if ((xf as u32) / d.bar_width) % 2 == 0 {
            d.bars
        } else {
            -d.bars
        };
        let floor = if yf > height as f32 * d.floor_at {
            d.floor
        } else {
            0.0
        };
        let r = d.base[0] + xf * 0.08 + wave + noise + floor;
        let g = d.base[1] + yf * 0.15 - wave + bars + noise + floor;
        let b = d.base[2] - bars + 0.5 * wave + noise;
        Rgb([r, g, b].map(|v| v.clamp(0.0, 255.0) as u8))
    })
}

/// Paints a figure's capsules inside its box.
fn draw(img: &mut RgbImage, capsules: &[Capsule], bbox: [f64; 4]) {
    let (width, height) = img.dimensions();
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
}

/// Frame `index` of a sequence with `people` (0..=[`MAX_PEOPLE`]) walking figures, as pixels,
/// and the figures' boxes.
pub fn render(width: u32, height: u32, people: usize, index: usize) -> (RgbImage, Vec<[f64; 4]>) {
    let mut img = background(width, height, &Backdrop::sequence(index));
    let mut boxes = Vec::new();
    for p in 0..people.min(MAX_PEOPLE) {
        let pose = lane_pose(width, height, p, index);
        let (capsules, bbox) = figure(width, height, &pose, &LOOKS[p % 3]);
        draw(&mut img, &capsules, bbox);
        boxes.push(bbox);
    }
    (img, boxes)
}

/// Frames in [`render_clip`]'s clip.
pub const CLIP_FRAMES: usize = 48;

/// Frames per second of [`render_clip`]'s clip.
pub const CLIP_FPS: f64 = 12.0;

/// One figure of a clip frame: which person (0, 1, 2), its box, and whether it can be seen
/// (not hidden behind a nearer figure).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipPerson {
    pub person: usize,
    pub bbox: [f64; 4],
    pub visible: bool,
}

/// Where person `p` of the clip is on frame `index`, if in the frame: 0 walks left to right
/// near the camera, 1 right to left further away (hidden behind 0 while they cross), 2 enters
/// from the left two thirds of the way through, behind 1 and never meeting it.
fn clip_pose(width: u32, height: u32, p: usize, index: usize) -> Option<Pose> {
    let (w, h) = (width as f32, height as f32);
    let t = index as f32 / (CLIP_FRAMES - 1) as f32;
    let (x, feet, tall) = match p {
        0 => (0.12 + 0.56 * t, 0.95, 0.62),
        1 => (0.88 - 0.56 * t, 0.86, 0.5),
        _ => {
            let start = 0.62;
            if t < start {
                return None;
            }
            (0.02 + 0.36 * (t - start), 0.9, 0.56)
        }
    };
    Some(Pose {
        x: w * x,
        feet: h * feet,
        height: h * tall,
        phase: index as f32 * 0.6 + p as f32 * 1.7,
    })
}

/// Frame `index` (below [`CLIP_FRAMES`]) of the tracking clip: two figures crossing, the far one
/// hidden behind the near one for a few frames, and a third entering late. The far figure is
/// drawn first, so the near one covers it; a figure whose box is more than 60% covered by a
/// nearer one's counts as not visible.
pub fn render_clip(width: u32, height: u32, index: usize) -> (RgbImage, Vec<ClipPerson>) {
    let mut img = background(width, height, &Backdrop::sequence(index));
    let figures: Vec<(usize, Vec<Capsule>, [f64; 4])> = [1, 2, 0]
        .into_iter()
        .filter_map(|p| {
            let pose = clip_pose(width, height, p, index)?;
            let (capsules, bbox) = figure(width, height, &pose, &LOOKS[p]);
            Some((p, capsules, bbox))
        })
        .collect();
    let mut people = Vec::new();
    for (i, (p, capsules, bbox)) in figures.iter().enumerate() {
        draw(&mut img, capsules, *bbox);
        let hidden = figures[i + 1..]
            .iter()
            .any(|(_, _, near)| covered(bbox, near) > 0.6);
        people.push(ClipPerson {
            person: *p,
            bbox: *bbox,
            visible: !hidden,
        });
    }
    people.sort_by_key(|c| c.person);
    (img, people)
}

/// A picture drawn from `seed`: a background of random colours and texture with 0–3 figures
/// (as many of each count), each 20–90% of the frame height, in a random stride and random
/// colours, anywhere in the frame with at most a little of it cut off by the edges. Figures
/// do not hide each other: a figure whose box would cover more than 40% of another's (or the
/// other way round) is drawn again elsewhere, and left out after 16 tries.
///
/// Returns the pixels and each figure's box (tight, clipped to the frame), in drawing order.
pub fn render_random(width: u32, height: u32, seed: u64) -> (RgbImage, Vec<[f64; 4]>) {
    let mut rng = SplitMix64(seed);
    let (w, h) = (width as f32, height as f32);
    let mut img = background(width, height, &Backdrop::random(&mut rng));
    let people = rng.below(MAX_PEOPLE as u64 + 1);
    let mut boxes: Vec<[f64; 4]> = Vec::new();
    for _ in 0..people {
        for _ in 0..16 {
            let tall = h * rng.range(0.2, 0.9);
            // The hips at least 12% of the height from the sides (a figure is ~40% as wide as
            // tall), the head at most 7% above the top, the feet at most 8% below the bottom.
            let margin = (0.12 * tall).min(w / 2.0);
            let pose = Pose {
                x: rng.range(margin, w - margin),
                feet: rng.range(0.96 * tall, h + 0.08 * tall),
                height: tall,
                phase: rng.range(0.0, TAU),
            };
            // Skin tones between a light and a dark one.
            let (light, dark, t) = (
                [250.0, 215.0, 185.0],
                [95.0, 60.0, 40.0],
                rng.range(0.0, 1.0),
            );
            let look = Look {
                shirt: [0; 3].map(|_| rng.range(15.0, 245.0)),
                pants: [0; 3].map(|_| rng.range(15.0, 160.0)),
                skin: [0, 1, 2].map(|i| light[i] + t * (dark[i] - light[i])),
            };
            let (capsules, bbox) = figure(width, height, &pose, &look);
            if boxes.iter().all(|b| covered(b, &bbox) <= 0.4) {
                draw(&mut img, &capsules, bbox);
                boxes.push(bbox);
                break;
            }
        }
    }
    (img, boxes)
}

/// The largest share of either box's area that their intersection covers.
fn covered(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f64; 4]| ((r[2] - r[0]) * (r[3] - r[1])).max(1.0);
    iw * ih / area(a).min(area(b))
}

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fast, well-mixed PRNG; the state is the seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is negligible for small `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }
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
    fn the_clip_crosses_hides_one_figure_a_few_frames_and_brings_a_third_late() {
        let clip: Vec<Vec<ClipPerson>> = (0..CLIP_FRAMES)
            .map(|i| render_clip(320, 180, i).1)
            .collect();
        let hidden: Vec<usize> = (0..CLIP_FRAMES)
            .filter(|&i| clip[i].iter().any(|c| c.person == 1 && !c.visible))
            .collect();
        // The far figure is hidden for a few consecutive frames around the crossing, and only it.
        assert!((2..=8).contains(&hidden.len()), "hidden on {hidden:?}");
        assert_eq!(hidden.last().unwrap() - hidden[0] + 1, hidden.len());
        assert!(clip.iter().flatten().all(|c| c.person == 1 || c.visible));
        let third: Vec<usize> = (0..CLIP_FRAMES)
            .filter(|&i| clip[i].iter().any(|c| c.person == 2))
            .collect();
        assert!(
            third[0] > CLIP_FRAMES / 2 && third.len() >= 8,
            "third figure on {third:?}"
        );
        // The near figure walks right, the far one left.
        let x = |i: usize, p: usize| clip[i].iter().find(|c| c.person == p).unwrap().bbox[0];
        assert!(x(0, 0) < x(0, 1) && x(CLIP_FRAMES - 1, 0) > x(CLIP_FRAMES - 1, 1));
    }

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
        assert_eq!(render_random(320, 180, 9), render_random(320, 180, 9));
    }

    /// FNV-1a of the pixels and the boxes' bits.
    fn fingerprint((img, boxes): (RgbImage, Vec<[f64; 4]>)) -> u64 {
        let bits = boxes
            .iter()
            .flatten()
            .flat_map(|v| v.to_bits().to_le_bytes());
        img.as_raw()
            .iter()
            .copied()
            .chain(bits)
            .fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
    }

    /// `render` draws exactly the pictures it drew before figures and backgrounds took
    /// parameters (fingerprints taken with the fixed-lane code): the demo's and the benchmarks'
    /// frames do not change.
    #[test]
    fn sequence_frames_are_unchanged() {
        for (w, h, people, index, expected) in [
            (640, 360, 3, 0, 0x9f56_e4cf_0e99_9948_u64),
            (640, 360, 3, 57, 0x6bd2_5a13_a177_44dc),
            (320, 180, 1, 5, 0x91b6_507b_4ab2_4f36),
            (1280, 720, 2, 130, 0xa89c_6e9d_5a6d_3ea4),
            (333, 1000, 3, 91, 0x375e_0a76_1881_bb58),
        ] {
            let got = fingerprint(render(w, h, people, index));
            assert_eq!(got, expected, "{w}x{h}, {people} people, frame {index}");
        }
    }

    #[test]
    fn random_frames_vary_and_boxes_fit() {
        let (mut counts, mut heights) = ([0; MAX_PEOPLE + 1], Vec::new());
        for seed in 0..240 {
            let (w, h) = [(320, 180), (180, 320), (250, 83)][seed as usize % 3];
            let (img, boxes) = render_random(w, h, seed);
            assert_eq!(img.dimensions(), (w, h));
            counts[boxes.len()] += 1;
            for b in &boxes {
                assert!(
                    0.0 <= b[0] && b[0] < b[2] && b[2] <= f64::from(w - 1),
                    "{b:?}"
                );
                assert!(
                    0.0 <= b[1] && b[1] < b[3] && b[3] <= f64::from(h - 1),
                    "{b:?}"
                );
                heights.push((b[3] - b[1]) / f64::from(h));
            }
            for (i, a) in boxes.iter().enumerate() {
                for b in &boxes[i + 1..] {
                    assert!(covered(a, b) <= 0.4, "{a:?} hides {b:?}");
                }
            }
        }
        // Every count, about as often (60 each expected; a few figures find no room).
        assert!(counts.iter().all(|&n| n > 35), "{counts:?}");
        let (lo, hi) = heights
            .iter()
            .fold((1.0_f64, 0.0_f64), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(
            lo < 0.3 && hi > 0.8,
            "figure heights {lo:.2}..{hi:.2} of the frame"
        );
        assert_ne!(render_random(320, 180, 1).0, render_random(320, 180, 2).0);
    }

    #[test]
    fn random_backgrounds_differ() {
        let mut rng = SplitMix64(7);
        let (a, b) = (Backdrop::random(&mut rng), Backdrop::random(&mut rng));
        assert_ne!(background(64, 64, &a), background(64, 64, &b));
    }
}
