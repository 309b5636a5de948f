"""The demo's walking stick figures, drawn in numpy: synthetic frames with known person boxes
for Python tests and detector evaluations, without the ``hmr2`` tool.

A port of ``tools/src/demo/frames.rs`` (``render_random``, the pictures ``hmr2 synth`` writes and
``models/detector-tiny.pt`` was trained on): the same SplitMix64 draws in the same order, the same
figure geometry (capsules for limbs, torso and head, eight heads tall), the same textured
background and shading, in float32. A frame of a seed shows the same figures in the same places
as the Rust one; pixels can differ by a rounding step where float32 maths differ between the
two. :func:`render_people` draws figures placed by the caller (overlapping ones included), which
``render_random`` never does.
"""

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

MAX_PEOPLE = 3
MASK64 = (1 << 64) - 1
F32 = np.float32

Box = Tuple[float, float, float, float]


class SplitMix64:
    """SplitMix64 (Steele, Lea & Flood 2014), as the Rust renderer's: the state is the seed."""

    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next_u64() % n

    def range(self, lo: float, hi: float) -> float:
        """Uniform in lo..hi, in float32 as the Rust one."""
        unit = F32(self.next_u64() >> 40) / F32(1 << 24)
        return float(F32(lo) + (F32(hi) - F32(lo)) * unit)


def frame_seed(seed: int, index: int) -> int:
    """The seed of frame ``index`` of ``hmr2 synth --seed seed``."""
    key = SplitMix64(seed).next_u64()
    return SplitMix64(key ^ ((index * 0x9E3779B97F4A7C15) & MASK64)).next_u64()


@dataclass
class Pose:
    x: float  # hips, pixels
    feet: float  # ground under the feet, pixels
    height: float  # pixels (eight heads)
    phase: float  # gait phase, radians


@dataclass
class Look:
    shirt: Tuple[float, float, float]
    pants: Tuple[float, float, float]
    skin: Tuple[float, float, float]


@dataclass
class Backdrop:
    shift: float
    base: Tuple[float, float, float]
    wave: float
    period: Tuple[float, float]
    bar_width: int
    bars: float
    floor_at: float
    floor: float
    grain: int

    @staticmethod
    def random(rng: SplitMix64) -> "Backdrop":
        shift = rng.range(0.0, 1000.0)
        base = (rng.range(10.0, 150.0), rng.range(20.0, 150.0), rng.range(30.0, 200.0))
        wave = rng.range(5.0, 60.0)
        period = (rng.range(12.0, 90.0), rng.range(10.0, 70.0))
        bar_width = 8 + rng.below(150)
        bars = rng.range(0.0, 45.0)
        floor_at = rng.range(0.45, 0.95)
        floor = rng.range(-50.0, 30.0)
        grain = rng.next_u64() & 0xFFFFFFFF
        return Backdrop(shift, base, wave, period, bar_width, bars, floor_at, floor, grain)


