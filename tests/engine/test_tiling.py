"""Tiles: tiled output equals untiled output within 1 grey level, token ids identical; the
pieces against the model's own whole-image operations; bounded peak memory on a large pair."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tokfuse_rt import Engine
from tokfuse_rt.inputs import Prepared
from tokfuse_rt.model import TokFuse, TokFuseConfig
from tokfuse_rt.tiling import ROW_BLOCK, tile_windows, token_inputs, upsample_window

from tiny_model import tiny_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("hw", [(16, 16), (17, 33), (ROW_BLOCK + 1, 45), (3 * ROW_BLOCK - 7, 601), (1023, 31)])
def test_token_inputs_bit_identical_to_the_models_resize(hw):
    rng = np.random.default_rng(sum(hw))
    ir = rng.integers(0, 256, hw, dtype=np.uint8)
    vis = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    p = Prepared(ir, vis)
    m = TokFuse(TokFuseConfig(image_size=128, patch_size=16))
    got = token_inputs(p, 128)
    for g, y in zip(got, p.luminance()):
        with torch.no_grad():
            want = m.to_token_input(torch.from_numpy(y)[None, None]).numpy()
        assert np.array_equal(g, want)  # bit for bit: the token ids must not change


def test_upsample_window_matches_the_whole_upsample():
    base = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    full = TokFuse.upsample_base(base, (301, 517)).numpy()
    for y0, y1, x0, x1 in [(0, 301, 0, 517), (17, 90, 250, 517), (300, 301, 0, 1), (5, 6, 400, 430)]:
        win = upsample_window(base.numpy(), (301, 517), y0, y1, x0, x1)
        # same bilinear formula, float32, possibly another summation order: a few ulps of values < 1
        np.testing.assert_allclose(win, full[:, :, y0:y1, x0:x1], rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    "h,w,tile,halo,align", [(100, 100, 30, 3, 1), (97, 203, 64, 5, 4), (16, 1000, 512, 3, 8), (1025, 1030, 1024, 0, 1)]
)
def test_tile_windows_cover_once_and_respect_halo_and_align(h, w, tile, halo, align):
    cover = np.zeros((h, w), int)
    for y0, y1, x0, x1, wy0, wy1, wx0, wx1 in tile_windows(h, w, tile, halo, align):
        cover[y0:y1, x0:x1] += 1
        assert wy0 % align == 0 and wx0 % align == 0
        assert wy0 <= max(0, y0 - halo) and wx0 <= max(0, x0 - halo)
        assert wy1 == min(h, y1 + halo) and wx1 == min(w, x1 + halo)
        assert y0 % align == 0 and x0 % align == 0
        assert (y1 - y0) >= min(h, tile) // 2 and (x1 - x0) >= min(w, tile) // 2  # no sliver tiles
    assert (cover == 1).all()


def _engines(ckpt, tile):
    return Engine(ckpt, tile_size=None), Engine(ckpt, tile_size=tile)


def _close(a, b):
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("hw", [(100, 131), (257, 64), (40, 1000)])
def test_tiled_equals_untiled_tiny_model_odd_sizes(tiny_ckpt, hw):
    rng = np.random.default_rng(hw[0])
    ir = rng.integers(0, 256, hw, dtype=np.uint8)
    vis = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    whole, tiled = _engines(tiny_ckpt, 16)
    assert tiled._tiled(hw) and not whole._tiled(hw)
    a, ia = whole.fuse_with_tokens(ir, vis)
    b, ib = tiled.fuse_with_tokens(ir, vis)
    assert np.array_equal(ia, ib) and a.shape == b.shape
    # float32 convolutions summed in another order (window vs whole image): below 1 grey level
    assert _close(a, b) <= 1
    # float inputs give float outputs through the tiles too
    f = tiled.fuse(ir / 255.0, vis / 255.0)
    assert f.dtype == np.float64 and np.abs(f * 255 - b).max() <= 0.5 + 1e-3
    assert [_close(x, y) for x, y in zip(tiled.fuse_batch([(ir, vis), (ir, vis)]), [b, b])] == [0, 0]


def test_tiled_equals_untiled_default_model_real_pairs(shared_data):
    whole, tiled = _engines(None, 256)
    for rel in ("MSRS/{}/00004N.png", "RoadScene/{}/FLIR_00211.jpg", "TNO/{}/01.png"):
        ir, vis = (shared_data / "test" / rel.format(s) for s in ("ir", "vi"))
        a, ia = whole.fuse_with_tokens(ir, vis)
        b, ib = tiled.fuse_with_tokens(ir, vis)
        assert np.array_equal(ia, ib), rel
        assert _close(a, b) <= 1, rel


@pytest.mark.parametrize("hw", [(100, 131), (40, 1000)])
def test_tiled_equals_untiled_onnxruntime(tiny_onnx, hw):
    """ONNX Runtime tiles through the exported halves: same ids, within 1 grey level of its untiled run."""
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(hw[1])
    ir = rng.integers(0, 256, hw, dtype=np.uint8)
    vis = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    whole, tiled = _engines(tiny_onnx, 16)
    with whole, tiled:  # ONNX Runtime sessions released here, not at interpreter exit
        assert tiled._tiled(hw) and not whole._tiled(hw)
        a, ia = whole.fuse_with_tokens(ir, vis)
        b, ib = tiled.fuse_with_tokens(ir, vis)
    assert np.array_equal(ia, ib) and a.shape == b.shape
    # float32 convolutions over a window vs the whole image, in two graphs: below 1 grey level
    assert _close(a, b) <= 1


class _Aligned(TokFuse):
    """The default model declared with a coarser alignment and a larger halo (still true for it): tiles
    must start on multiples of render_align and carry render_halo of context."""

    render_halo = 7
    render_align = 4


@pytest.mark.parametrize("head", ["tone", "layers"])
def test_tiled_equals_untiled_tone_head(tmp_path, head):
    """The "tone" and "layers" heads' base map has 5 channels (base + 4 tone values): windows of all of
    them; the "layers" head's box-filtered base layers need its larger halo (2·base_radius)."""
    from tokfuse_rt.model import save_checkpoint

    torch.manual_seed(0)
    cfg = tiny_config(head=head)
    m = TokFuse(cfg).eval()
    with torch.no_grad():
        m.head.conv2.weight.normal_(0, 0.1)
    ckpt = save_checkpoint(m, tmp_path / f"{head}.safetensors")
    rng = np.random.default_rng(5)
    ir, vis = rng.integers(0, 256, (70, 90), dtype=np.uint8), rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    whole, tiled = _engines(ckpt, 16)
    a, ia = whole.fuse_with_tokens(ir, vis)
    b, ib = tiled.fuse_with_tokens(ir, vis)
    assert np.array_equal(ia, ib) and _close(a, b) <= 1


