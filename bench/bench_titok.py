"""Cost of the token pathway on the official TiTok tokenizers, at their real shapes (random weights).

    pytest bench/bench_titok.py --benchmark-only

One pair (640×480 luminance, both inputs resized to 256²): ``TokFuse.token_pathway`` = TiTok encoder
twice (infrared, visible), nearest-code search, token mixer + STE, TiTok decoder + MaskGIT-VQGAN pixel
decoder once (the base map). The weights are random (the published files are not needed for speed);
the shapes, hence the work, are those of the released L-32, B-64 and S-128 tokenizers.

``extra_info``: parameters (tokenizer, whole model), GFLOP per pair counted by
``torch.utils.flop_counter.FlopCounterMode`` (2 FLOP per multiply-add of matmuls and convolutions;
norms, softmax and activations are not counted), ms per pair, and an *estimate* for one NVIDIA H200
from the FLOP count and the weight bytes (not a measurement):

  * ``h200_ms_bf16_peak``: FLOP / 989 TFLOP/s (dense BF16 tensor-core peak, H200 SXM) - a lower bound;
  * ``h200_ms_bf16_40pct``: the same at 40 % of peak, typical of ViT inference at large batch;
  * ``h200_ms_weights_bs1``: batch 1 reads every weight once: BF16 bytes / 4.8 TB/s (HBM3e) - the
    floor of one pair's latency when the model is not batched.

``TOKFUSE_BENCH_ROUNDS`` sets the rounds (default 3; one round of L-32 takes tens of seconds here).
"""

from __future__ import annotations

import os

import pytest

ROUNDS = int(os.environ.get("TOKFUSE_BENCH_ROUNDS", "3"))
THREADS = 2
H200_BF16_FLOPS = 989e12
H200_HBM_BYTES_PER_S = 4.8e12
MFU = 0.40


def _model(name: str):
    import torch

    from tokfuse_rt.model import TokFuse
    from tokfuse_rt.model.config import tokfuse_config
    from tokfuse_rt.model.titok import TiTokConfig

    torch.manual_seed(0)
    return TokFuse(tokfuse_config(TiTokConfig.preset(name))).eval()


def _flops(model, ir, vis) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model.token_pathway(ir, vis)
    return int(fc.get_total_flops())


@pytest.mark.parametrize("name", ["S-128", "B-64", "L-32"])
def test_titok_token_pathway_cpu(benchmark, name):
    import torch

    from tokfuse_rt.model.quant import kernel_backend, resolve_backend

    torch.set_num_threads(THREADS)
    model = _model(name)
    g = torch.Generator().manual_seed(0)
    ir, vis = torch.rand(1, 1, 480, 640, generator=g), torch.rand(1, 1, 480, 640, generator=g)
    flops = _flops(model, ir, vis)
    tok_params = sum(p.numel() for p in model.tokenizer.parameters())
    params = sum(p.numel() for p in model.parameters())

    def run():
        with torch.inference_mode(), kernel_backend("auto"):
            return model.token_pathway(ir, vis)

    base, ids = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert base.shape == (1, 1, 256, 256) and ids.shape == (1, model.cfg.num_tokens)
    ms = benchmark.stats.stats.median * 1e3
    benchmark.group = "titok-token-pathway"
    benchmark.extra_info.update(
        {
            "model": f"TiTok-{name}",
            "device": f"cpu ({THREADS} threads)",
            "search": resolve_backend(torch.device("cpu")),
            "tokenizer_params": tok_params,
            "params": params,
            "gflop_per_pair": round(flops / 1e9, 1),
            "ms_per_pair": round(ms, 1),
            "pairs_per_s": round(1e3 / ms, 3),
            "cpu_gflop_per_s": round(flops / 1e9 / (ms / 1e3), 1),
            "h200_ms_bf16_peak": round(flops / H200_BF16_FLOPS * 1e3, 3),
            "h200_ms_bf16_40pct": round(flops / (MFU * H200_BF16_FLOPS) * 1e3, 3),
            "h200_ms_weights_bs1": round(2 * tok_params / H200_HBM_BYTES_PER_S * 1e3, 3),
        }
    )
