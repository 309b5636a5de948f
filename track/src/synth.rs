//! Synthetic scenes with ground truth, for tests, the bench and the evaluation: people walking
//! in camera space, crossing and hiding each other, entering and leaving, seen by a noisy
//! per-frame "model" (box jitter, missed people, false positives, rotation and translation
//! noise). Seeded and deterministic (its own small PRNG).
//!
//! Camera space as the model's: x right, y down, z forward, metres; a pinhole camera of focal
//! length [`SceneConfig::focal_length`] at the image centre. Each person has a fixed skeleton
//! (24 joints in the SMPL tree, scaled by `betas[0]`) and 44 keypoints computed from the joint
//! rotations by forward kinematics, so rotation noise moves the keypoints as it would for a model.

use crate::record::{BoxSource, FrameRecord, FrameStatus, Observation, BETAS, KEYPOINTS};
use nalgebra::{UnitQuaternion, Vector3};
use std::f64::consts::PI;

/// SplitMix64: a tiny, good-enough, seedable generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for this seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// What a scene looks like and how noisy its detections are.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneConfig {
    /// Seed of everything random in the scene.
    pub seed: u64,
    /// People walking through the scene (random paths; see [`generate_with`] for given ones).
    pub people: usize,
    /// Length of the video, frames.
    pub frames: usize,
    /// Frames per second.
    pub fps: f64,
    /// `[width, height]`, pixels.
    pub image_size: [u32; 2],
    /// The camera's focal length, pixels.
    pub focal_length: f64,
    /// Standard deviation of each box coordinate of a detection, pixels.
    pub box_jitter_px: f64,
    /// Probability that a visible person is not detected in a frame.
    pub miss_rate: f64,
    /// Probability, per visible person and frame, of a false detection somewhere.
    pub false_positive_rate: f64,
    /// Share of true detections with a low score (below 0.5).
    pub low_score_rate: f64,
    /// Rotation noise of every joint (and the root), degrees per axis.
    pub rot_sigma_deg: f64,
    /// Camera-position noise, metres per axis.
    pub trans_sigma_m: f64,
    /// Depth noise as a fraction of the depth: the camera position is scaled along its viewing
    /// ray by `1 + ε`, ε ~ N(0, this), as a per-frame model's depth (from the box's scale) errs;
    /// 0 by default.
    pub depth_sigma_rel: f64,
    /// Shape noise per coefficient.
    pub betas_sigma: f64,
    /// Longest time a person stays hidden behind a nearer one (then seen again), seconds.
    pub max_hidden_s: f64,
    /// Share of frames answered with an error, and of frames never answered.
    pub error_rate: f64,
    /// Share of frames never answered (`None` records).
    pub missing_rate: f64,
    /// Everyone is in view from the first frame and walks back and forth, never leaving (long
    /// videos for the bench).
    pub stay_in_view: bool,
}

impl Default for SceneConfig {
    fn default() -> Self {
        SceneConfig {
            seed: 1,
            people: 3,
            frames: 300,
            fps: 30.0,
            image_size: [1280, 720],
            focal_length: 1000.0,
            box_jitter_px: 3.0,
            miss_rate: 0.05,
            false_positive_rate: 0.02,
            low_score_rate: 0.1,
            rot_sigma_deg: 5.0,
            trans_sigma_m: 0.02,
            depth_sigma_rel: 0.0,
            betas_sigma: 0.1,
            max_hidden_s: 0.5,
            error_rate: 0.0,
            missing_rate: 0.0,
            stay_in_view: false,
        }
    }
}

impl SceneConfig {
    /// The same scene with noise-free detections (no jitter, misses, false positives or noise).
    pub fn noiseless(mut self) -> SceneConfig {
        self.box_jitter_px = 0.0;
        self.miss_rate = 0.0;
        self.false_positive_rate = 0.0;
        self.low_score_rate = 0.0;
        self.rot_sigma_deg = 0.0;
        self.trans_sigma_m = 0.0;
        self.depth_sigma_rel = 0.0;
        self.betas_sigma = 0.0;
        self
    }
}

