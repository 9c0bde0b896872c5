"""The native int8 render (csrc/render_int8.cpp, render_vnni.cpp: ``NativeRender.run_int8``) and the
``native-int8`` backend.

References:
- ``render_int8_ref`` (tokfuse_rt/backends/render_int8.py), the same quantised computation in PyTorch:
  the integer accumulations are exact in both (float64 convolutions of integer values), the
  dequantisation and requantisation are the same float32 operations in the same order, so every
  uint8 activation is identical; only the float32 head rule differs (exp/tanh and the FMA of the AVX2
  1x1 convolution, ~1e-7). Tolerance 1e-5, as for the float32 render (test_native_render.py).
- the scalar and VNNI kernels must agree bit for bit (integer arithmetic, same epilogue).
- the float32 model: PSNR bounds of the int8 path (median >= 40 dB, worst >= 35 dB, ids identical),
  on the first pairs of three test sets with the bundled model's ranges (calibrated on train/).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tokfuse_rt.backends.native_backend import native_available

pytestmark = pytest.mark.skipif(not native_available(), reason="tokfuse_rt._C built without the native render")

from test_native_render import BUNDLED, HEADS, _ckpt, _inputs, _model, _pair  # noqa: E402

TOL = 1e-5


def _ranges(m, seed=0) -> dict:
    """Ranges of a random model from random inputs (what export.to_native records from real pairs)."""
    from tokfuse_rt.backends.render_int8 import calibrate

    rng = np.random.default_rng(seed)
    return calibrate(m, [(rng.random((33, 47), dtype=np.float32), rng.random((33, 47), dtype=np.float32))])


def _kernel(m, ranges=None):
    from tokfuse_rt.backends.native_backend import native_render
    from tokfuse_rt.backends.render_int8 import quant_tables

    t = quant_tables(m, ranges or _ranges(m))
    r = native_render(m)
    r.quantize(t["conv1"], t["conv2"], t["conv3"], t["base_inv"], t["base_zero"])
    return r, t


def _int8_impls():
    from tokfuse_rt import _C

    out = ["scalar"]
    try:
        _C.NativeRender.resolve_int8_impl("vnni")
        out.append("vnni")
    except ValueError:
        pass
    return out


def _ref(m, t, ir, vis, up):
    from tokfuse_rt.backends.render_int8 import render_int8_ref

    return render_int8_ref(m, t, *(torch.from_numpy(x) for x in (ir, vis, up))).numpy()


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("channels", [(4, 4), (16, 16), (5, 11)])
def test_kernel_matches_the_pytorch_reference(head, channels):
    """Odd sizes (1 pixel, below and above the 16-pixel block and a tile), batch 2, channel counts that
    are and are not multiples of 4 and 16, every instruction path (bit-identical), several tile heights."""
    m = _model(head, detail_channels=channels[0], head_channels=channels[1], base_radius=3)
    r, t = _kernel(m)
    rng = np.random.default_rng(1)
    for h, w in [(1, 1), (5, 3), (17, 23), (41, 67)]:
        ir, vis, up = _inputs(rng, 2, h, w, 1 if head == "blend" else 5)
        up[:, :1] -= 0.2  # a base channel below 0 too: its zero point is not 0
        ref = _ref(m, t, ir, vis, up)
        first = None
        for impl in _int8_impls():
            for tile_rows in (0, 1, 7):
                out = r.run_int8(ir, vis, up, 2, impl, tile_rows)
                assert out.shape == ref.shape and out.dtype == np.float32
                assert np.abs(out - ref).max() <= TOL, (head, h, w, impl, tile_rows)
                if first is None:
                    first = out
                assert np.array_equal(out, first), (impl, tile_rows)  # scalar == VNNI, any tiling


@pytest.mark.parametrize("head", ["tone", "layers"])
def test_tone_as_constants_equals_filled_channels(head):
    """run/run_int8(..., tone=T) with base_up of one channel: bit-identical to base_up whose channels 1..4
    are filled with T (what upsample_base writes; the native backends' whole-image path uses the former)."""
    m = _model(head)
    r, _ = _kernel(m)
    ir, vis, up = _inputs(np.random.default_rng(6), 2, 29, 45, 5)
    tone = np.random.default_rng(7).random((2, 4), dtype=np.float32)
    up[:, 1:] = tone[:, :, None, None]
    for run in (r.run, r.run_int8):
        assert np.array_equal(run(ir, vis, up, 2), run(ir, vis, np.ascontiguousarray(up[:, :1]), 2, tone=tone))
    with pytest.raises(ValueError, match=r"tone must have shape \(2, 4\)"):
        r.run(ir, vis, up[:, :1].copy(), 2, tone=tone[:, :3].copy())
    with pytest.raises(ValueError, match=r"base_up must have shape \(2, 1, 29, 45\).*with tone"):
        r.run(ir, vis, up, 2, tone=tone)
    blend, _ = _kernel(_model("blend"))
    with pytest.raises(ValueError, match="tone applies to"):
        blend.run(ir, vis, up[:, :1].copy(), 2, tone=tone)


def test_quantisation_is_close_to_float32():
    """The int8 render vs the float32 render of the same model on inputs inside the calibrated ranges:
    the error of 8-bit activations and weights, bounded well below one grey level (1/255)."""
    m = _model("layers", detail_channels=16, head_channels=16)
    ranges = _ranges(m, seed=3)
    r, _ = _kernel(m, ranges)
    ir, vis, up = _inputs(np.random.default_rng(3), 1, 33, 47, 5)
    with torch.inference_mode():
        f32 = m.render(*(torch.from_numpy(x) for x in (ir, vis, up))).numpy()
    err = np.abs(r.run_int8(ir, vis, up) - f32)
    assert err.mean() < 1e-3 and err.max() < 2e-2, (err.mean(), err.max())


def _psnr(a, b) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_bundled_int8_meets_the_bounds_on_real_pairs(shared_data):
    """Engine(backend="native-int8") vs Engine(backend="native") (float32) on the first 3 pairs of
    test/TNO, RoadScene and MSRS, uint8 output in colour: ids identical, PSNR >= 40 dB per pair (the
    median bound; the worst-pair bound is 35), with the bundled ranges."""
    from tokfuse_rt import Engine
    from tokfuse_rt.pairing import pair_set

    with Engine(BUNDLED, backend="native", threads=2) as f32, Engine(BUNDLED, backend="native-int8", threads=2) as i8:
        assert i8.info()["render"]["precision"] == "int8"
        for name in ("TNO", "RoadScene", "MSRS"):
            for p in list(pair_set(shared_data / "test" / name))[:3]:
                a, ia = f32.fuse_with_tokens(p.ir, p.vis)
                b, ib = i8.fuse_with_tokens(p.ir, p.vis)
                assert np.array_equal(ia, ib), p.name
                assert _psnr(a, b) >= 40.0, (p.name, _psnr(a, b))


@pytest.mark.parametrize("head", ["blend", "layers"])
def test_backend_on_a_real_pair_matches_the_reference(tmp_path, shared_data, head):
    """The whole model through Engine(backend="native-int8"): ids are the float32 model's, the fused
    map is render_int8_ref of the PyTorch halves, at k = 0 and k = K."""
    from export.to_native import add_ranges
    from tokfuse_rt import Engine
    from tokfuse_rt.backends.render_int8 import quant_tables

    ckpt = _ckpt(tmp_path, head, base_radius=4)
    out = tmp_path / "int8.safetensors"
    add_ranges(ckpt, out, shared_data / "train", calib_pairs=2)
    ir, vis = _pair(shared_data)
    with Engine(out, device="cpu", threads=2) as pt, Engine(out, backend="native-int8", threads=2) as i8:
        t = quant_tables(pt.backend.model, i8.backend.ranges)
        for k in (0, i8.backend.num_tokens):
            base, i0 = pt.backend.run_tokens(ir, vis, k)
            f1, i1 = i8.backend.run(ir, vis, k)
            assert np.array_equal(i0, i1)
            up = pt.backend.upsample_base(base, ir.shape[-2:])
            assert np.abs(f1 - _ref(pt.backend.model, t, ir, vis, up)).max() <= TOL


def test_tiles_and_video_run_the_int8_render(tmp_path, shared_data, monkeypatch):
    """Tiling (tile_size=16) and stream frames with token reuse go through NativeInt8Backend.run_render;
    tiles equal the untiled int8 result within 1 grey level (the int8 render is elementwise-exact per tile
    up to the float32 rule, like the float32 one)."""
    from export.to_native import add_ranges
    from tokfuse_rt import Engine
    from tokfuse_rt.backends.native_backend import NativeInt8Backend

    ckpt = add_ranges(_ckpt(tmp_path, "layers"), tmp_path / "q.safetensors", shared_data / "train", 2)["path"]
    calls = []
    real = NativeInt8Backend.run_render
    monkeypatch.setattr(NativeInt8Backend, "run_render", lambda s, a, b, u: calls.append(a.shape) or real(s, a, b, u))
    rng = np.random.default_rng(5)
    ir, vis = rng.integers(0, 256, (70, 91), dtype=np.uint8), rng.integers(0, 256, (70, 91, 3), dtype=np.uint8)
    with (
        Engine(ckpt, backend="native-int8", tile_size=None) as whole,
        Engine(ckpt, backend="native-int8", tile_size=16) as tiled,
    ):
        a = whole.fuse(ir, vis)
        n = len(calls)
        b = tiled.fuse(ir, vis)
        assert len(calls) - n > 4
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        frames = [(ir[:45, :61] + i, ir[:45, :61][::-1] + i) for i in range(4)]
        n = len(calls)
        assert len(list(whole.stream(frames, reuse="interval=4,scene=1"))) == 4
        assert len(calls) - n >= 3


def test_native_int8_refuses_what_it_cannot_run(tmp_path, tiny_ckpt, shared_data):
    from tokfuse_rt import Engine
    from tokfuse_rt.backends.native_backend import NativeInt8Backend
    from tokfuse_rt.backends.render_int8 import check_ranges

    with pytest.raises(ValueError, match="no int8 ranges.*export.to_native"):
        Engine(tiny_ckpt, backend="native-int8")
    with pytest.raises(ValueError, match="impl must be one of"):
        NativeInt8Backend(BUNDLED, impl="avx512")
    with pytest.raises(ValueError, match="'base' must be"):
        check_ranges({"version": 1, "h1": [1.0] * 4, "d": [1.0] * 4, "base": [1.0, 0.0]}, 4, "x")
    with pytest.raises(ValueError, match="'h1' must be a list of 4"):
        check_ranges({"version": 1, "h1": [1.0] * 3, "d": [1.0] * 4, "base": [0.0, 1.0]}, 4, "x")
    with pytest.raises(ValueError, match="version 1"):
        check_ranges({"version": 2}, 4, "x")
    from tokfuse_rt.backends.native_backend import native_render

    r = native_render(_model("tone"))
    one = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="before quantize"):
        r.run_int8(one, one, np.zeros((1, 5, 4, 4), np.float32))
    r, _ = _kernel(_model("tone"))
    with pytest.raises(ValueError, match="int8 impl must be"):
        r.run_int8(one, one, np.zeros((1, 5, 4, 4), np.float32), 1, "avx2")
    with pytest.raises(ValueError, match=r"base_up must have shape \(1, 5, 4, 4\)"):
        r.run_int8(one, one, one)
    from export.to_native import main

    assert main([str(tiny_ckpt), "-o", str(tmp_path / "x.safetensors")]) == 1  # no --calib
    assert main([str(tiny_ckpt), "-o", str(tmp_path / "x.safetensors"), "--calib", str(shared_data / "test")]) == 1
    assert main([str(tiny_ckpt), "-o", str(tmp_path / "x.onnx"), "--calib", str(shared_data / "train")]) == 1
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.onnx").exists()


