"""Shared set-up of the Triton kernel benchmarks (bench_vq_lookup.py, bench_token_edit.py): skip the
whole module unless compiled Triton kernels can run on a CUDA GPU, and time a call with a sync."""

import pytest
import torch

from tokfuse_rt import kernels


def require_compiled_triton(op: str):
    """Skip the calling benchmark module (at import) without CUDA, under TRITON_INTERPRET=1, or without
    pytest-benchmark / triton. Returns the triton module."""
    if not torch.cuda.is_available():
        pytest.skip(
            f"CUDA is missing (torch.cuda.is_available() is False): the Triton {op} benchmarks need a CUDA GPU",
            allow_module_level=True,
        )
    if kernels.interpreter_enabled():
        pytest.skip(
            "TRITON_INTERPRET=1 is set: the benchmarks time the compiled kernels on a CUDA GPU, not the "
            "CPU interpreter",
            allow_module_level=True,
        )
    pytest.importorskip("pytest_benchmark")
    return pytest.importorskip("triton", reason="triton is missing: the Triton kernel benchmarks need it")


def timed(benchmark, fn):
    """pytest-benchmark ``fn`` (30 rounds × 5 iterations after 3 warm-up rounds), synchronising CUDA."""

    def run():
        fn()
        torch.cuda.synchronize()

    run()
    benchmark.pedantic(run, rounds=30, iterations=5, warmup_rounds=3)
