"""Every CPU backend side by side, interleaved: one ``Engine.fuse`` per backend in turn, round after
round, so a busy machine slows every backend alike (bench/bench_engine.py runs them one after the
other, which is fairer on a quiet machine and records memory). Each call is preceded by a 50 ms pause
(not timed): ONNX Runtime's and OpenMP's worker threads spin for a while after a run, which would
otherwise slow the next backend.

    python scripts/fast_path_bench.py FP32.onnx INT8.onnx [--model CKPT] [--rounds 9] [--threads 2]
        [--json out.json]

One real MSRS test pair (640×480, colour visible; resized to 1280×1024 for the second size), numpy
uint8 in -> uint8 out. Backends: PyTorch, native and native-int8 (the checkpoint), ONNX Runtime
float32 and int8 (the exported graphs of that checkpoint), ONNX Runtime float32 with the colour steps
in NumPy (``onnxruntime-numpy-colour``: the float32 path as it was before the C++ colour steps, for the
speed-up against it), and the public MMDRFuse student when
TOKFUSE_MMDRFUSE names a checkout of it (bench/peers.py; gray output). Reported per size and backend:
median ms, pairs/s and GFLOP/s of the render half's convolutions (bench_engine.render_gflop).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from PIL import Image
    from workspace import find_shared_data

    from bench.bench_engine import render_gflop
    from tokfuse_rt import Engine
    from tokfuse_rt.engine import DEFAULT_MODEL
    from tokfuse_rt.imageio import load_image
    from tokfuse_rt.pairing import pair_set

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32")
    ap.add_argument("int8")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    p = pair_set(find_shared_data(start=ROOT) / "test" / "MSRS").pairs[0]
    pair = (load_image(p.ir, "ir"), load_image(p.vis, "vis"))
    specs = {
        "pytorch": (a.model, "pytorch"),
        "native": (a.model, "native"),
        "native-int8": (a.model, "native-int8"),
        "onnxruntime": (a.fp32, "auto"),
        "onnxruntime-int8": (a.int8, "auto"),
    }
    engines = {k: Engine(m, device="cpu", threads=a.threads, backend=b) for k, (m, b) in specs.items()}
    cfg = engines["pytorch"].info()["config"]
    runners = {k: e.fuse for k, e in engines.items()}
    import tokfuse_rt.imageio as imageio

    def ort_numpy_colour(ir, vis):  # the float32 ONNX Runtime path with NumPy colour steps (as before C++ ones)
        ext, imageio._EXT = imageio.colour_ext(), None
        try:
            return engines["onnxruntime"].fuse(ir, vis)
        finally:
            imageio._EXT = ext

    runners["onnxruntime-numpy-colour"] = ort_numpy_colour
    sys.path.insert(0, str(ROOT / "bench"))
    from peers import mmdrfuse_dir, mmdrfuse_student

    if mmdrfuse_dir() is not None:
        runners["mmdrfuse-student"] = mmdrfuse_student(mmdrfuse_dir(), a.threads)
    out = {}
    for w, h in ((640, 480), (1280, 1024)):
        ir, vis = (np.asarray(Image.fromarray(x).resize((w, h), Image.BILINEAR)) for x in pair)
        times = {k: [] for k in runners}
        for f in runners.values():
            for _ in range(2):
                f(ir, vis)
        for _ in range(a.rounds):
            for k, f in runners.items():
                time.sleep(0.05)  # let the previous backend's worker threads stop spinning (ORT, OpenMP)
                t = time.perf_counter()
                f(ir, vis)
                times[k].append(time.perf_counter() - t)
        g = render_gflop(cfg, h, w)
        res = {}
        for k, ts in times.items():
            med = float(np.median(ts))
            res[k] = {"ms": round(1e3 * med, 1), "pairs_per_s": round(1 / med, 2)}
            res[k]["gflop_per_s"] = round(g / med, 1) if k != "mmdrfuse-student" else None  # a peer: other work
        base, before = res["onnxruntime"]["ms"], res["onnxruntime-numpy-colour"]["ms"]
        for k, r in res.items():
            r["speedup_vs_ort_fp32"] = round(base / r["ms"], 2)
            r["speedup_vs_ort_fp32_numpy_colour"] = round(before / r["ms"], 2)
            print(
                f"{w}x{h} {k:17s} {r['ms']:8.1f} ms  {r['pairs_per_s']:6.2f} pairs/s  "
                f"{r['gflop_per_s'] or float('nan'):6.1f} GFLOP/s  "
                f"x{r['speedup_vs_ort_fp32']:.2f} vs ORT fp32, "
                f"x{r['speedup_vs_ort_fp32_numpy_colour']:.2f} vs ORT fp32 with NumPy colour"
            )
        out[f"{w}x{h}"] = res
    for e in engines.values():
        e.close()
    if a.json:
        Path(a.json).write_text(json.dumps({"rounds": a.rounds, "threads": a.threads, "results": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