/// One person's path: enters at `enter` (frame), at lateral position `x0` and depth `depth`
/// (metres), walks at `velocity` (m/s, sign = direction) with a gentle sway.
#[derive(Debug, Clone, PartialEq)]
pub struct Walker {
    /// First frame in the scene.
    pub enter: usize,
    /// Leaves at this frame even if still in view.
    pub leave: Option<usize>,
    /// Lateral position at `enter`, metres.
    pub x0: f64,
    /// Mean depth, metres.
    pub depth: f64,
    /// Walking speed, m/s (sign: direction, positive to the right).
    pub velocity: f64,
    /// The person's true shape.
    pub betas: [f32; BETAS],
    /// Walks back and forth with this half-amplitude (metres) around `x0` instead of straight.
    pub sweep: Option<f64>,
    /// Phases and amplitudes of the sway and gait (from the seed).
    pub phase: [f64; 4],
}

impl Walker {
    /// A walker in a straight line; shape and phases drawn from `rng`.
    pub fn straight(enter: usize, x0: f64, depth: f64, velocity: f64, rng: &mut Rng) -> Walker {
        Walker {
            enter,
            leave: None,
            x0,
            depth,
            velocity,
            betas: std::array::from_fn(|_| rng.normal() as f32),
            sweep: None,
            phase: std::array::from_fn(|_| rng.range(0.0, 2.0 * PI)),
        }
    }
}

/// One person of the ground truth in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct GtPerson {
    /// Index of the walker, from 1.
    pub id: u32,
    /// True values (box clipped to the image; score unset).
    pub obs: Observation,
    /// Hidden behind a nearer person (present, but not detected).
    pub hidden: bool,
}

/// A scene: ground truth and what the per-frame model answered.
#[derive(Debug, Clone)]
pub struct Scene {
    /// Frames per second.
    pub fps: f64,
    /// The people, in id order (id = index + 1).
    pub walkers: Vec<Walker>,
    /// Per frame, the people present in view (hidden ones included).
    pub gt: Vec<Vec<GtPerson>>,
    /// Per frame, the model's answer.
    pub records: Vec<Option<FrameRecord>>,
    /// Per frame and detection, the true person's id (`None`: a false positive).
    pub det_ids: Vec<Vec<Option<u32>>>,
}

const PARENTS: [usize; 24] = [
    0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
];
/// Joint offsets from the parent in the body's rest frame (y up, z forward), metres.
const OFFSETS: [[f64; 3]; 24] = [
    [0.0, 0.0, 0.0],
    [0.07, -0.09, 0.0],
    [-0.07, -0.09, 0.0],
    [0.0, 0.11, -0.02],
    [0.03, -0.38, 0.0],
    [-0.03, -0.38, 0.0],
    [0.0, 0.13, 0.0],
    [-0.01, -0.40, -0.04],
    [0.01, -0.40, -0.04],
    [0.0, 0.05, 0.02],
    [0.02, -0.06, 0.12],
    [-0.02, -0.06, 0.12],
    [0.0, 0.21, -0.03],
    [0.07, 0.12, -0.01],
    [-0.07, 0.12, -0.01],
    [0.0, 0.09, 0.05],
    [0.11, 0.03, -0.01],
    [-0.11, 0.03, -0.01],
    [0.26, 0.0, -0.02],
    [-0.26, 0.0, -0.02],
    [0.25, 0.0, 0.0],
    [-0.25, 0.0, 0.0],
    [0.08, 0.0, 0.0],
    [-0.08, 0.0, 0.0],
];
/// The 20 keypoints after the 24 joints: a joint and an offset in its frame.
const EXTRA: [(usize, [f64; 3]); KEYPOINTS - 24] = [
    (15, [0.0, 0.05, 0.10]),
    (15, [0.03, 0.08, 0.08]),
    (15, [-0.03, 0.08, 0.08]),
    (15, [0.07, 0.06, 0.0]),
    (15, [-0.07, 0.06, 0.0]),
    (10, [0.0, -0.02, 0.06]),
    (11, [0.0, -0.02, 0.06]),
    (7, [0.0, -0.06, -0.06]),
    (8, [0.0, -0.06, -0.06]),
    (22, [0.07, 0.0, 0.0]),
    (23, [-0.07, 0.0, 0.0]),
    (1, [0.015, -0.19, 0.0]),
    (2, [-0.015, -0.19, 0.0]),
    (4, [-0.005, -0.2, -0.02]),
    (5, [0.005, -0.2, -0.02]),
    (16, [0.13, 0.0, -0.01]),
    (17, [-0.13, 0.0, -0.01]),
    (18, [0.12, 0.0, 0.0]),
    (19, [-0.12, 0.0, 0.0]),
    (12, [0.0, 0.1, 0.04]),
];