def test_tiles_follow_the_models_halo_and_align(tiny_ckpt, monkeypatch):
    from tokfuse_rt.backends import torch_backend

    rng = np.random.default_rng(9)
    ir, vis = rng.integers(0, 256, (90, 77), dtype=np.uint8), rng.integers(0, 256, (90, 77, 3), dtype=np.uint8)
    whole, tiled = _engines(tiny_ckpt, 20)
    m = tiled._backend.model
    m.__class__ = _Aligned
    calls = []
    real = torch_backend.TorchBackend.run_render

    def spy(self, a, b, up):
        calls.append(a.shape)
        return real(self, a, b, up)

    monkeypatch.setattr(torch_backend.TorchBackend, "run_render", spy)
    assert _close(whole.fuse(ir, vis), tiled.fuse(ir, vis)) <= 1
    assert len(calls) == len(tile_windows(90, 77, 20, 7, 4)) and max(c[2] for c in calls) <= 20 + 2 * 7 + 3


_RSS = """
import json, sys, numpy as np
from tokfuse_rt import Engine
h, w, tile = (int(v) for v in sys.argv[1:4])
rng = np.random.default_rng(0)
ir = rng.integers(0, 256, (h, w), dtype=np.uint8)
vis = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
with Engine(tile_size=tile or None, threads=2) as eng:
    base = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
    out = eng.fuse(ir, vis)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"before_kib": base, "peak_kib": hwm, "shape": list(out.shape)}))
"""


def test_tiled_peak_memory_is_bounded():
    """A 3000x2000 pair in a fresh process: the peak above the loaded engine stays near the sources,
    the output and one tile's working set (~330 B/px x 512² here), far below untiled (~320 B/px x 6 MP)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-c", _RSS, "2000", "3000", "512"], capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["shape"] == [2000, 3000, 3]
    grew_mib = (d["peak_kib"] - d["before_kib"]) / 1024
    # sources 24 MiB (ir 6, vis 18) + output 18 MiB + tiles; untiled would need ~1.8 GiB more
    assert grew_mib < 400, grew_mib


@pytest.mark.parametrize("reuse", ["off", "auto"])
def test_stream_frames_are_tiled_like_fuse(tiny_ckpt, reuse):
    """``stream`` renders large frames in tiles from the S x S base map (bounded memory, no frame-size
    base map): each frame equals ``fuse`` of the same tiled engine, and is within 1 grey level of the
    untiled stream."""
    rng = np.random.default_rng(1)
    frames = [(rng.integers(0, 256, (100, 131), dtype=np.uint8),) * 2 for _ in range(3)]
    whole, tiled = _engines(tiny_ckpt, 16)
    got = list(tiled.stream(frames, reuse="off"))
    it = tiled.stream(frames, reuse=reuse)
    got_reuse = list(it)
    assert it.stats()["tiled_frames"] == 3
    ref = list(whole.stream(frames, reuse="off"))
    for (ir, vis), g, gr, r in zip(frames, got, got_reuse, ref):
        assert np.array_equal(g, tiled.fuse(ir, vis))
        assert np.array_equal(gr, g)  # the same frame repeated: the reused base map is the frame's own
        assert _close(g, r) <= 1  # float32 sums in another order (window vs whole frame)
