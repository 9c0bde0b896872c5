"""The fused native render (csrc/render_*.cpp, tokfuse_rt._C.NativeRender) and the native backend,
against the PyTorch render of the same model (the reference).

Tolerance 1e-5 (absolute, on fused luminance in [0, 1]): the kernel accumulates the same float32
products in another order (and with FMA on the AVX2 path), and its exp/tanh differ from PyTorch's in
the last bits; measured differences are ~2e-7. The head's selection slope tau/4 = 10 amplifies
rounding of the base layers tenfold, which still leaves an order of magnitude of margin. uint8
results may then differ by 1 where a value lies within 1e-5 * 255 of a rounding boundary.
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

from tiny_model import tiny_config  # noqa: E402

TOL = 1e-5
HEADS = ("blend", "tone", "layers")
BUNDLED = Path(__file__).resolve().parents[2] / "tokfuse_rt" / "assets" / "default.safetensors"


def _model(head: str, seed: int = 0, **kw):
    """A seeded untrained TokFuse with non-zero head corrections (conv2 starts at zero)."""
    from tokfuse_rt.model.fusion import TokFuse

    torch.manual_seed(seed)
    m = TokFuse(tiny_config(head=head, **kw)).eval()
    with torch.no_grad():
        m.head.conv2.weight.normal_(0, 0.3)
        m.head.conv2.bias.normal_(0, 0.1)
    return m


def _ckpt(tmp_path, head: str, **kw) -> Path:
    from tokfuse_rt.model import save_checkpoint

    return save_checkpoint(_model(head, **kw), tmp_path / f"{head}.safetensors")


def _inputs(rng, b, h, w, nbase):
    ir = rng.random((b, 1, h, w), dtype=np.float32)
    vis = rng.random((b, 1, h, w), dtype=np.float32)
    # half the image smooth, so the layers head's selection is not saturated everywhere
    ir[..., : h // 2, :] = np.linspace(0.2, 0.8, w, dtype=np.float32)
    return ir, vis, rng.random((b, nbase, h, w), dtype=np.float32)


def _torch_render(m, ir, vis, base_up):
    with torch.inference_mode():
        return m.render(*(torch.from_numpy(x) for x in (ir, vis, base_up))).numpy()


def _impls():
    """Every instruction path this CPU and build can run (the others are refused, tested below)."""
    from tokfuse_rt import _C

    out = ["scalar"]
    for impl in ("avx2", "avx512"):
        try:
            _C.NativeRender.resolve_impl(impl)
        except ValueError:
            continue
        out.append(impl)
    return out


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("channels", [(4, 4), (16, 16), (5, 11)])
def test_kernel_matches_pytorch_render(head, channels):
    """Odd sizes (a 1-pixel image, sizes below and above a tile and the 8-pixel vector width), batch 2,
    channel counts that are and are not multiples of 8, both instruction paths, several tile heights."""
    from tokfuse_rt.backends.native_backend import native_render

    m = _model(head, detail_channels=channels[0], head_channels=channels[1], base_radius=3)
    r = native_render(m)
    rng = np.random.default_rng(1)
    for h, w in [(1, 1), (5, 3), (17, 23), (41, 67)]:
        ir, vis, up = _inputs(rng, 2, h, w, 1 if head == "blend" else 5)
        ref = _torch_render(m, ir, vis, up)
        for impl in _impls():
            for tile_rows in (0, 1, 7):
                out = r.run(ir, vis, up, 2, impl, tile_rows)
                assert out.shape == ref.shape and out.dtype == np.float32
                assert np.abs(out - ref).max() <= TOL, (head, h, w, impl, tile_rows)


@pytest.mark.parametrize("head", HEADS)
def test_avx512_and_avx2_paths_agree_bit_for_bit(head):
    """The AVX-512 convolution, rule and box rows repeat the AVX2 kernels' operations lane for lane (same
    accumulation order, the same exp polynomial, FMA where they use it): identical results."""
    from tokfuse_rt.backends.native_backend import native_render

    if "avx512" not in _impls():
        pytest.skip("no AVX-512F on this CPU")
    m = _model(head, detail_channels=5, head_channels=11, base_radius=3)
    ir, vis, up = _inputs(np.random.default_rng(4), 2, 37, 83, 1 if head == "blend" else 5)
    r = native_render(m)
    assert np.array_equal(r.run(ir, vis, up, 2, "avx2"), r.run(ir, vis, up, 2, "avx512"))


def test_radius_larger_than_the_image():
    """Replicate padding when the box filter is wider than the image (every row clamps)."""
    from tokfuse_rt.backends.native_backend import native_render

    m = _model("layers", base_radius=9)
    ir, vis, up = _inputs(np.random.default_rng(2), 1, 6, 13, 5)
    ref = _torch_render(m, ir, vis, up)
    for impl in _impls():
        assert np.abs(native_render(m).run(ir, vis, up, 1, impl) - ref).max() <= TOL


def _pair(shared_data, name="TNO", crop=(233, 301)):
    """A real test pair's luminance (as Engine reads it) float32 [1, 1, h, w], cropped to an odd size."""
    from tokfuse_rt.inputs import Prepared

    d = shared_data / "test" / name
    f = sorted((d / "ir").iterdir())[0]
    vis_dir = d / ("vi" if (d / "vi").is_dir() else "vis")
    a, b = Prepared(f, vis_dir / f.name).luminance()
    h, w = crop
    return a[None, None, :h, :w].copy(), b[None, None, :h, :w].copy()