/// `[w, x, y, z]` with `w ≥ 0`, as the worker's `quat_from_matrix` writes it: near a half
/// turn (the root is turned 180° about x to stand up in camera space) the sign flips from frame
/// to frame, as it does for real records.
fn q4(q: &UnitQuaternion<f64>) -> [f32; 4] {
    let s = if q.w < 0.0 { -1.0 } else { 1.0 };
    [q.w, q.i, q.j, q.k].map(|v| (s * v) as f32)
}

fn axis_angle(v: [f64; 3]) -> UnitQuaternion<f64> {
    UnitQuaternion::from_scaled_axis(Vector3::new(v[0], v[1], v[2]))
}

/// Body-frame keypoints of a pose (root rotation `rots[0]`, joint rotations `rots[1..]`).
pub fn keypoints(rots: &[UnitQuaternion<f64>; 24], scale: f64) -> [[f32; 3]; KEYPOINTS] {
    let mut world = [UnitQuaternion::identity(); 24];
    let mut pos = [Vector3::zeros(); 24];
    world[0] = rots[0];
    for j in 1..24 {
        let p = PARENTS[j];
        let o = OFFSETS[j];
        pos[j] = pos[p] + world[p] * Vector3::new(o[0], o[1], o[2]) * scale;
        world[j] = world[p] * rots[j];
    }
    let mut out = [[0.0f32; 3]; KEYPOINTS];
    for j in 0..24 {
        out[j] = [pos[j].x as f32, pos[j].y as f32, pos[j].z as f32];
    }
    for (k, &(j, o)) in EXTRA.iter().enumerate() {
        let p = pos[j] + world[j] * Vector3::new(o[0], o[1], o[2]) * scale;
        out[24 + k] = [p.x as f32, p.y as f32, p.z as f32];
    }
    out
}

