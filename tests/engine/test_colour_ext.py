"""The colour steps in C++ (tokfuse_rt._C.luminance_u8, colour_out; csrc/colour_py.cpp) against their
definition in NumPy (tokfuse_rt.imageio): bit-identical (the same float32 operations in the same order),
so the Engine's output does not depend on whether the extension is built."""

from __future__ import annotations

import numpy as np
import pytest

from tokfuse_rt import imageio

pytestmark = pytest.mark.skipif(imageio.colour_ext() is None, reason="tokfuse_rt._C without the colour steps")


def _numpy_colour(y, vis):
    ycc = imageio.rgb_to_ycbcr(vis)
    ycc[..., 0] = y
    return imageio.to_uint8(imageio.ycbcr_to_rgb(ycc))


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 29), (480, 640)])
def test_bit_identical_to_numpy(shape):
    ext = imageio.colour_ext()
    rng = np.random.default_rng(sum(shape))
    vis = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    extremes = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]], np.uint8)
    n = min(4, vis.shape[0] * vis.shape[1])
    vis.reshape(-1, 3)[:n] = extremes[:n]
    lum = np.empty(shape, np.float32)
    ext.luminance_u8(vis, lum)
    assert np.array_equal(lum, imageio.luminance_np(vis))
    y = rng.uniform(-0.3, 1.3, shape).astype(np.float32)  # out of [0, 1] too: clipped alike
    out = np.empty((*shape, 3), np.uint8)
    ext.colour_out(y, vis, out)
    assert np.array_equal(out, _numpy_colour(y, vis))


def test_windows_of_a_real_image(shared_data):
    """Views with row strides (the windows tiling fills), on a real colour image."""
    from tokfuse_rt.imageio import load_image

    vis = load_image(sorted((shared_data / "test" / "RoadScene" / "vi").iterdir())[0], "vis")
    assert vis.ndim == 3
    ext = imageio.colour_ext()
    win = (slice(7, 90), slice(13, 201))
    assert np.array_equal(imageio.luminance(vis[win]), imageio.luminance_np(vis[win]))
    y = imageio.luminance_np(vis)[win][::-1].copy()
    out = np.zeros_like(vis)
    ext.colour_out(y, vis[win], out[win])
    assert np.array_equal(out[win], _numpy_colour(y, vis[win])) and not out[:7].any()


def test_engine_output_does_not_depend_on_the_extension(monkeypatch, tiny_ckpt):
    from tokfuse_rt import Engine

    rng = np.random.default_rng(4)
    ir, vis = rng.integers(0, 256, (37, 53), dtype=np.uint8), rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    with Engine(tiny_ckpt, device="cpu") as e:
        a = e.fuse(ir, vis)
        monkeypatch.setattr(imageio, "_EXT", None)  # as without the compiled extension
        b = e.fuse(ir, vis)
    assert np.array_equal(a, b)


def test_without_avx512_the_portable_loops_give_the_same_bits():
    """TOKFUSE_NO_AVX2=1 (a CPU without AVX2/AVX-512): the portable C++ loops instead of the VBMI kernels."""
    import subprocess
    import sys

    code = (
        "import numpy as np; from tokfuse_rt import imageio as io; ext = io.colour_ext();"
        "rng = np.random.default_rng(9); v = rng.integers(0, 256, (37, 83, 3), dtype=np.uint8);"
        "y = rng.uniform(-0.3, 1.3, (37, 83)).astype(np.float32); o = np.empty_like(v);"
        "l = np.empty((37, 83), np.float32); ext.luminance_u8(v, l); ext.colour_out(y, v, o);"
        "ycc = io.rgb_to_ycbcr(v); ycc[..., 0] = y;"
        "assert np.array_equal(l, io.luminance_np(v));"
        "assert np.array_equal(o, io.to_uint8(io.ycbcr_to_rgb(ycc))); print('ok')"
    )
    env = dict(__import__("os").environ, TOKFUSE_NO_AVX2="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_refusals():
    ext = imageio.colour_ext()
    rgb = np.zeros((4, 5, 3), np.uint8)
    out = np.zeros((4, 5), np.float32)
    with pytest.raises(TypeError, match="rgb has dtype float32, expected uint8"):
        ext.luminance_u8(rgb.astype(np.float32), out)
    with pytest.raises(ValueError, match=r"rgb must have shape \(H, W, 3\)"):
        ext.luminance_u8(rgb[..., :2], out)
    with pytest.raises(ValueError, match="out must have the height and width of rgb"):
        ext.luminance_u8(rgb, out[:3])
    with pytest.raises(ValueError, match="pixels must be contiguous"):
        ext.luminance_u8(rgb[:, ::2], out[:, :3])
    ro = np.zeros((4, 5, 3), np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        ext.colour_out(out, rgb, ro)
    with pytest.raises(TypeError, match="must be a numpy array"):
        ext.colour_out([[0.0]], rgb, rgb.copy())
