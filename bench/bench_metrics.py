"""Benchmarks for tokfuse_rt.metrics on a real 640x480 MSRS test triplet (CPU).

Run:  .venv/bin/python -m pytest bench/bench_metrics.py --benchmark-only

* ``test_bench_all_metrics``: all 13 metrics (+ SSIM at both data ranges) for one triplet,
  ``extra_info["ms_per_triplet"]`` = median.
* ``test_bench_vif_fast`` / ``test_bench_vif_baseline_convolve2d``: VIF alone, this package's
  separable implementation vs the reference-style ``scipy.signal.convolve2d`` implementation, side by
  side in the same run; the fast one records the baseline time and the speedup in ``extra_info``.

The triplet is MSRS test pair 00004N (ir, vi) with the FCDFusion output stored in
``shared/data/metric_fixtures`` as the fused image.  Skips cleanly without scipy or shared data.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("pytest_benchmark")

import tokfuse_rt.metrics as M


def _shared_data_dir():
    from workspace import find_shared_data

    return find_shared_data("test/MSRS", start=Path(__file__))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


DEVICE = f"cpu ({_cpu_name()}, {os.cpu_count()} logical cores)"
DATA = _shared_data_dir()
STEM = "00004N"


@pytest.fixture(scope="module")
def triplet():
    if DATA is None:
        pytest.skip("shared/data not found (set TOKFUSE_SHARED)")
    fused = DATA / "metric_fixtures" / f"MSRS12_{STEM}_fcdfusion.png"
    if not fused.is_file():
        fused = DATA / "test" / "MSRS" / "vi" / f"{STEM}.png"  # fall back to vis as "fused"
    F = M.read_gray(fused)
    A = M.read_gray(DATA / "test" / "MSRS" / "ir" / f"{STEM}.png")
    B = M.read_gray(DATA / "test" / "MSRS" / "vi" / f"{STEM}.png")
    assert F.shape == (480, 640)
    return F, A, B


def vifp_convolve2d(ref, dist):
    """Reference-style VIFP: full 2-D ``scipy.signal.convolve2d(..., 'valid')`` at every step
    (what MMIF-CDDFuse's ``Evaluator.compare_viff`` does); the baseline for the speedup."""
    from scipy.signal import convolve2d

    sigma_nsq, eps = 2.0, 1e-10
    num = den = 0.0
    ref = np.asarray(ref, np.float64)
    dist = np.asarray(dist, np.float64)
    for scale in range(1, 5):
        N = 2 ** (4 - scale + 1) + 1
        sd = N / 5.0
        m = (N - 1) / 2.0
        y, x = np.ogrid[-m : m + 1, -m : m + 1]
        h = np.exp(-(x * x + y * y) / (2.0 * sd * sd))
        h[h < np.finfo(h.dtype).eps * h.max()] = 0
        win = h / h.sum()
        if scale > 1:
            ref = convolve2d(ref, np.rot90(win, 2), mode="valid")[::2, ::2]
            dist = convolve2d(dist, np.rot90(win, 2), mode="valid")[::2, ::2]
        mu1 = convolve2d(ref, np.rot90(win, 2), mode="valid")
        mu2 = convolve2d(dist, np.rot90(win, 2), mode="valid")
        s1 = convolve2d(ref * ref, np.rot90(win, 2), mode="valid") - mu1 * mu1
        s2 = convolve2d(dist * dist, np.rot90(win, 2), mode="valid") - mu2 * mu2
        s12 = convolve2d(ref * dist, np.rot90(win, 2), mode="valid") - mu1 * mu2
        s1[s1 < 0] = 0
        s2[s2 < 0] = 0
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        g[s1 < eps] = 0
        sv[s1 < eps] = s2[s1 < eps]
        s1[s1 < eps] = 0
        g[s2 < eps] = 0
        sv[s2 < eps] = 0
        sv[g < 0] = s2[g < 0]
        g[g < 0] = 0
        sv[sv <= eps] = eps
        num += np.sum(np.log10(1 + g * g * s1 / (sv + sigma_nsq)))
        den += np.sum(np.log10(1 + s1 / sigma_nsq))
    v = num / den
    return 1.0 if np.isnan(v) else float(v)


def vif_convolve2d(F, A, B):
    return vifp_convolve2d(A, F) + vifp_convolve2d(B, F)


@pytest.fixture(scope="module")
def baseline_vif(triplet):
    """One timed run of the baseline (about 2-3 s on the project CPU)."""
    t0 = time.perf_counter()
    value = vif_convolve2d(*triplet)
    return value, (time.perf_counter() - t0) * 1e3


def _median_ms(benchmark) -> float:
    return benchmark.stats.stats.median * 1e3


def test_bench_all_metrics(benchmark, triplet):
    F, A, B = triplet
    M.evaluate(F, A, B)  # warm-up: lazy scipy imports
    r = benchmark(M.evaluate, F, A, B)
    assert set(M.METRICS) <= set(r)
    ms = _median_ms(benchmark)
    benchmark.extra_info.update(
        {
            "device": DEVICE,
            "image": f"MSRS {STEM} 640x480",
            "metrics": len(M.METRICS),
            "ms_per_triplet": round(ms, 2),
            "triplets_per_s": round(1e3 / ms, 2),
            "target_ms": 500,
        }
    )


def test_bench_vif_fast(benchmark, triplet, baseline_vif):
    F, A, B = triplet
    value = benchmark(M.vif, F, A, B)
    base_value, base_ms = baseline_vif
    assert abs(value - base_value) <= 1e-9 * abs(base_value)
    ms = _median_ms(benchmark)
    benchmark.extra_info.update(
        {
            "device": DEVICE,
            "ms_per_triplet": round(ms, 2),
            "baseline_convolve2d_ms": round(base_ms, 1),
            "speedup_vs_convolve2d": round(base_ms / ms, 1),
        }
    )


def test_bench_vif_baseline_convolve2d(benchmark, triplet):
    F, A, B = triplet
    value = benchmark.pedantic(vif_convolve2d, args=(F, A, B), rounds=2, iterations=1)
    assert abs(value - M.vif(F, A, B)) <= 1e-9 * abs(value)
    benchmark.extra_info.update(
        {
            "device": DEVICE,
            "ms_per_triplet": round(_median_ms(benchmark), 1),
            "note": "reference-style scipy.signal.convolve2d VIF (MMIF-CDDFuse Evaluator.VIFF)",
        }
    )


def test_bench_read_and_evaluate(benchmark, triplet):
    """Per-pair cost including decoding the three PNGs (what an eval run pays per image)."""
    if DATA is None:
        pytest.skip("shared/data not found")
    paths = (
        DATA / "metric_fixtures" / f"MSRS12_{STEM}_fcdfusion.png",
        DATA / "test" / "MSRS" / "ir" / f"{STEM}.png",
        DATA / "test" / "MSRS" / "vi" / f"{STEM}.png",
    )

    def run():
        return M.evaluate(*(M.read_gray(p) for p in paths))

    benchmark(run)
    benchmark.extra_info.update({"device": DEVICE, "ms_per_triplet": round(_median_ms(benchmark), 2)})
