"""The reference crop on hand-checkable cases."""

import json

import numpy as np
import pytest
from PIL import Image

from models import crop as C


def rand_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "box,expect",
    [
        ((0, 0, 300, 400), (150, 200, 400)),  # already 3:4
        ((0, 0, 30, 400), (15, 200, 400)),  # narrow: width grows to 300
        ((10, 20, 410, 120), (210, 70, 400 * 256 / 192)),  # wide: height grows to 533.3
    ],
)
def test_box_is_grown_to_3_4_and_squared(box, expect):
    assert C.square_box(box) == pytest.approx(expect)


def test_blur_rule():
    assert C.blur_sigma(512) is None  # d = 1
    assert C.blur_sigma(563.2) is None  # d = 1.1 exactly: not above
    assert C.blur_sigma(600) == pytest.approx((600 / 512 - 1) / 2)
    assert C.blur_sigma(1024) == pytest.approx(0.5)


def test_box_of_256_centred_is_the_identity():
    img = rand_image(256, 256)
    out, info = C.crop(img, (32, 0, 224, 256))
    assert info == {"center": [128.0, 128.0], "box_size": 256.0, "blur_sigma": None}
    assert np.array_equal(out, img)


def test_integer_shift_copies_pixels_and_is_black_outside():
    img = rand_image(100, 120)
    cx, cy = 50, 40
    out, _ = C.crop(img, (cx - 96, cy - 128, cx + 96, cy + 128))
    expect = np.zeros((256, 256, 3), np.uint8)
    # output (i, j) = source (i - 128 + cy, j - 128 + cx)
    expect[128 - cy : 128 - cy + 100, 128 - cx : 128 - cx + 120] = img
    assert np.array_equal(out, expect)


def test_half_pixel_shift_averages_neighbours():
    img = rand_image(256, 256).astype(np.float64)
    out, _ = C.crop(img.astype(np.uint8), (32.5, 0, 224.5, 256))  # centre x = 128.5
    right = np.concatenate([img[:, 1:], np.zeros((256, 1, 3))], axis=1)  # black beyond the edge
    assert np.array_equal(out, np.floor((img + right) / 2 + 0.5).astype(np.uint8))


def test_box_of_512_takes_every_second_pixel_without_blur():
    img = rand_image(512, 512)
    out, info = C.crop(img, (64, 0, 448, 512))  # centre 256, size 512, d = 1: no blur
    assert info["blur_sigma"] is None
    assert np.array_equal(out, img[::2, ::2])


def test_box_outside_the_image_is_black():
    out, _ = C.crop(rand_image(50, 50), (1000, 1000, 1075, 1100))
    assert not out.any()


def test_large_box_blurs_first():
    img = np.full((1000, 1000, 3), 200, np.uint8)
    img[500:, :, 0] = 0
    out, info = C.crop(img, (116, 0, 884, 1024))  # centre (500, 512), size 1024, sigma 0.5
    assert info["blur_sigma"] == pytest.approx(0.5)
    # Output row i samples source y = 512 + (i - 128) * 4; x = 500 + (j - 128) * 4.
    assert (out[10:120, 10:246] == 200).all()  # y in 0..480: flat
    assert (out[140:246, 10:246, 0] == 0).all() and (out[140:246, 10:246, 1] == 200).all()
    # At row 125 (y = 500) the blurred edge is half-way: value sum of the kernel's upper half.
    expect = C.warp(C.gaussian_blur(img, 0.5), 500, 512, 1024)
    assert np.array_equal(out, expect)
    assert 0 < out[125, 128, 0] < 200


def explicit_gaussian(image, sigma):
    """The blur as the module doc specifies it, written out (the Rust side implements this)."""
    r = int(4 * sigma + 0.5)
    t = np.arange(-r, r + 1)
    k = np.exp(-(t**2) / (2 * sigma**2))
    k /= k.sum()
    x = image.astype(np.float64)
    for axis in (0, 1):
        n = x.shape[axis]
        idx = np.clip(np.arange(n)[:, None] + t[None, :], 0, n - 1)  # edge pixel repeated
        taken = np.take(x, idx, axis=axis)  # axis -> (n, 2r+1)
        x = np.tensordot(taken, k, axes=([axis + 1], [0]))
    return x


@pytest.mark.parametrize("sigma", [0.0859375, 0.5, 1.3])
def test_blur_is_the_documented_separable_gaussian(sigma):
    img = rand_image(20, 30)
    assert np.abs(C.gaussian_blur(img, sigma) - explicit_gaussian(img, sigma)).max() < 1e-9


def test_cli_writes_raw_rgb_and_prints_the_box(tmp_path, capsys):
    img = rand_image(300, 400)
    Image.fromarray(img).save(tmp_path / "in.png")
    C.main(["--image", str(tmp_path / "in.png"), "--box", "100,50,250,290", "--out", str(tmp_path / "out.rgb")])
    info = json.loads(capsys.readouterr().out)
    assert info["center"] == [175.0, 170.0] and info["box_size"] == 240.0 and info["blur_sigma"] is None
    raw = (tmp_path / "out.rgb").read_bytes()
    assert len(raw) == 256 * 256 * 3
    assert raw == C.crop(img, (100, 50, 250, 290))[0].tobytes()
