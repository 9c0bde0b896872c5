"""scripts/tokenizer_recon.py: PSNR/SSIM of the tokenizer round trip, checked against direct numpy."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("tokenizer_recon", ROOT / "scripts" / "tokenizer_recon.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recon_scores_match_a_direct_computation(tiny_ckpt):
    from tokfuse_rt.metrics.ssim import ssim_pair
    from tokfuse_rt.model.checkpoint import load_checkpoint

    mod = _load()
    model, _ = load_checkpoint(tiny_ckpt)
    rng = np.random.default_rng(0)
    imgs = [rng.random((h, w), dtype=np.float32) for h, w in [(37, 53), (32, 32), (61, 17)]]
    got = mod.recon_scores(model, imgs)
    psnr, ss = [], []
    with torch.no_grad():
        for y in imgs:
            x = model.to_token_input(torch.from_numpy(y)[None, None])
            r = model.decoder(model.tokenize(x)[2]).clamp(0, 1)
            a, b = x[0, 0].double().numpy(), r[0, 0].double().numpy()
            psnr.append(-10 * np.log10(np.mean((a - b) ** 2)))
            ss.append(ssim_pair(b, a, data_range=1.0))
    assert got["n"] == 3
    assert got["PSNR"] == pytest.approx(np.mean(psnr), rel=1e-9)
    assert got["SSIM"] == pytest.approx(np.mean(ss), rel=1e-9)
    # a perfect reconstruction would have SSIM 1; an untrained tokenizer is far from it
    assert got["SSIM"] < 0.9