/// A walker's true pose at time `t` (seconds): rotations, camera position.
fn pose(w: &Walker, t: f64) -> ([UnitQuaternion<f64>; 24], [f64; 3]) {
    let [p0, p1, p2, p3] = w.phase;
    let speed = w.velocity.abs();
    let gait = 2.0 * PI * (0.6 + 0.5 * speed) * t + p0;
    let (x, dir) = match w.sweep {
        Some(a) if a > 0.0 => {
            let arg = w.velocity * t / a + p1;
            (w.x0 + a * arg.sin(), arg.cos() * w.velocity.signum())
        }
        _ => (w.x0 + w.velocity * t, w.velocity.signum()),
    };
    let yaw = -dir * PI / 2.0 + 0.25 * (0.7 * t + p1).sin();
    let root = axis_angle([0.0, yaw, 0.0]) * axis_angle([PI, 0.0, 0.0]);
    let mut rots = [UnitQuaternion::identity(); 24];
    rots[0] = root;
    let swing = 0.45 * gait.sin();
    rots[1] = axis_angle([-swing, 0.0, 0.05]);
    rots[2] = axis_angle([swing, 0.0, -0.05]);
    rots[4] = axis_angle([0.35 + 0.3 * (gait + 1.2).sin(), 0.0, 0.0]);
    rots[5] = axis_angle([0.35 - 0.3 * (gait + 1.2).sin(), 0.0, 0.0]);
    rots[3] = axis_angle([0.05 * (2.0 * gait).sin(), 0.08 * gait.sin(), 0.0]);
    rots[16] = axis_angle([0.3 * gait.sin(), 0.0, -1.2]);
    rots[17] = axis_angle([-0.3 * gait.sin(), 0.0, 1.2]);
    rots[18] = axis_angle([0.0, -0.4 - 0.2 * gait.sin(), 0.0]);
    rots[19] = axis_angle([0.0, 0.4 - 0.2 * gait.sin(), 0.0]);
    rots[15] = axis_angle([0.1 * (0.9 * t + p2).sin(), 0.3 * (0.5 * t + p3).sin(), 0.0]);
    for (j, r) in rots.iter_mut().enumerate().skip(1) {
        if *r == UnitQuaternion::identity() {
            let a = 0.05 * (1.3 * t + j as f64 + p2).sin();
            *r = axis_angle([a, 0.5 * a, -0.5 * a]);
        }
    }
    let x = x + 0.25 * (0.6 * t + p1).sin();
    let z = w.depth + 0.4 * (0.35 * t + p3).sin();
    let y = 0.6 + 0.02 * (2.0 * gait).sin();
    (rots, [x, y, z])
}

impl SceneConfig {
    fn half_width_at(&self, depth: f64) -> f64 {
        0.5 * f64::from(self.image_size[0]) / self.focal_length * depth
    }
}

/// Random walkers: about half in view from the start, the others entering from an edge later.
pub fn random_walkers(cfg: &SceneConfig, rng: &mut Rng) -> Vec<Walker> {
    let mut out = Vec::new();
    for i in 0..cfg.people {
        let depth = rng.range(3.5, 9.0);
        let speed = rng.range(0.6, 1.5);
        let late = i >= cfg.people.div_ceil(2) && !cfg.stay_in_view;
        let half = cfg.half_width_at(depth);
        let (enter, x0, velocity) = if late {
            let enter = (rng.range(0.1, 0.6) * cfg.frames as f64) as usize;
            let dir = if rng.chance(0.5) { 1.0 } else { -1.0 };
            (enter, -dir * (half + 0.2), dir * speed)
        } else {
            let x0 = rng.range(-0.7 * half, 0.7 * half);
            let dir = if x0 > 0.0 { -1.0 } else { 1.0 };
            (0, x0, dir * speed)
        };
        let betas = std::array::from_fn(|_| rng.normal() as f32);
        let phase = std::array::from_fn(|_| rng.range(0.0, 2.0 * PI));
        let sweep = cfg.stay_in_view.then(|| rng.range(0.3, 0.6) * half);
        let x0 = if cfg.stay_in_view {
            rng.range(-0.3, 0.3) * half
        } else {
            x0
        };
        out.push(Walker {
            enter,
            leave: None,
            x0,
            depth,
            velocity,
            betas,
            sweep,
            phase,
        });
    }
    out
}

/// A random scene.
pub fn generate(cfg: &SceneConfig) -> Scene {
    let mut rng = Rng::new(cfg.seed);
    let walkers = random_walkers(cfg, &mut rng);
    generate_with(cfg, walkers)
}

