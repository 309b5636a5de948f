"""The reference person crop: image + box -> the uint8 256x256x3 RGB crop the model takes.

The worker's Rust crop is tested against this. Every step, exactly:

**Coordinates.** Pixel-index coordinates: the centre of the pixel in row ``r``, column ``c`` is the
point (x, y) = (c, r). The box (x1, y1, x2, y2) is given in these coordinates (as a detector
returns it); nothing is added or subtracted for pixel edges.

**Box -> square.** ``cx = (x1 + x2) / 2``, ``cy = (y1 + y2) / 2``, ``w = x2 - x1``,
``h = y2 - y1``. Grow to a 3:4 (w:h) aspect: if ``w / h > 192 / 256`` then ``h = w * 256 / 192``
else ``w = h * 192 / 256``. ``box_size = max(w, h)`` (always the grown h).

**Anti-alias blur.** ``d = box_size / 256 / 2``. If ``d > 1.1`` the whole image (as float64, values
0..255, not rounded afterwards) is blurred channel by channel with a Gaussian of
``sigma = (d - 1) / 2``, as ``skimage.filters.gaussian(img, sigma, channel_axis=-1,
preserve_range=True)`` does: separable, first along rows (y) then along columns (x), kernel
``k(t) = exp(-t^2 / (2 sigma^2))`` for integer ``t`` in ``[-R, R]`` with ``R = int(4 * sigma + 0.5)``,
normalised to sum 1, image edges extended by repeating the edge pixel ("nearest").

**Warp.** With ``s = box_size / 256``, output pixel (row ``i``, column ``j``), 0 <= i, j < 256,
samples the (blurred) source at::

    x = cx + (j - 128) * s
    y = cy + (i - 128) * s

so the box centre lands on output pixel (128, 128) and ``cx +- box_size/2`` on columns 0 and 256.
Bilinear: with ``x0 = floor(x)``, ``fx = x - x0`` (same for y), the value is
``(1-fy)(1-fx) P(y0,x0) + (1-fy) fx P(y0,x0+1) + fy (1-fx) P(y0+1,x0) + fy fx P(y0+1,x0+1)``
where ``P`` is 0 (black) for any pixel outside the image. Computed in float64; the result is
``floor(v + 0.5)`` clipped to 0..255 as uint8. (An f32 implementation can differ by 1 where a
value falls on a rounding boundary.)

CLI (for the Rust cross-language test)::

    python -m models.crop --image IN.png --box x1,y1,x2,y2 --out OUT.rgb

writes 256*256*3 raw bytes (uint8, row-major, RGB) and prints
``{"center": [cx, cy], "box_size": b, "blur_sigma": sigma or null}`` on stdout.
"""

import argparse
import json
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

OUT_SIZE = 256
ASPECT = 192 / 256  # width / height of the model's input


def square_box(box: Sequence[float]) -> Tuple[float, float, float]:
    """(cx, cy, box_size) of a box (x1, y1, x2, y2) grown to 3:4 and squared."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        raise ValueError(f"empty box {tuple(box)}")
    if w / h > ASPECT:
        h = w / ASPECT
    else:
        w = h * ASPECT
    return (x1 + x2) / 2, (y1 + y2) / 2, max(w, h)


def blur_sigma(box_size: float) -> Optional[float]:
    """Sigma of the anti-alias blur for a crop of ``box_size`` source pixels, or None."""
    d = box_size / OUT_SIZE / 2
    return (d - 1) / 2 if d > 1.1 else None


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """The channel-wise Gaussian blur (float64 out, range preserved; see the module doc)."""
    from skimage.filters import gaussian

    return gaussian(image.astype(np.float64), sigma=sigma, channel_axis=-1, preserve_range=True)


def warp(image: np.ndarray, cx: float, cy: float, box_size: float) -> np.ndarray:
    """Bilinear sample of ``image`` (H, W, C; any numeric dtype) on the 256x256 grid of the box,
    black outside, rounded to uint8."""
    h, w = image.shape[:2]
    s = box_size / OUT_SIZE
    grid = np.arange(OUT_SIZE, dtype=np.float64) - OUT_SIZE / 2
    xs, ys = cx + grid * s, cy + grid * s
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = (xs - x0)[None, :, None], (ys - y0)[:, None, None]
    # One pixel of black around the image; indices further out are clipped onto that border.
    padded = np.zeros((h + 2, w + 2, image.shape[2]), dtype=np.float64)
    padded[1:-1, 1:-1] = image
    xi = np.clip(x0.astype(np.int64) + 1, 0, w + 1)
    xj = np.clip(x0.astype(np.int64) + 2, 0, w + 1)
    yi = np.clip(y0.astype(np.int64) + 1, 0, h + 1)
    yj = np.clip(y0.astype(np.int64) + 2, 0, h + 1)
    top = padded[yi][:, xi] * (1 - fx) + padded[yi][:, xj] * fx
    bottom = padded[yj][:, xi] * (1 - fx) + padded[yj][:, xj] * fx
    value = top * (1 - fy) + bottom * fy
    return np.clip(np.floor(value + 0.5), 0, 255).astype(np.uint8)


def crop(image: np.ndarray, box: Sequence[float]) -> Tuple[np.ndarray, dict]:
    """The model's input crop of ``image`` (H, W, 3 RGB, uint8) for ``box`` (x1, y1, x2, y2),
    and a dict with ``center``, ``box_size`` and ``blur_sigma``."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 RGB, got shape {image.shape}")
    cx, cy, box_size = square_box(box)
    sigma = blur_sigma(box_size)
    source = gaussian_blur(image, sigma) if sigma is not None else image
    info = {"center": [cx, cy], "box_size": box_size, "blur_sigma": sigma}
    return warp(source, cx, cy, box_size), info


def parse_box(text: str) -> List[float]:
    parts = [float(v) for v in text.split(",")]
    if len(parts) != 4 or not all(math.isfinite(v) for v in parts):
        raise argparse.ArgumentTypeError(f"expected x1,y1,x2,y2, got {text!r}")
    return parts


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m models.crop", description="Reference HMR2 person crop.")
    ap.add_argument("--image", type=Path, required=True, help="input image (any format Pillow reads)")
    ap.add_argument("--box", type=parse_box, required=True, help="x1,y1,x2,y2 in pixel-index coordinates")
    ap.add_argument("--out", type=Path, required=True, help="output: 256*256*3 raw RGB bytes")
    args = ap.parse_args(argv)
    from PIL import Image

    with Image.open(args.image) as im:
        image = np.asarray(im.convert("RGB"))
    out, info = crop(image, args.box)
    args.out.write_bytes(out.tobytes())
    print(json.dumps(info))


if __name__ == "__main__":
    main()
