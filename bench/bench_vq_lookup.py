"""Benchmarks of the fused Triton VQ lookup (kernels/vq_lookup.py) against its PyTorch reference chain.

Run:  .venv/bin/python -m pytest bench/bench_vq_lookup.py --benchmark-only

GPU only: on a machine without CUDA every benchmark skips, saying that CUDA is missing (the kernels run on
the CPU only in Triton's interpreter, which is a correctness tool, not something to time; for the same
reason the module skips when TRITON_INTERPRET=1 is set).

One pytest-benchmark group per shape - N queries in {32 (one image's tokens), 256 (8 pairs x 32 tokens),
4096, 65536} against the default 4096 x 12 l2-normalised codebook - with, side by side in the same run:

* ``ref``    ``vq_lookup_ref``: l2norm -> ``z_n @ C.T`` -> argmax -> gather, the model's torch chain;
* ``triton`` ``vq_lookup`` (autotuned on first call, outside the timing), ``normalize=True``.

``triton`` records in ``extra_info``: the device name, the median time of both (``triton.testing.do_bench``,
CUDA events, same run), the speedup, the effective bandwidth in GB/s (minimum traffic - z and the
codebook read once, ids and q written - over the median time) and GFLOP/s (2 N Kc d), and whether the ids
agree with the reference (any difference must be a float near-tie).
"""

import pytest
import torch

from triton_gpu import require_compiled_triton, timed

triton = require_compiled_triton("vq_lookup")

from tokfuse_rt.kernels.vq_lookup import effective_bytes, l2norm_ref, vq_lookup, vq_lookup_ref

KC, D = 4096, 12
NS = [32, 256, 4096, 65536]


def _data(n):
    g = torch.Generator(device="cuda").manual_seed(n)
    cb = l2norm_ref(torch.randn(KC, D, device="cuda", generator=g))
    z = torch.randn(n, D, device="cuda", generator=g)
    return z, cb


@pytest.mark.parametrize("n", NS)
def test_vq_lookup_ref(benchmark, n):
    benchmark.group = f"vq_lookup N={n} Kc={KC} d={D}"
    z, cb = _data(n)
    ms = triton.testing.do_bench(return_mode="median", fn=lambda: vq_lookup_ref(z, cb))
    benchmark.extra_info.update(device=torch.cuda.get_device_name(), impl="ref", median_ms=ms)
    timed(benchmark, lambda: vq_lookup_ref(z, cb))


@pytest.mark.parametrize("n", NS)
def test_vq_lookup_triton(benchmark, n):
    benchmark.group = f"vq_lookup N={n} Kc={KC} d={D}"
    z, cb = _data(n)
    ids, _ = vq_lookup(z, cb)  # autotune + compile, outside the timing
    ids_r, _ = vq_lookup_ref(z, cb)
    mismatches = int((ids != ids_r).sum())
    ms = triton.testing.do_bench(return_mode="median", fn=lambda: vq_lookup(z, cb))
    ref_ms = triton.testing.do_bench(return_mode="median", fn=lambda: vq_lookup_ref(z, cb))  # side by side, same run
    nbytes = effective_bytes(n, KC, D)
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name(),
        impl="triton",
        median_ms=ms,
        ref_median_ms=ref_ms,
        speedup_vs_ref=ref_ms / ms,
        effective_GBps=nbytes / (ms * 1e-3) / 1e9,
        GFLOPs=2.0 * n * KC * D / (ms * 1e-3) / 1e9,
        ids_mismatches_vs_ref=mismatches,
    )
    timed(benchmark, lambda: vq_lookup(z, cb))
