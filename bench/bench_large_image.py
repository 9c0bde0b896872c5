"""Peak memory and speed on a large pair: ``tokfuse fuse`` on an 8000×6000 pair, fresh process.

    pytest bench/bench_large_image.py --benchmark-only

The pair is the first MSRS test pair (640×480) upscaled bilinearly to 8000×6000 and written as PNG
(infrared gray, visible RGB). Each backend runs ``python -m tokfuse_rt fuse IR VIS -o OUT.png`` once in
a fresh process (decode, fuse, encode the PNG output) under ``/usr/bin/time``-style accounting: the
child's peak RSS (``ru_maxrss`` from ``os.wait4`` on the child) must stay <= 1.5 GiB. Backends that cannot run
the model in tiles skip (they would need ~320 B per pixel, ~14 GiB here). ``extra_info`` records the
peak, megapixels per second and the device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIZE = (8000, 6000)
LIMIT_MIB = 1536


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
    from PIL import Image
    from workspace import find_shared_data

    from tokfuse_rt.pairing import pair_set

    data = find_shared_data(start=ROOT)
    if data is None:
        pytest.skip("shared/data not found beside the repository (set TOKFUSE_SHARED)")
    first = pair_set(data / "test" / "MSRS").pairs[0]
    out = tmp_path_factory.mktemp("big")
    paths = []
    for sub, src, mode in (("ir", first.ir, "L"), ("vi", first.vis, "RGB")):
        with Image.open(src) as im:
            p = out / f"{sub}.png"
            im.convert(mode).resize(SIZE, Image.BILINEAR).save(p, compress_level=1)
            paths.append(p)
    return paths


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from tokfuse_rt.engine import DEFAULT_MODEL

    out = {"pytorch": DEFAULT_MODEL}
    try:
        from export.to_onnx import export_onnx

        p = tmp_path_factory.mktemp("onnx") / "default.onnx"
        export_onnx(DEFAULT_MODEL, p, verify=False)
        out["onnxruntime"] = p
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_fuse_8000x6000_peak_rss(benchmark, big_pair, models, backend, tmp_path):
    from tokfuse_rt import Engine

    if backend not in models:
        pytest.skip(f"{backend}: model not available (ONNX export needs onnx and onnxscript)")
    with Engine(models[backend], device="cpu") as eng:
        info = eng.info()
    if not info["limits"]["tiles"]:
        pytest.skip(f"the {backend} backend cannot run the model in tiles (it needs the token/render halves)")
    out = tmp_path / "fused.png"
    cmd = [
        sys.executable,
        "-m",
        "tokfuse_rt",
        "fuse",
        str(big_pair[0]),
        str(big_pair[1]),
        "-o",
        str(out),
        "--model",
        str(models[backend]),
        "--device",
        "cpu",
        "--threads",
        "2",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = {}

    def run():
        t = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        err = p.stderr.read()  # the child's peak RSS from wait4 (its own, not ours)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        result.update(s=time.perf_counter() - t, peak_kib=usage.ru_maxrss, rc=p.returncode, err=err)

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert result["rc"] == 0 and out.is_file(), result["err"][-2000:]
    peak = result["peak_kib"] / 1024
    mp = SIZE[0] * SIZE[1] / 1e6
    benchmark.extra_info.update(
        {
            "backend": backend,
            "device": info["device"],
            "size": f"{SIZE[0]}x{SIZE[1]}",
            "peak_rss_mib": round(peak, 1),
            "limit_mib": LIMIT_MIB,
            "seconds": round(result["s"], 1),
            "mp_per_s": round(mp / result["s"], 3),
            "tile_size": info["limits"]["tile_size"],
        }
    )
    print(f"\n{backend}: {SIZE[0]}x{SIZE[1]} in {result['s']:.0f} s, peak RSS {peak:.0f} MiB")
    assert peak <= LIMIT_MIB, f"peak RSS {peak:.0f} MiB > {LIMIT_MIB} MiB"