fn project_box(cfg: &SceneConfig, kp: &[[f32; 3]; KEYPOINTS], cam: [f64; 3]) -> [f64; 4] {
    let (cx, cy) = (
        0.5 * f64::from(cfg.image_size[0]),
        0.5 * f64::from(cfg.image_size[1]),
    );
    let mut b = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for k in kp {
        let (x, y, z) = (
            f64::from(k[0]) + cam[0],
            f64::from(k[1]) + cam[1],
            (f64::from(k[2]) + cam[2]).max(0.1),
        );
        let (u, v) = (cfg.focal_length * x / z + cx, cfg.focal_length * y / z + cy);
        b = [b[0].min(u), b[1].min(v), b[2].max(u), b[3].max(v)];
    }
    let (mx, my) = (0.1 * (b[2] - b[0]), 0.08 * (b[3] - b[1]));
    [b[0] - mx, b[1] - my, b[2] + mx, b[3] + my]
}

fn area(b: &[f64; 4]) -> f64 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

fn clip(cfg: &SceneConfig, b: &[f64; 4]) -> [f64; 4] {
    let (w, h) = (f64::from(cfg.image_size[0]), f64::from(cfg.image_size[1]));
    [
        b[0].clamp(0.0, w),
        b[1].clamp(0.0, h),
        b[2].clamp(0.0, w),
        b[3].clamp(0.0, h),
    ]
}

fn observation(
    bbox: [f64; 4],
    rots: &[UnitQuaternion<f64>; 24],
    cam: [f64; 3],
    betas: [f32; BETAS],
    focal: f64,
) -> Observation {
    let scale = 1.0 + 0.05 * f64::from(betas[0]);
    Observation {
        bbox: bbox.map(|v| v as f32),
        score: None,
        box_source: BoxSource::Detector,
        global_orient: q4(&rots[0]),
        body_pose: std::array::from_fn(|j| q4(&rots[j + 1])),
        betas,
        cam_t: cam.map(|v| v as f32),
        focal_length: focal as f32,
        keypoints_3d: keypoints(rots, scale),
    }
}

/// A person in view: walker index, true rotations, camera position, clipped box, true values.
type Present = (
    usize,
    [UnitQuaternion<f64>; 24],
    [f64; 3],
    [f64; 4],
    Observation,
);

