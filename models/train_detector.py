"""Trains the tiny person detector (:mod:`models.tiny_detector`) on synthetic frames from
``hmr2 synth`` and exports it to the ``person-detector/1`` contract (:mod:`models.detector`).

Reproduce ``models/detector-tiny.pt`` (from the repository root; training ~9 minutes on 2 idle
CPU cores: 1 minute to letterbox, 30 epochs of ~15 s)::

    cargo build -p hmr2-tools --release
    S=1280x720,720x1280,640x480,1000x333,333x1000,1920x1080,480x640,800x800,960x540
    target/release/hmr2 synth --count 4500 --seed 1 --sizes $S --out /tmp/det/train
    target/release/hmr2 synth --count 200 --seed 2 --sizes $S --out /tmp/det/val
    .venv/bin/python -m models.train_detector --frames /tmp/det/train --val /tmp/det/val \\
        --out models/detector-tiny.pt

Then check it on frames of a seed it never saw::

    target/release/hmr2 synth --count 200 --seed 3 --sizes $S --out /tmp/det/test
    .venv/bin/python -m models.train_detector --evaluate models/detector-tiny.pt --val /tmp/det/test

When only the wrapper changes (post-processing, ``meta()``), the committed file gets it without
training: its weights are put into the current wrapper and the result is checked to give the
same boxes and scores on synthetic frames (:func:`rewrap`)::

    .venv/bin/python -m models.train_detector --rewrap models/detector-tiny.pt --out models/detector-tiny.pt

Frames are letterboxed with :func:`models.detector.letterbox` (as the worker does) and their
boxes scaled by r; the letterboxed frames are cached beside the frames
(``letterboxed-<size>.npy``). Augmentation: horizontal flips and colour changes of the picture
part. Seeds are fixed (``--seed``); torch runs on ``--threads`` threads (default 2).

Each epoch prints the losses and, on the held-out frames (``--val``, or the last 200 of
``--frames``), the hit rate: the share of figures for which a detection with score ≥ 0.5 has
IoU ≥ 0.5 with the figure's box, in frame pixels, and the false positives: detections with
score ≥ 0.5 that overlap no figure with IoU ≥ 0.5. After the last epoch the scores are
calibrated on the held-out frames (Platt scaling, :func:`calibrate`), so that a score is the
chance that a box is a person's and the worker's threshold of 0.5 keeps the likely ones.
"""

import argparse
import json
import math
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from .detector import PersonDetector, export, letterbox
from .tiny_detector import INPUT_SIZE, IOU_THRESHOLD, META, SCORE_THRESHOLD, TinyCore, loss

NAME = "tiny-synthetic-person"


def log(msg: str) -> None:
    print(f"train_detector: {msg}", file=sys.stderr, flush=True)


class Frames:
    """Letterboxed frames of a ``hmr2 synth`` folder: ``images`` uint8 [N,S,S,3], per frame its
    ``boxes`` (in input pixels), ``frame_boxes`` (in frame pixels), ``sizes`` (W, H) and r."""

    def __init__(self, folder: Path, size: int, threads: int):
        table: Dict[str, List[List[float]]] = json.loads((folder / "boxes.json").read_text())
        self.names = sorted(table)
        cache = folder / f"letterboxed-{size}.npy"
        sizes = []
        for n in self.names:
            with Image.open(folder / n) as im:
                sizes.append(im.size)
        self.sizes: List[Tuple[int, int]] = sizes
        self.r = [size / max(w, h) for w, h in sizes]
        if cache.is_file() and np.load(cache, mmap_mode="r").shape[0] == len(self.names):
            self.images = np.load(cache)
        else:
            with Pool(threads) as pool:
                self.images = np.stack(pool.starmap(_load, [(folder / n, size) for n in self.names]))
            np.save(cache, self.images)
        self.frame_boxes = [torch.tensor(table[n], dtype=torch.float32).reshape(-1, 4) for n in self.names]
        self.boxes = [b * r for b, r in zip(self.frame_boxes, self.r)]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: List[int]) -> "Frames":
        out = object.__new__(Frames)
        out.names = [self.names[i] for i in idx]
        out.sizes = [self.sizes[i] for i in idx]
        out.r = [self.r[i] for i in idx]
        out.images = self.images[idx]
        out.frame_boxes = [self.frame_boxes[i] for i in idx]
        out.boxes = [self.boxes[i] for i in idx]
        return out


