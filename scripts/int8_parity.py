"""int8 vs float32 parity of a model on real test pairs.

    python scripts/int8_parity.py FP32.onnx INT8.onnx [--sets TNO RoadScene MSRS] [--limit N]
        [--threads 2] [--json out.json]
    python scripts/int8_parity.py CKPT CKPT --backends native native-int8 ...   (the native int8 render)

Each pair of ``shared/data/test/<set>`` is fused by both models through ``Engine`` (uint8 output, in
colour where the visible image is colour); reported per set: PSNR of the int8 result against the
float32 result (peak 255; median and worst pair) and whether the K token ids are identical for
every pair. Exit status 1 when a bound of ``export.to_onnx --int8`` fails (median < 40 dB, worst <
35 dB, ids differing).
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

MEDIAN_DB, WORST_DB = 40.0, 35.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def parity(
    fp32, int8, set_dir: Path, limit: int | None = None, threads: int | None = None, backends=("auto", "auto")
) -> dict:
    """{pairs, median_db, worst_db, worst_pair, ids_identical} of the two models on one set folder."""
    from tokfuse_rt import Engine
    from tokfuse_rt.pairing import pair_set

    pairs = list(pair_set(set_dir))[:limit]
    dbs, ids_ok = [], True
    ba, bb = backends
    with (
        Engine(fp32, device="cpu", threads=threads, backend=ba) as a,
        Engine(int8, device="cpu", threads=threads, backend=bb) as b,
    ):
        for p in pairs:
            fa, ia = a.fuse_with_tokens(p.ir, p.vis)
            fb, ib = b.fuse_with_tokens(p.ir, p.vis)
            ids_ok &= bool(np.array_equal(ia, ib))
            dbs.append(psnr(fa, fb))
    i = int(np.argmin(dbs))
    return {
        "pairs": len(pairs),
        "median_db": round(float(np.median(dbs)), 2),
        "worst_db": round(float(dbs[i]), 2),
        "worst_pair": pairs[i].name,
        "ids_identical": ids_ok,
    }


def main(argv=None) -> int:
    from workspace import find_shared_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32")
    ap.add_argument("int8")
    ap.add_argument("--sets", nargs="+", default=["TNO", "RoadScene", "MSRS"])
    ap.add_argument("--limit", type=int, default=None, help="first N pairs of each set")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--backends", nargs=2, default=["auto", "auto"], metavar=("FP32", "INT8"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    data = find_shared_data(start=ROOT)
    if data is None:
        print("shared/data not found (set TOKFUSE_SHARED)", file=sys.stderr)
        return 2
    out, ok = {}, True
    for s in a.sets:
        t = time.perf_counter()
        r = parity(a.fp32, a.int8, data / "test" / s, a.limit, a.threads, tuple(a.backends))
        out[s] = r
        good = r["median_db"] >= MEDIAN_DB and r["worst_db"] >= WORST_DB and r["ids_identical"]
        ok &= good
        print(
            f"{s:10s} {r['pairs']:3d} pairs  median {r['median_db']:6.2f} dB  worst {r['worst_db']:6.2f} dB "
            f"({r['worst_pair']})  ids {'identical' if r['ids_identical'] else 'DIFFER'}  "
            f"{'ok' if good else 'FAIL'}  ({time.perf_counter() - t:.0f} s)"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