/// A scene of the given walkers.
pub fn generate_with(cfg: &SceneConfig, walkers: Vec<Walker>) -> Scene {
    let mut rng = Rng::new(cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xA5A5);
    let fps = cfg.fps;
    let mut gt = Vec::with_capacity(cfg.frames);
    let mut records = Vec::with_capacity(cfg.frames);
    let mut det_ids = Vec::with_capacity(cfg.frames);
    let mut hidden_run = vec![0usize; walkers.len()];
    let max_hidden = (cfg.max_hidden_s * fps).floor() as usize;
    let sigma_rot = cfg.rot_sigma_deg.to_radians();
    for f in 0..cfg.frames {
        // Who is in view, and the true values.
        let mut present: Vec<Present> = Vec::new();
        for (i, w) in walkers.iter().enumerate() {
            if f < w.enter || w.leave.is_some_and(|l| f >= l) {
                continue;
            }
            let t = (f - w.enter) as f64 / fps;
            let (rots, cam) = pose(w, t);
            let truth = observation([0.0; 4], &rots, cam, w.betas, cfg.focal_length);
            let full = project_box(cfg, &truth.keypoints_3d, cam);
            let clipped = clip(cfg, &full);
            if area(&clipped) < 0.5 * area(&full) {
                continue;
            }
            let mut truth = truth;
            truth.bbox = clipped.map(|v| v as f32);
            present.push((i, rots, cam, clipped, truth));
        }
        // Hidden: most of the box behind a nearer person's, for at most `max_hidden_s`.
        let mut hidden = vec![false; present.len()];
        for a in 0..present.len() {
            let (ia, _, cam_a, box_a, _) = &present[a];
            let behind = present.iter().any(|(ib, _, cam_b, box_b, _)| {
                let inter = [
                    box_a[0].max(box_b[0]),
                    box_a[1].max(box_b[1]),
                    box_a[2].min(box_b[2]),
                    box_a[3].min(box_b[3]),
                ];
                ib != ia && cam_b[2] < cam_a[2] && area(&inter) >= 0.5 * area(box_a)
            });
            if behind && hidden_run[*ia] < max_hidden {
                hidden[a] = true;
                hidden_run[*ia] += 1;
            } else if !behind {
                hidden_run[*ia] = 0;
            }
        }
        let mut gt_frame = Vec::new();
        let mut people = Vec::new();
        let mut ids = Vec::new();
        for (k, (i, rots, cam, clipped, truth)) in present.iter().enumerate() {
            gt_frame.push(GtPerson {
                id: *i as u32 + 1,
                obs: truth.clone(),
                hidden: hidden[k],
            });
            if hidden[k] || rng.chance(cfg.miss_rate) {
                continue;
            }
            let noisy_rots: [UnitQuaternion<f64>; 24] = std::array::from_fn(|j| {
                let e = [rng.normal(), rng.normal(), rng.normal()].map(|v| v * sigma_rot);
                rots[j] * axis_angle(e)
            });
            // Scale along the viewing ray (depth from the box's size), then noise per axis.
            let scale = 1.0 + cfg.depth_sigma_rel * rng.normal();
            let noisy_cam = cam.map(|v| v * scale + cfg.trans_sigma_m * rng.normal());
            let betas = walkers[*i]
                .betas
                .map(|b| b + (cfg.betas_sigma * rng.normal()) as f32);
            let bbox = clipped.map(|v| v + cfg.box_jitter_px * rng.normal());
            let mut o = observation(bbox, &noisy_rots, noisy_cam, betas, cfg.focal_length);
            o.score = Some(if rng.chance(cfg.low_score_rate) {
                rng.range(0.2, 0.5)
            } else {
                rng.range(0.5, 1.0)
            } as f32);
            people.push(o);
            ids.push(Some(*i as u32 + 1));
            if rng.chance(cfg.false_positive_rate) {
                // A false detection: a box of similar size somewhere, random body.
                let (w, h) = (clipped[2] - clipped[0], clipped[3] - clipped[1]);
                let x = rng.range(0.0, f64::from(cfg.image_size[0]) - w);
                let y = rng.range(0.0, (f64::from(cfg.image_size[1]) - h).max(1.0));
                let depth = rng.range(3.0, 10.0);
                let cam = [
                    (x + 0.5 * w - 0.5 * f64::from(cfg.image_size[0])) / cfg.focal_length * depth,
                    0.6,
                    depth,
                ];
                let rots: [UnitQuaternion<f64>; 24] = std::array::from_fn(|_| {
                    axis_angle([rng.normal(), rng.normal(), rng.normal()].map(|v| 0.5 * v))
                });
                let betas = std::array::from_fn(|_| rng.normal() as f32);
                let mut o = observation([x, y, x + w, y + h], &rots, cam, betas, cfg.focal_length);
                o.score = Some(rng.range(0.2, 0.7) as f32);
                people.push(o);
                ids.push(None);
            }
        }
        gt.push(gt_frame);
        let record = if rng.chance(cfg.missing_rate) {
            None
        } else if rng.chance(cfg.error_rate) {
            people.clear();
            ids.clear();
            Some(FrameRecord {
                status: FrameStatus::Error {
                    code: "invalid_image".into(),
                    message: "synthetic error frame".into(),
                },
                image_size: [0, 0],
                vertices: false,
                people: Vec::new(),
            })
        } else {
            Some(FrameRecord {
                status: FrameStatus::Ok,
                image_size: cfg.image_size,
                vertices: false,
                people,
            })
        };
        if record.is_none() {
            ids.clear();
        }
        records.push(record);
        det_ids.push(ids);
    }
    Scene {
        fps,
        walkers,
        gt,
        records,
        det_ids,
    }
}