def _load(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return letterbox(np.asarray(im.convert("RGB")), size)[0]


def augment(
    images: torch.Tensor, boxes: List[torch.Tensor], content: List[Tuple[int, int]], gen: torch.Generator
) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Flips half of the pictures (their letterboxed part) left-right, and shuffles the colour
    channels and changes the contrast and brightness of the picture part of some.
    ``images`` float [B,3,S,S] in 0..1; ``content`` each picture's (width, height) in it."""
    images = images.clone()
    out = []
    for i, (b, (w, h)) in enumerate(zip(boxes, content)):
        part = images[i, :, :h, :w]
        if torch.rand(1, generator=gen).item() < 0.5:
            part = part.flip(-1)
            b = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
        if torch.rand(1, generator=gen).item() < 0.5:
            part = part[torch.randperm(3, generator=gen)]
        if torch.rand(1, generator=gen).item() < 0.5:
            c, m = 0.7 + 0.6 * torch.rand(2, generator=gen)
            part = ((part - 0.5) * c + 0.5 * m).clamp(0, 1)
        images[i, :, :h, :w] = part
        out.append(b)
    return images, out


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of boxes a [N,4] and b [M,4]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter).clamp(min=1e-9)


def evaluate(detector: torch.nn.Module, frames: Frames, batch: int = 32, threshold: float = 0.5) -> Dict[str, float]:
    """Hit rate and false positives of ``detector`` (the contract's module, eager or scripted)
    on ``frames``, in frame pixels (boxes / r, clamped to the frame, as the worker maps them)."""
    hits = figures = fp = dets = 0
    with torch.no_grad():
        for start in range(0, len(frames), batch):
            imgs = torch.from_numpy(frames.images[start : start + batch])
            res = detector(imgs)
            for k in range(imgs.shape[0]):
                i = start + k
                w, h = frames.sizes[i]
                keep = res["scores"][k] >= threshold
                det = res["boxes"][k][keep] / frames.r[i]
                det[:, 0::2] = det[:, 0::2].clamp(0, w)
                det[:, 1::2] = det[:, 1::2].clamp(0, h)
                gt = frames.frame_boxes[i]
                figures += gt.shape[0]
                dets += det.shape[0]
                if gt.shape[0] == 0:
                    fp += det.shape[0]
                    continue
                if det.shape[0] == 0:
                    continue
                iou = box_iou(gt, det)
                hits += int((iou.max(1).values >= 0.5).sum())
                fp += int((iou.max(0).values < 0.5).sum())
    return {"hit_rate": hits / max(figures, 1), "hits": hits, "figures": figures, "false_positives": fp, "detections": dets}


