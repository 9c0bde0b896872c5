"""Benchmarks of the codebook nearest-neighbour search.

Run:  .venv/bin/python -m pytest bench/bench_nn_search.py --benchmark-only

One pytest-benchmark group per shape, N in {32, 256, 2048, 16384}, K = 4096, D = 12, inner
product, l2-normalised random rows (the quantiser's setting), 2 threads everywhere, measured side
by side in the same run:

* ``torch``  the baseline from ``tokfuse_rt.nn_search.nn_search_ref``: ``(q @ C.T).argmax(1)``;
* ``faiss``  ``faiss.IndexFlatIP.search(q, 1)`` (skipped cleanly when faiss is not importable);
* ``ours``   ``tokfuse_rt.nn_search.nn_search`` on torch tensors (-> ``tokfuse_rt._C.nn_search``, the
  AVX2/FMA + OpenMP kernel), i.e. what the quantiser calls, Python overhead included.

``ours`` records in ``extra_info``: GFLOP/s (2 N K D flops / median time; also from the min),
the fraction of the CPU's FMA peak, the device name from /proc/cpuinfo, threads, the speedups vs
torch and faiss (ratio of medians and ratio of mins of this run) and whether the speed targets
(>= 5x torch, >= 10x faiss at N = 256) are met. Peak = cores x 2 FMA units x 8 fp32 lanes x 2 flops
x GHz, with GHz the "cpu MHz" of /proc/cpuinfo. Assumption: that is the nominal clock (2.45 GHz
on the project's VM); under sustained FMA load the cores run at their boost clock, so the single-
core FMA throughput measured by ``_C.fma_peak_gflops`` (independent FMA chains) is recorded too
and the fraction of that measured peak is reported next to the nominal one.

The ids are checked against the torch baseline in every group: any difference must be a float
near-tie (float64 scores of the two codes within 1e-6).

Set TOKFUSE_BENCH_ASSERT=1 to fail when the N = 256 targets are missed (off by default: this CPU
is shared, and a loaded machine is not a broken kernel).
"""

from __future__ import annotations

import os
import platform

import numpy as np
import pytest
import torch

pytest.importorskip("pytest_benchmark")

from tokfuse_rt import nn_search as tnn

try:
    import faiss  # type: ignore
except ImportError:  # pragma: no cover
    faiss = None

THREADS = 2
K, D = 4096, 12
SHAPES = [(32, K, D), (256, K, D), (2048, K, D), (16384, K, D)]
IMPLS = ["torch", "faiss", "ours"]  # baselines first, so "ours" can record the ratios
CASES = [(s, impl) for s in SHAPES for impl in IMPLS]
_RESULTS: dict = {}


def _cpuinfo(key: str):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


CPU_NAME = _cpuinfo("model name") or platform.processor() or platform.machine()
_mhz = _cpuinfo("cpu mhz")
GHZ = float(_mhz) / 1000.0 if _mhz else None
CORES = os.cpu_count() or 1
PEAK_NOMINAL = CORES * 2 * 8 * 2 * GHZ if GHZ else None  # GFLOP/s, fp32 FMA
DEVICE = f"cpu ({CPU_NAME}, {CORES} cores, {GHZ:.3f} GHz nominal)" if GHZ else f"cpu ({CPU_NAME})"


@pytest.fixture(scope="module")
def measured_core_peak():
    if not tnn.HAVE_EXT:
        return None
    return max(tnn._C.fma_peak_gflops(0.05) for _ in range(3)) or None


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    if faiss is not None:
        faiss.omp_set_num_threads(THREADS)
    yield
    torch.set_num_threads(old)


def _data(N):
    g = torch.Generator().manual_seed(N)
    q = torch.nn.functional.normalize(torch.randn(N, D, generator=g), dim=1).contiguous()
    C = torch.nn.functional.normalize(torch.randn(K, D, generator=g), dim=1).contiguous()
    return q, C