@pytest.mark.parametrize("head", HEADS)
def test_backend_matches_pytorch_on_real_pairs(tmp_path, shared_data, head):
    """The whole model through Engine(backend="native") vs Engine(backend="pytorch"): k = 0 and k = K,
    ids identical (the token pathway is PyTorch's own), fused within TOL."""
    from tokfuse_rt import Engine

    ckpt = _ckpt(tmp_path, head, base_radius=4)
    ir, vis = _pair(shared_data)
    with Engine(ckpt, device="cpu", threads=2) as pt, Engine(ckpt, backend="native", threads=2) as nat:
        assert nat.backend.name == "native" and pt.backend.name == "pytorch"
        for k in (0, nat.backend.num_tokens):
            f0, i0 = pt.backend.run(ir, vis, k)
            f1, i1 = nat.backend.run(ir, vis, k)
            assert np.array_equal(i0, i1)
            assert np.abs(f1 - f0).max() <= TOL


def test_bundled_model_native(shared_data):
    from tokfuse_rt import Engine

    ir, vis = _pair(shared_data, "RoadScene", (151, 217))
    with Engine(BUNDLED, device="cpu") as pt, Engine(BUNDLED, backend="native") as nat:
        for k in (0, nat.backend.num_tokens):
            f0, i0 = pt.backend.run(ir, vis, k)
            f1, i1 = nat.backend.run(ir, vis, k)
            assert np.array_equal(i0, i1) and np.abs(f1 - f0).max() <= TOL


def _count_native_renders(monkeypatch):
    from tokfuse_rt.backends.native_backend import NativeBackend

    calls = []
    real = NativeBackend.run_render

    def spy(self, a, b, up):
        calls.append(a.shape)
        return real(self, a, b, up)

    monkeypatch.setattr(NativeBackend, "run_render", spy)
    return calls


@pytest.mark.parametrize("head", ["blend", "layers"])
def test_tiles_and_colour_use_the_native_render(tmp_path, monkeypatch, head):
    """A colour pair large enough to be tiled (tile_size=16): every tile goes through the native
    render, the result equals the untiled PyTorch result within 1 (see the module docstring)."""
    from tokfuse_rt import Engine

    ckpt = _ckpt(tmp_path, head)
    rng = np.random.default_rng(5)
    ir, vis = rng.integers(0, 256, (70, 91), dtype=np.uint8), rng.integers(0, 256, (70, 91, 3), dtype=np.uint8)
    calls = _count_native_renders(monkeypatch)
    with Engine(ckpt, device="cpu", tile_size=None) as pt, Engine(ckpt, backend="native", tile_size=16) as nat:
        a, ia = pt.fuse_with_tokens(ir, vis)
        b, ib = nat.fuse_with_tokens(ir, vis)
    assert len(calls) > 4 and max(c[2] for c in calls) < 70
    assert a.shape == b.shape == (70, 91, 3) and b.dtype == np.uint8
    assert np.array_equal(ia, ib)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_video_frames_use_the_native_render(tmp_path, monkeypatch):
    """Engine.stream with token reuse: frames after a key frame run only the render, natively."""
    from tokfuse_rt import Engine

    ckpt = _ckpt(tmp_path, "layers")
    rng = np.random.default_rng(7)
    base = rng.integers(0, 200, (45, 61), dtype=np.uint8)
    frames = [(base + i, base[::-1] + i) for i in range(4)]
    calls = _count_native_renders(monkeypatch)
    with Engine(ckpt, device="cpu") as pt, Engine(ckpt, backend="native") as nat:
        a = list(pt.stream(frames, reuse="interval=4,scene=1"))
        b = list(nat.stream(frames, reuse="interval=4,scene=1"))
    assert len(calls) >= 3
    for x, y in zip(a, b):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1