def calibrate(core: TinyCore, frames: Frames) -> Tuple[float, float]:
    """Fits ``core.calibration`` (Platt scaling) on ``frames``: logistic regression of "this
    detection is a figure's" (IoU ≥ 0.5 with a figure no higher-scoring detection matched) on
    the heatmap logit of every detection the contract module returns above a low floor.
    Returns (a, b): scores become sigmoid(a · logit + b)."""
    core.calibration.copy_(torch.tensor([1.0, 0.0]))
    detector = PersonDetector(core.eval(), INPUT_SIZE, NAME, max_det=20, score_floor=0.01)
    xs, ys = [], []
    with torch.no_grad():
        for start in range(0, len(frames), 32):
            res = detector(torch.from_numpy(frames.images[start : start + 32]))
            for k in range(res["scores"].shape[0]):
                keep = res["scores"][k] > 0
                sc, bx, gt = res["scores"][k][keep], res["boxes"][k][keep], frames.boxes[start + k]
                free = torch.ones(gt.shape[0], dtype=torch.bool)
                for s, b in zip(sc.tolist(), bx):
                    hit = False
                    if gt.shape[0]:
                        iou = box_iou(b[None], gt)[0].masked_fill(~free, 0)
                        j = int(iou.argmax())
                        hit = bool(iou[j] >= 0.5)
                        if hit:
                            free[j] = False
                    xs.append(math.log(s / (1 - s)))
                    ys.append(float(hit))
    # Platt's targets, (N+ + 1) / (N+ + 2) and 1 / (N- + 2) instead of 1 and 0: the fit stays
    # finite when the held-out detections are separable by score.
    x, y = torch.tensor(xs), torch.tensor(ys)
    n_pos = float(y.sum())
    y = torch.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (len(ys) - n_pos + 2))
    ab = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        nll = torch.nn.functional.binary_cross_entropy_with_logits(ab[0] * x + ab[1], y)
        nll.backward()
        return nll

    opt.step(closure)
    a, b = ab.detach().tolist()
    core.calibration.copy_(torch.tensor([a, b]))
    return a, b


def build_detector(core: TinyCore) -> PersonDetector:
    """The contract module around a trained core, as the committed file holds it."""
    return PersonDetector(core.eval(), INPUT_SIZE, NAME, max_det=20, iou_threshold=IOU_THRESHOLD, score_floor=0.05,
                          score_threshold=SCORE_THRESHOLD, meta_extra=META)


