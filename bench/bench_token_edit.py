"""Benchmarks of the fused Triton Selective Token Editing kernel (kernels/token_edit.py) against its
PyTorch reference chain.

Run:  .venv/bin/python -m pytest bench/bench_token_edit.py --benchmark-only

GPU only: on a machine without CUDA every benchmark skips, saying that CUDA is missing (the kernel runs on
the CPU only in Triton's interpreter, a correctness tool; the module also skips when TRITON_INTERPRET=1).

One pytest-benchmark group per shape (B sequences x K tokens, k edited, default d = 12, H = 64, 4096-entry
codebook): (1, 32, 4) one pair at the default k, (16, 32, 4), (256, 32, 4) and (64, 128, 32), with side
by side in the same run:

* ``ref``    ``token_edit_weights_ref``: the model's dense torch chain (top-k mask, edit MLP on every token,
             l2norm, re-quantise every token, ``where``);
* ``triton`` ``token_edit_weights`` (autotuned on first call, outside the timing).

``triton`` records in ``extra_info``: the device name, both median times (``triton.testing.do_bench``,
CUDA events, same run), the speedup, the effective bandwidth in GB/s (minimum traffic: z, ids, scores, ctx,
the MLP weights and the codebook read once; z_out and ids_out written) and whether ids and vectors agree
with the reference (a difference can only be a float near-tie).
"""

import pytest
import torch

from triton_gpu import require_compiled_triton, timed

triton = require_compiled_triton("token_edit")

from tokfuse_rt.kernels.token_edit import token_edit_weights, token_edit_weights_ref
from tokfuse_rt.kernels.vq_lookup import l2norm_ref

KC, D, H = 4096, 12, 64
SHAPES = [(1, 32, 4), (16, 32, 4), (256, 32, 4), (64, 128, 32)]


def _data(b, n):
    g = torch.Generator(device="cuda").manual_seed(b * 1000 + n)
    dev = "cuda"
    cb = l2norm_ref(torch.randn(KC, D, device=dev, generator=g))
    ids = torch.randint(0, KC, (b, n), device=dev, generator=g)
    z = cb[ids]
    s = torch.randn(b, n, device=dev, generator=g)
    ctx = torch.randn(b, 2 * D, device=dev, generator=g) * 0.3
    w1 = torch.randn(H, 3 * D, device=dev, generator=g) / (3 * D) ** 0.5
    b1 = torch.randn(H, device=dev, generator=g) * 0.1
    w2 = torch.randn(D, H, device=dev, generator=g) / H**0.5
    b2 = torch.randn(D, device=dev, generator=g) * 0.1
    return z, ids, s, ctx, w1, b1, w2, b2, cb


def _effective_bytes(b, n):
    read = b * n * (D * 4 + 8 + 4) + b * 2 * D * 4 + (H * 3 * D + H + D * H + D) * 4 + KC * D * 4
    write = b * n * (D * 4 + 8)
    return read + write


def _group(b, n, k):
    return f"token_edit B={b} K={n} k={k} Kc={KC} d={D}"


@pytest.mark.parametrize("b,n,k", SHAPES)
def test_token_edit_ref(benchmark, b, n, k):
    benchmark.group = _group(b, n, k)
    args = _data(b, n)
    ms = triton.testing.do_bench(return_mode="median", fn=lambda: token_edit_weights_ref(*args, k))
    benchmark.extra_info.update(device=torch.cuda.get_device_name(), impl="ref", median_ms=ms)
    timed(benchmark, lambda: token_edit_weights_ref(*args, k))


@pytest.mark.parametrize("b,n,k", SHAPES)
def test_token_edit_triton(benchmark, b, n, k):
    benchmark.group = _group(b, n, k)
    args = _data(b, n)
    z_k, ids_k = token_edit_weights(*args, k)  # autotune + compile, outside the timing
    z_r, ids_r = token_edit_weights_ref(*args, k)
    ms = triton.testing.do_bench(return_mode="median", fn=lambda: token_edit_weights(*args, k))
    ref_ms = triton.testing.do_bench(
        return_mode="median", fn=lambda: token_edit_weights_ref(*args, k)
    )  # side by side, same run
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name(),
        impl="triton",
        median_ms=ms,
        ref_median_ms=ref_ms,
        speedup_vs_ref=ref_ms / ms,
        effective_GBps=_effective_bytes(b, n) / (ms * 1e-3) / 1e9,
        ids_mismatches_vs_ref=int((ids_k != ids_r).sum()),
        vectors_equal_ref=bool(torch.equal(z_k, z_r)),
    )
    timed(benchmark, lambda: token_edit_weights(*args, k))