def test_engine_picks_backends_as_documented(tiny_ckpt, tiny_onnx):
    from tokfuse_rt import Engine

    with Engine(tiny_ckpt, device="cpu") as e:
        assert e.backend.name == "pytorch"  # auto: by file type
    with Engine(tiny_ckpt, backend="native") as e:
        assert e.backend.name == "native" and e.info()["render"]["kernel"] == "native"
        assert e.info()["render"]["impl"] == _impls()[-1]  # auto: the widest path available
    with Engine(tiny_onnx, backend="onnxruntime") as e:
        assert e.backend.name == "onnxruntime"
    with pytest.raises(ValueError, match="native backend runs .safetensors"):
        Engine(tiny_onnx, backend="native")
    with pytest.raises(ValueError, match="backend must be one of"):
        Engine(tiny_ckpt, backend="fast")


def test_native_refuses_what_it_cannot_run(tiny_ckpt):
    from tokfuse_rt import Engine
    from tokfuse_rt.backends.native_backend import NativeBackend, native_render

    with pytest.raises(ValueError, match="CPU only"):
        Engine(tiny_ckpt, backend="native", device="cuda")
    with pytest.raises(ValueError, match="impl must be one of"):
        NativeBackend(tiny_ckpt, impl="neon")
    m = _model("layers")

    class OtherHead(type(m.head)):
        pass

    m.head.__class__ = OtherHead  # a render half the kernel does not implement
    with pytest.raises(ValueError, match="OtherHead"):
        native_render(m)
    r = native_render(_model("tone"))
    one = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"base_up must have shape \(1, 5, 4, 4\)"):
        r.run(one, one, one)
    with pytest.raises(ValueError, match="vis must have the shape of ir"):
        r.run(one, one[..., :3], np.zeros((1, 5, 4, 4), np.float32))
    with pytest.raises(TypeError, match="ir must be a float array"):
        r.run(one.astype(np.int32), one, np.zeros((1, 5, 4, 4), np.float32))
    with pytest.raises(ValueError, match="impl must be"):
        r.run(one, one, np.zeros((1, 5, 4, 4), np.float32), 1, "neon")


def test_scalar_fallback_when_the_cpu_has_no_avx2(tmp_path):
    """TOKFUSE_NO_AVX2=1 makes the process behave as on a CPU without AVX2 (nor AVX-512): "auto" runs
    the scalar kernels (still within TOL of PyTorch), "avx2" and "avx512" are refused clearly."""
    code = f"""
import numpy as np, sys
sys.path[:0] = [{str(Path(__file__).resolve().parent)!r}, {str(Path(__file__).resolve().parents[1])!r}]
from test_native_render import _model, _inputs, _torch_render, TOL
from tokfuse_rt import _C
from tokfuse_rt.backends.native_backend import native_render
assert _C.NativeRender.resolve_impl("auto") == "scalar"
m = _model("layers")
ir, vis, up = _inputs(np.random.default_rng(3), 1, 19, 29, 5)
assert np.abs(native_render(m).run(ir, vis, up) - _torch_render(m, ir, vis, up)).max() <= TOL
for impl, why in (("avx2", "no AVX2+FMA"), ("avx512", "no AVX-512F")):
    try:
        native_render(m).run(ir, vis, up, 1, impl)
    except ValueError as e:
        assert why in str(e), e
    else:
        raise SystemExit(impl + " was not refused")
print("ok")
"""
    env = dict(os.environ, TOKFUSE_NO_AVX2="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