def train(args: argparse.Namespace) -> None:
    t0 = time.time()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    size = INPUT_SIZE
    frames = Frames(args.frames, size, args.threads)
    if args.val is not None:
        val = Frames(args.val, size, args.threads)
    else:
        n = len(frames)
        val, frames = frames.subset(list(range(n - 200, n))), frames.subset(list(range(n - 200)))
    log(f"{len(frames)} training frames, {len(val)} held out, letterboxed to {size} in {time.time() - t0:.0f} s")

    core = TinyCore().to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in core.parameters())
    opt = torch.optim.AdamW(core.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * math.ceil(len(frames) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(args.seed)
    content = [(min(size, math.floor(w * r + 0.5)), min(size, math.floor(h * r + 0.5))) for (w, h), r in zip(frames.sizes, frames.r)]
    log(f"TinyCore: {params} parameters, {args.epochs} epochs of {math.ceil(len(frames) / args.batch)} batches of {args.batch}")
    for epoch in range(args.epochs):
        core.train()
        te = time.time()
        order = torch.randperm(len(frames), generator=gen).tolist()
        sums = np.zeros(3)
        for start in range(0, len(order), args.batch):
            idx = order[start : start + args.batch]
            imgs = torch.from_numpy(frames.images[idx]).permute(0, 3, 1, 2).float().div(255.0)
            imgs, boxes = augment(imgs, [frames.boxes[i] for i in idx], [content[i] for i in idx], gen)
            total, l_heat, l_box = loss(core, imgs.contiguous(memory_format=torch.channels_last), boxes)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            sums += [float(total.detach()), float(l_heat), float(l_box)]
        sums /= math.ceil(len(order) / args.batch)
        core.eval()
        m = evaluate(build_detector(core), val)
        log(
            f"epoch {epoch + 1}/{args.epochs}: loss {sums[0]:.3f} (heatmap {sums[1]:.3f}, box {sums[2]:.3f}), "
            f"held out: hit rate {m['hit_rate']:.3f} ({m['hits']}/{m['figures']}), false positives {m['false_positives']}, "
            f"{time.time() - te:.0f} s"
        )
    core = core.to(memory_format=torch.contiguous_format).eval()
    a, b = calibrate(core, val)
    m = evaluate(build_detector(core), val)
    log(
        f"calibrated: score = sigmoid({a:.3f} · logit + {b:.3f}); held out: hit rate {m['hit_rate']:.3f} "
        f"({m['hits']}/{m['figures']}), false positives {m['false_positives']}"
    )
    detector = build_detector(core)
    loaded = export(detector, args.out)
    m = evaluate(loaded, val)
    log(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {params} parameters, input {size}): "
        f"scripted, held out: hit rate {m['hit_rate']:.3f} ({m['hits']}/{m['figures']}), "
        f"false positives {m['false_positives']}; {time.time() - t0:.0f} s in all"
    )


def core_from_file(path: Path) -> TinyCore:
    """The trained :class:`TinyCore` inside an exported tiny detector file: the scripted module's
    ``core.*`` parameters and buffers, loaded strictly into a fresh core."""
    scripted = torch.jit.load(str(path), map_location="cpu")
    state = {k[len("core."):]: v for k, v in scripted.state_dict().items() if k.startswith("core.")}
    core = TinyCore()
    core.load_state_dict(state, strict=True)
    return core.eval()


def check_frames(count: int = 24, seed: int = 7) -> torch.Tensor:
    """Letterboxed synthetic frames (``models.figures``, the demo's figures on frames of six
    shapes) as uint8 ``[count,S,S,3]``: what :func:`rewrap` compares the files on."""
    from .figures import frame_seed, render_random

    shapes = [(640, 360), (360, 640), (480, 480), (600, 200), (200, 600), (512, 384)]
    images = []
    for i in range(count):
        w, h = shapes[i % len(shapes)]
        images.append(letterbox(render_random(w, h, frame_seed(seed, i))[0], INPUT_SIZE)[0])
    return torch.from_numpy(np.stack(images))


def rewrap(src: Path, out: Path) -> None:
    """Writes ``src``'s trained weights, without training, inside the current wrapper
    (:func:`build_detector`: post-processing and ``meta()`` of this version) to ``out``, and
    fails unless the new file's boxes and scores on :func:`check_frames` equal the old file's."""
    old = torch.jit.load(str(src), map_location="cpu")
    detector = build_detector(core_from_file(src))
    tmp = out.with_name(out.name + ".tmp")
    loaded = export(detector, tmp)
    images = check_frames()
    with torch.no_grad():
        before, after = old(images), loaded(images)
    same = all(torch.equal(before[k], after[k]) for k in ("boxes", "scores"))
    if not same:
        tmp.unlink()
        diff = float((before["boxes"] - after["boxes"]).abs().max())
        raise SystemExit(f"train_detector: {src} re-wrapped gives other boxes or scores on the check frames "
                         f"(max |Δbox| {diff:.3g} px); {out} left as it was")
    tmp.replace(out)
    found = int((after["scores"] >= SCORE_THRESHOLD).sum())
    log(f"wrote {out} with the weights of {src}: boxes and scores identical on {images.shape[0]} check frames "
        f"({found} detections ≥ {SCORE_THRESHOLD}); meta {loaded.meta()}")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m models.train_detector", description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=Path, help="training frames (hmr2 synth --out)")
    ap.add_argument("--val", type=Path, help="held-out frames (default: the last 200 of --frames)")
    ap.add_argument("--out", type=Path, default=Path("models/detector-tiny.pt"))
    ap.add_argument("--evaluate", type=Path, metavar="FILE", help="only evaluate this detector file on --val")
    ap.add_argument("--rewrap", type=Path, metavar="FILE",
                    help="no training: put FILE's weights in the current wrapper and write --out (same boxes checked)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.evaluate is None and args.rewrap is None and args.frames is None:
        ap.error("--frames is needed to train")
    if args.evaluate is not None and args.val is None:
        ap.error("--evaluate needs --val")
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rewrap is not None:
        rewrap(args.rewrap, args.out)
        return
    if args.evaluate is not None:
        detector = torch.jit.load(str(args.evaluate))
        size = json.loads(detector.meta())["input_size"]
        m = evaluate(detector, Frames(args.val, size, args.threads))
        print(json.dumps(m))
        return
    train(args)


if __name__ == "__main__":
    main()
