"""Colour handling: BT.601 full-range YCbCr as OpenCV's YCrCb, round trip, gray in gray out."""

import numpy as np
import pytest

from tokfuse_rt import Engine
from tokfuse_rt.imageio import is_colour, luminance, rgb_to_ycbcr, ycbcr_to_rgb


def _opencv_ycrcb_reference(rgb):
    """OpenCV documentation formulas for float RGB in [0, 1] (delta = 0.5), computed in float64."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, (b - y) * 0.564 + 0.5, (r - y) * 0.713 + 0.5


def test_forward_matches_opencv_formulas():
    rng = np.random.default_rng(0)
    rgb = rng.random((7, 9, 3)).astype(np.float32)
    ycc = rgb_to_ycbcr(rgb)
    y, cb, cr = _opencv_ycrcb_reference(rgb)
    # float32 arithmetic of values in [0, 1]: a few ulps
    np.testing.assert_allclose(ycc[..., 0], y, atol=1e-6)
    np.testing.assert_allclose(ycc[..., 1], cb, atol=1e-6)
    np.testing.assert_allclose(ycc[..., 2], cr, atol=1e-6)


def test_round_trip_within_one_grey_level():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    # OpenCV's rounded 3-digit inverse coefficients are not an exact inverse: ≤ 1 grey level
    assert np.abs(back * 255.0 - rgb.astype(np.float32)).max() <= 1.0


def test_gray_detection_and_luminance():
    g = np.full((20, 20, 3), 77, np.uint8)
    assert not is_colour(g) and not is_colour(g[..., 0])
    c = g.copy()
    c[3, 4, 2] = 78
    assert is_colour(c)
    np.testing.assert_allclose(luminance(g), 77 / 255.0, atol=1e-6)
    # one differing pixel in any row block (the first block is 32 rows, the next ones 512): found
    big = np.full((1100, 7, 3), 9, np.uint8)
    assert not is_colour(big) and not is_colour(big.astype(np.float32) / 255)
    for row in (0, 31, 32, 543, 544, 1099):
        c = big.copy()
        c[row, 6, 1] = 11  # 2 levels: above the float tolerance of one level too
        assert is_colour(c) and is_colour(c.astype(np.float32) / 255), row


def test_engine_colour_rules(tiny_ckpt):
    rng = np.random.default_rng(2)
    ir = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    vis_rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    with Engine(tiny_ckpt) as eng:
        gray = eng.fuse(ir, ir)  # gray in -> gray out
        assert gray.shape == (40, 50) and gray.dtype == np.uint8
        col = eng.fuse(ir, vis_rgb)  # visible chroma re-attached
        assert col.shape == (40, 50, 3)
        fused_y = luminance(col)
        ycc_out, ycc_vis = rgb_to_ycbcr(col), rgb_to_ycbcr(vis_rgb)
        # chroma where no channel clipped equals the visible chroma up to uint8 rounding (≤ 1/255 per channel)
        ok = (col > 2).all(-1) & (col < 253).all(-1)
        assert ok.mean() > 0.3
        assert np.abs(ycc_out[..., 1:][ok] - ycc_vis[..., 1:][ok]).max() < 2.5 / 255
        assert fused_y.shape == (40, 50)
        # MIF: a pseudo-colour functional image in the vis slot gives chroma; gray RGB stays gray
        gray3 = np.repeat(ir[..., None], 3, axis=-1)
        out = eng.fuse(gray3, gray3)
        assert out.shape == (40, 50, 3) and not is_colour(out)
        # gray visible -> gray output, whatever the infrared (the colour comes from the visible side only)
        out2 = eng.fuse(vis_rgb, ir)
        assert out2.shape == (40, 50) and out2.dtype == np.uint8
        out3 = eng.fuse(vis_rgb, gray3)  # gray stored as RGB: 3 equal channels back
        assert out3.shape == (40, 50, 3) and not is_colour(out3)
        # gray and gray-stored-as-RGB visible images have the same luminance: the same fused values
        assert np.array_equal(out3[..., 0], out2) and np.array_equal(out3[..., 1], out2)


@pytest.mark.parametrize("set_name", ["Harvard_MRI_PET", "Harvard_MRI_SPECT"])
def test_medical_pseudo_colour_keeps_chroma(tiny_ckpt, shared_data, set_name):
    from tokfuse_rt.imageio import load_image

    d = shared_data / "test" / set_name
    a, b = d / "a" / "11.png", d / "b" / "11.png"
    with Engine(tiny_ckpt) as eng:
        out = eng.fuse(a, b)
    pet = load_image(b)
    assert out.shape == pet.shape and is_colour(out)
    chroma_err = np.abs(rgb_to_ycbcr(out)[..., 1:] - rgb_to_ycbcr(pet)[..., 1:])
    ok = (out > 2).all(-1) & (out < 253).all(-1)
    assert np.median(chroma_err[ok]) < 2.0 / 255