def background(width: int, height: int, d: Backdrop) -> np.ndarray:
    """The textured background, uint8 [H,W,3]: gradients, waves, hard-edged bars, a floor and
    per-pixel grain."""
    x = np.arange(width, dtype=np.uint32)[None, :]
    y = np.arange(height, dtype=np.uint32)[:, None]
    with np.errstate(over="ignore"):
        n = ((x * np.uint32(73_856_093)) ^ (y * np.uint32(19_349_663)) ^ np.uint32(d.grain)) * np.uint32(2_654_435_761)
    noise = (n >> np.uint32(28)).astype(F32) - F32(8.0)
    xf = x.astype(F32) + F32(d.shift)
    yf = np.broadcast_to(y.astype(F32), (height, width))
    xf = np.broadcast_to(xf, (height, width))
    wave = F32(d.wave) * (np.sin(xf / F32(d.period[0])) * np.cos(yf / F32(d.period[1])))
    bars = np.where((xf.astype(np.uint32) // np.uint32(d.bar_width)) % 2 == 0, F32(d.bars), F32(-d.bars))
    floor = np.where(yf > F32(height) * F32(d.floor_at), F32(d.floor), F32(0.0))
    r = F32(d.base[0]) + xf * F32(0.08) + wave + noise + floor
    g = F32(d.base[1]) + yf * F32(0.15) - wave + bars + noise + floor
    b = F32(d.base[2]) - bars + F32(0.5) * wave + noise
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


@dataclass
class Capsule:
    a: Tuple[float, float]
    b: Tuple[float, float]
    r: float
    colour: Tuple[float, float, float]


def figure(width: int, height: int, pose: Pose, look: Look) -> Tuple[List[Capsule], Box]:
    """A figure's capsules (drawing order) and its box (tight, clipped to the frame)."""
    x, feet = pose.x, pose.feet
    swing = math.sin(pose.phase) * 0.45
    u = pose.height / 8.0
    hip = (x, feet - 4.0 * u)
    neck = (x + 0.1 * u, feet - 6.9 * u)
    head = (x + 0.15 * u, feet - 7.45 * u)
    shoulder_l = (neck[0] - 0.9 * u, neck[1] + 0.3 * u)
    shoulder_r = (neck[0] + 0.9 * u, neck[1] + 0.3 * u)

    def limb(start, length, angle):
        return (start[0] + length * math.sin(angle), start[1] + length * math.cos(angle))

    elbow_l = limb(shoulder_l, 1.5 * u, swing)
    wrist_l = limb(elbow_l, 1.4 * u, swing + 0.35)
    elbow_r = limb(shoulder_r, 1.5 * u, -swing)
    wrist_r = limb(elbow_r, 1.4 * u, -swing + 0.35)
    hip_l = (hip[0] - 0.45 * u, hip[1])
    hip_r = (hip[0] + 0.45 * u, hip[1])
    knee_l = limb(hip_l, 2.0 * u, -swing)
    ankle_l = limb(knee_l, 1.9 * u, -swing - 0.25 * abs(swing))
    knee_r = limb(hip_r, 2.0 * u, swing)
    ankle_r = limb(knee_r, 1.9 * u, swing - 0.25 * abs(swing))
    foot_l = (ankle_l[0] + 0.5 * u, ankle_l[1])
    foot_r = (ankle_r[0] + 0.5 * u, ankle_r[1])
    shoe = (30.0, 30.0, 30.0)
    shirt, pants, skin = look.shirt, look.pants, look.skin

    def cap(a, b, r, colour):
        return Capsule(a, b, r * u, colour)

    capsules = [
        cap(hip_l, knee_l, 0.38, pants),
        cap(knee_l, ankle_l, 0.32, pants),
        cap(ankle_l, foot_l, 0.2, shoe),
        cap(hip_r, knee_r, 0.38, pants),
        cap(knee_r, ankle_r, 0.32, pants),
        cap(ankle_r, foot_r, 0.2, shoe),
        cap((hip[0], hip[1] - 0.2 * u), neck, 0.85, shirt),
        cap(shoulder_l, elbow_l, 0.3, shirt),
        cap(elbow_l, wrist_l, 0.25, skin),
        cap(shoulder_r, elbow_r, 0.3, shirt),
        cap(elbow_r, wrist_r, 0.25, skin),
        cap(neck, head, 0.2, skin),
        cap(head, (head[0], head[1] - 0.3 * u), 0.5, skin),
    ]
    x1 = min(min(c.a[0], c.b[0]) - c.r for c in capsules)
    y1 = min(min(c.a[1], c.b[1]) - c.r for c in capsules)
    x2 = max(max(c.a[0], c.b[0]) + c.r for c in capsules)
    y2 = max(max(c.a[1], c.b[1]) + c.r for c in capsules)

    def clip(v, hi):
        return float(min(max(v, 0.0), hi - 1.0))

    return capsules, (clip(x1, width), clip(y1, height), clip(x2, width), clip(y2, height))


def draw(img: np.ndarray, capsules: Sequence[Capsule], box: Box) -> None:
    """Paints a figure's capsules inside its box (in place); the last capsule drawn wins, shaded
    towards its edge."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)
    x2, y2 = min(x2, w - 1), min(y2, h - 1)
    if x2 < x1 or y2 < y1:
        return
    qx = np.arange(x1, x2 + 1, dtype=F32)[None, :]
    qy = np.arange(y1, y2 + 1, dtype=F32)[:, None]
    region = img[y1 : y2 + 1, x1 : x2 + 1]
    for c in capsules:  # later capsules overwrite earlier ones
        ax, ay, bx, by = F32(c.a[0]), F32(c.a[1]), F32(c.b[0]), F32(c.b[1])
        abx, aby = bx - ax, by - ay
        apx, apy = qx - ax, qy - ay
        len2 = abx * abx + aby * aby
        t = np.clip((apx * abx + apy * aby) / len2, 0, 1) if len2 > 0 else F32(0.0)
        dist = np.hypot(apx - t * abx, apy - t * aby)
        inside = dist <= F32(c.r)
        if not inside.any():
            continue
        rel = dist[inside] / F32(c.r)
        shade = F32(1.0) - F32(0.35) * rel * rel
        colour = np.asarray(c.colour, dtype=F32)
        region[inside] = np.clip(colour[None, :] * shade[:, None], 0, 255).astype(np.uint8)


def covered(a: Box, b: Box) -> float:
    """The largest share of either box's area that their intersection covers."""
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)

    def area(r):
        return max((r[2] - r[0]) * (r[3] - r[1]), 1.0)

    return iw * ih / min(area(a), area(b))


def random_look(rng: SplitMix64) -> Look:
    light, dark, t = (250.0, 215.0, 185.0), (95.0, 60.0, 40.0), rng.range(0.0, 1.0)
    shirt = tuple(rng.range(15.0, 245.0) for _ in range(3))
    pants = tuple(rng.range(15.0, 160.0) for _ in range(3))
    skin = tuple(light[i] + t * (dark[i] - light[i]) for i in range(3))
    return Look(shirt, pants, skin)


def render_random(width: int, height: int, seed: int) -> Tuple[np.ndarray, List[Box]]:
    """A picture drawn from ``seed`` (uint8 [H,W,3] RGB) and its figures' boxes: 0–3 figures
    of 20–90 % of the frame height on a random background, none covering more than 40 % of
    another (re-drawn elsewhere, left out after 16 tries), as ``hmr2 synth`` draws them."""
    rng = SplitMix64(seed)
    w, h = float(width), float(height)
    img = background(width, height, Backdrop.random(rng))
    people = rng.below(MAX_PEOPLE + 1)
    boxes: List[Box] = []
    for _ in range(people):
        for _ in range(16):
            tall = float(F32(h) * F32(rng.range(0.2, 0.9)))
            margin = min(0.12 * tall, w / 2.0)
            x = rng.range(margin, w - margin)
            feet = rng.range(0.96 * tall, h + 0.08 * tall)
            phase = rng.range(0.0, 2 * math.pi)
            pose = Pose(x, feet, tall, phase)
            look = random_look(rng)
            capsules, box = figure(width, height, pose, look)
            if all(covered(b, box) <= 0.4 for b in boxes):
                draw(img, capsules, box)
                boxes.append(box)
                break
    return img, boxes


def render_people(width: int, height: int, poses: Sequence[Pose], seed: int = 0) -> Tuple[np.ndarray, List[Box]]:
    """Figures at the given poses (drawn in order: later ones in front), in random colours on a
    random background drawn from ``seed``; their boxes, in the same order. Unlike
    :func:`render_random` the figures may overlap as much as the caller places them."""
    rng = SplitMix64(seed)
    img = background(width, height, Backdrop.random(rng))
    boxes = []
    for pose in poses:
        capsules, box = figure(width, height, pose, random_look(rng))
        draw(img, capsules, box)
        boxes.append(box)
    return img, boxes