def _check_ids(q, C, ids, who):
    ref, _ = tnn.nn_search_ref(q, C, "ip")
    ids = torch.as_tensor(np.asarray(ids)).reshape(-1).long()
    diff = (ids != ref).nonzero().flatten()
    if diff.numel():
        q64, C64 = q.double(), C.double()
        gap = ((q64[diff] * C64[ref[diff]]).sum(1) - (q64[diff] * C64[ids[diff]]).sum(1)).abs()
        assert float(gap.max()) <= 1e-6, f"{who}: ids differ from torch beyond float near-ties"
    return int(diff.numel())


@pytest.mark.benchmark(warmup=True, warmup_iterations=3)
@pytest.mark.parametrize("shape,impl", CASES, ids=[f"N{s[0]}-{i}" for s, i in CASES])
def test_nn_search(benchmark, request, shape, impl, measured_core_peak):
    N, K_, D_ = shape
    benchmark.group = f"nn_search N={N} K={K_} D={D_} ip, {THREADS} threads"
    q, C = _data(N)
    info = benchmark.extra_info
    info.update(device=DEVICE, threads=THREADS, N=N, K=K_, D=D_, metric="ip", impl=impl)
    if impl == "torch":
        ids = benchmark(lambda: tnn.nn_search_ref(q, C, "ip")[0])
    elif impl == "faiss":
        if faiss is None:
            pytest.skip("faiss is not importable (pip install faiss-cpu)")
        index = faiss.IndexFlatIP(D_)
        index.add(C.numpy())
        qn = q.numpy()
        ids = benchmark(lambda: index.search(qn, 1)[1])
        info["faiss_version"] = getattr(faiss, "__version__", "?")
    else:
        if not tnn.HAVE_EXT:
            pytest.skip("tokfuse_rt._C is not built (python setup.py build_ext --inplace)")
        ids = benchmark(lambda: tnn.nn_search(q, C, "ip", num_threads=THREADS)[0])
        info["build"] = {k: v for k, v in tnn._C.build_info().items() if k in ("default_impl", "openmp")}
    info["id_mismatches_vs_torch_near_ties"] = _check_ids(q, C, ids, impl)

    st = getattr(benchmark, "stats", None)
    if st is None:  # --benchmark-disable
        return
    med, mn = st.stats.median, st.stats.min
    _RESULTS[(shape, impl)] = (med, mn)
    flops = 2.0 * N * K_ * D_
    info["gflops"] = round(flops / med / 1e9, 2)
    info["gflops_best"] = round(flops / mn / 1e9, 2)
    if impl != "ours":
        return
    if PEAK_NOMINAL:
        info["peak_gflops_nominal"] = round(PEAK_NOMINAL, 1)
        info["peak_assumption"] = (
            f"{CORES} cores x 2 FMA units x 8 fp32 lanes x 2 flops x {GHZ:.3f} GHz (nominal cpu MHz of /proc/cpuinfo)"
        )
        info["fraction_of_peak_nominal"] = round(flops / med / 1e9 / PEAK_NOMINAL, 3)
    if measured_core_peak:
        peak_m = measured_core_peak * THREADS
        info["peak_gflops_measured"] = round(peak_m, 1)
        info["fraction_of_peak_measured"] = round(flops / med / 1e9 / peak_m, 3)
    lines = []
    for base, target in (("torch", 5.0), ("faiss", 10.0)):
        if (shape, base) not in _RESULTS:
            continue
        bmed, bmin = _RESULTS[(shape, base)]
        info[f"speedup_vs_{base}_median"] = round(bmed / med, 2)
        info[f"speedup_vs_{base}_min"] = round(bmin / mn, 2)
        if N == 256:
            info[f"target_{target:g}x_{base}_met"] = bmed / med >= target
        lines.append(f"{base} {bmed / med:.1f}x (median) / {bmin / mn:.1f}x (min)")
    tr = request.config.pluginmanager.getplugin("terminalreporter")
    msg = f"nn_search N={N}: ours {med * 1e6:.0f} us median, {info['gflops']} GFLOP/s; speedup " + ", ".join(lines)
    if tr is not None:
        tr.write_line("")
        tr.write_line(msg)
    if N == 256 and os.environ.get("TOKFUSE_BENCH_ASSERT"):
        assert info.get("speedup_vs_torch_median", 99) >= 5.0, msg
        assert info.get("speedup_vs_faiss_median", 99) >= 10.0, msg
