"""Shared by the Ray benchmarks (bench_ray_batch.py, bench_serve.py): one local Ray instance per
module, the model they run (the bundled default exported to ONNX once), the device string."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def load_average() -> str:
    """1/5/15-minute load averages: how busy the machine was (timings here are shared-CPU timings)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def shared_data() -> Path:
    from workspace import find_shared_data

    d = find_shared_data(start=ROOT)
    if d is None:
        pytest.skip("shared/data not found beside the repository (set TOKFUSE_SHARED)")
    return d


def bench_model() -> Path:
    """``TOKFUSE_BENCH_MODEL`` if set, else the bundled default exported to ONNX (cached)."""
    from tokfuse_rt.serving.cluster import default_onnx

    env = os.environ.get("TOKFUSE_BENCH_MODEL")
    return Path(env) if env else default_onnx()


def start_ray(num_cpus: int | None = None) -> float:
    """Start a local Ray instance (all cores by default); returns the seconds it took."""
    ray = pytest.importorskip("ray", reason="needs the extra tokfuse_rt[ray]")
    t0 = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING")
    return time.perf_counter() - t0