def test_export_native_writes_ranges_and_keeps_the_weights(tmp_path, tiny_ckpt, shared_data):
    """``tokfuse export native`` (= export.to_native): ranges in the metadata, weights byte-identical, and the
    float32 backends read the result as before."""
    from safetensors.numpy import load_file

    from tokfuse_rt import Engine
    from tokfuse_rt.cli import main

    out = tmp_path / "q.safetensors"
    argv = ["export", "native", str(tiny_ckpt), "-o", str(out), "--calib", str(shared_data / "train")]
    assert main([*argv, "--calib-pairs", "2"]) == 0
    a, b = load_file(str(tiny_ckpt)), load_file(str(out))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with Engine(out, backend="native-int8") as e:
        r = e.backend.ranges
        assert r["calibration"]["pairs"] == 2 and len(r["h1"]) == e.backend.cfg.detail_channels
        assert r["base"][0] <= 0.0 < r["base"][1]
    with Engine(out) as e:
        assert e.backend.name == "pytorch"


def test_int8_scalar_fallback_without_vnni():
    """TOKFUSE_NO_AVX2=1 (a CPU without AVX2 or AVX-512): "auto" runs the scalar int8 kernel, "vnni" is
    refused clearly, and the result equals the reference."""
    here = Path(__file__).resolve().parent
    code = f"""
import numpy as np, sys
sys.path[:0] = [{str(here)!r}, {str(here.parent)!r}]
from test_native_int8 import _model, _kernel, _ref, _inputs, TOL
from tokfuse_rt import _C
assert _C.NativeRender.resolve_int8_impl("auto") == "scalar"
m = _model("layers")
r, t = _kernel(m)
ir, vis, up = _inputs(np.random.default_rng(3), 1, 19, 29, 5)
assert np.abs(r.run_int8(ir, vis, up) - _ref(m, t, ir, vis, up)).max() <= TOL
try:
    r.run_int8(ir, vis, up, 1, "vnni")
except ValueError as e:
    assert "no AVX-512 VNNI" in str(e), e
else:
    raise SystemExit("vnni was not refused")
print("ok")
"""
    env = dict(os.environ, TOKFUSE_NO_AVX2="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
