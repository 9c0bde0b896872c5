"""The PyTorch backend on the Triton kernels: a full TokFuse forward and ``Engine.fuse`` with
``kernel_backend("triton")`` / ``Engine(..., kernels="triton")`` against the default torch path.

On CUDA the backend uses the kernels by itself ("auto"); here they are forced onto CPU tensors and run in
Triton's CPU interpreter: this module sets ``TRITON_INTERPRET=1`` (``os.environ.setdefault``) before it
imports triton (Triton fixes its mode when first imported; if something imported it earlier in compiled
mode and there is no GPU, these tests skip and say so). ``TRITON_INTERPRET=0`` on a CUDA machine runs the
same comparisons with the compiled kernels on the GPU.

Tolerances: ids must be identical. The token pathway then feeds the same codebook rows to the same torch
decoder, so the base map and the fused image are expected bit-identical; the fused image is compared with
a 1e-6 tolerance (1/255 on uint8 engine output) only so that a nondeterministic conv backend would not be
mistaken for a kernel error.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from triton_cases import DEVICE, KERNEL_MARKS, load_gray

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "tokfuse_rt" / "assets"


pytestmark = KERNEL_MARKS


@pytest.fixture(scope="module")
def model():
    """TokFuse(TokFuseConfig()) with seed 0, plus a non-trivial fusion head and trained-like STE edit scale
    (seeded), so that the fused image depends on the tokens and STE re-quantises to new codes."""
    from tokfuse_rt.model import TokFuse, TokFuseConfig

    torch.manual_seed(0)
    m = TokFuse(TokFuseConfig()).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        m.head.conv2.weight.normal_(0, 0.1, generator=g)
        m.ste.edit_fc2.weight.normal_(0, 0.5, generator=g)
    return m


@pytest.fixture(scope="module")
def pair_batch():
    """Two 64x80 pairs: the bundled real IR/visible sample (area-resized) and a seeded smooth random pair."""
    ir, vis = load_gray(ASSETS / "sample_ir.png"), load_gray(ASSETS / "sample_vis.png")
    real = [F.interpolate(x[None, None], size=(64, 80), mode="area")[0] for x in (ir, vis)]
    g = torch.Generator().manual_seed(2)
    rnd = [
        F.interpolate(torch.rand(1, 1, 8, 10, generator=g), size=(64, 80), mode="bilinear", align_corners=False)[0]
        for _ in range(2)
    ]
    return torch.stack([real[0], rnd[0]]), torch.stack([real[1], rnd[1]])


class Spy:
    """Counts the calls the model's hooks make into kernels.vq_lookup / kernels.token_edit."""

    def __init__(self, monkeypatch):
        import tokfuse_rt.kernels.token_edit as te
        import tokfuse_rt.kernels.vq_lookup as vq

        self.calls = {"vq_lookup": 0, "token_edit": 0}
        for mod, name in ((vq, "vq_lookup"), (te, "token_edit")):
            orig = getattr(mod, name)

            def wrapper(*a, _orig=orig, _name=name, **kw):
                self.calls[_name] += 1
                return _orig(*a, **kw)

            monkeypatch.setattr(mod, name, wrapper)


@pytest.mark.parametrize("k", [0, 4, 32])
def test_model_forward_triton_matches_torch(model, pair_batch, monkeypatch, k):
    from tokfuse_rt.model.quant import kernel_backend

    ir, vis = pair_batch
    with torch.no_grad(), kernel_backend("torch"):
        f_t, ids_t, base_t = model(ir, vis, k=k)
    dev_model = model if DEVICE == "cpu" else copy.deepcopy(model).to(DEVICE)
    spy = Spy(monkeypatch)
    with torch.no_grad(), kernel_backend("triton"):
        f_k, ids_k, base_k = dev_model(ir.to(DEVICE), vis.to(DEVICE), k=k)
    # 3 quantisations (ir tokens, visible tokens, mixer output) and one STE per forward, all on the kernels
    assert spy.calls == {"vq_lookup": 3, "token_edit": 1}
    assert ids_k.dtype == torch.int64 and torch.equal(ids_k.cpu(), ids_t)
    assert torch.equal(base_k.cpu(), base_t)
    torch.testing.assert_close(f_k.cpu(), f_t, rtol=0, atol=1e-6)


def test_ste_changes_codes_in_this_setup(model, pair_batch):
    """Guard for the test above: with this model STE really re-quantises (k = 4 differs from k = 0)."""
    from tokfuse_rt.model.quant import kernel_backend

    ir, vis = pair_batch
    with torch.no_grad(), kernel_backend("torch"):
        _, ids0, _ = model(ir, vis, k=0)
        _, ids4, _ = model(ir, vis, k=4)
    assert (ids0 != ids4).any()


def _engine_pair(engine, k):
    fused, ids = engine.fuse_with_tokens(str(ASSETS / "sample_ir.png"), str(ASSETS / "sample_vis.png"), k=k)
    return fused, ids


def test_engine_fuse_triton_matches_torch(model, tmp_path, monkeypatch):
    """Engine(path, kernels="triton") vs kernels="torch" on the real bundled sample pair (496x301, RGB
    visible -> RGB output), by path and as a numpy batch: identical token ids, identical uint8 images
    (tolerance 1 level)."""
    from PIL import Image

    from tokfuse_rt import Engine
    from tokfuse_rt.model import save_checkpoint

    path = save_checkpoint(model, tmp_path / "tokfuse_seed0.safetensors")
    ir = np.asarray(Image.open(ASSETS / "sample_ir.png").convert("L"))
    vis = np.asarray(Image.open(ASSETS / "sample_vis.png").convert("RGB"))
    pairs = [(ir, vis), (np.ascontiguousarray(ir[::-1]), np.ascontiguousarray(vis[::-1]))]
    with Engine(path, device="cpu", kernels="torch") as eng:
        f_t, ids_t = _engine_pair(eng, 4)
        batch_t = eng.fuse_batch(pairs, k=32)
    spy = Spy(monkeypatch)
    with Engine(path, device=DEVICE, kernels="triton") as eng:
        assert eng.info()["kernels"] == "triton"
        f_k, ids_k = _engine_pair(eng, 4)
        assert spy.calls == {"vq_lookup": 3, "token_edit": 1}
        batch_k = eng.fuse_batch(pairs, k=32)
    assert f_k.dtype == np.uint8 and f_k.shape == f_t.shape == (301, 496, 3)
    assert np.array_equal(ids_k, ids_t)
    assert int(np.abs(f_k.astype(np.int16) - f_t.astype(np.int16)).max()) <= 1
    for a, b in zip(batch_k, batch_t):
        assert int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= 1


def test_engine_default_model_triton_matches_torch():
    """The bundled default model, when it is present."""
    from tokfuse_rt import Engine, default_model_path

    if not Path(default_model_path()).exists():
        pytest.skip(f"bundled default model not built yet ({default_model_path()})")
    with Engine(device="cpu", kernels="torch") as eng:
        f_t, ids_t = _engine_pair(eng, None)
    with Engine(device=DEVICE, kernels="triton") as eng:
        f_k, ids_k = _engine_pair(eng, None)
    assert np.array_equal(ids_k, ids_t)
    assert int(np.abs(f_k.astype(np.int16) - f_t.astype(np.int16)).max()) <= 1
