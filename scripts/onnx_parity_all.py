"""ONNX Runtime vs PyTorch parity on every pair of shared/data/test.

For each pair: ``Engine(ckpt).fuse_with_tokens`` vs ``Engine(model.onnx).fuse_with_tokens`` — the final
uint8 images (max |Δ| must be <= 1 grey level) and the K shared token ids (must be identical).
Prints one row per set and exits non-zero if any pair fails.

    python scripts/onnx_parity_all.py [--ckpt CKPT] [--onnx model.onnx] [--data ../shared/data] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS = ("TNO", "RoadScene", "MSRS", "Harvard_MRI_CT", "Harvard_MRI_PET", "Harvard_MRI_SPECT")


def pairs_of(root: Path, name: str):
    from tokfuse_rt.pairing import pair_set

    for p in pair_set(root / "test" / name):
        yield p.name, p.ir, p.vis


def main(argv=None) -> int:
    from workspace import find_shared_data

    from tokfuse_rt import Engine
    from tokfuse_rt.engine import DEFAULT_MODEL

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(DEFAULT_MODEL), help="PyTorch checkpoint (default: the bundled model)")
    ap.add_argument("--onnx", default=None, help="ONNX model to compare (default: export CKPT to a temp dir)")
    ap.add_argument("--data", default=None, help="shared/data folder (default: found beside the repo)")
    ap.add_argument("--sets", nargs="*", default=list(SETS), help="test sets to run (default: all)")
    ap.add_argument("--k", type=int, default=None, help="STE k (default: the model's)")
    ap.add_argument("--threads", type=int, default=2, help="threads per backend (default 2)")
    ap.add_argument("--json", default=None, help="write per-pair results here")
    a = ap.parse_args(argv)

    data = Path(a.data) if a.data else find_shared_data()
    if data is None or not (data / "test").is_dir():
        print("onnx_parity_all: error: shared/data/test not found (use --data or TOKFUSE_SHARED)", file=sys.stderr)
        return 2
    ckpt = Path(a.ckpt)
    if not ckpt.is_file():
        print(f"onnx_parity_all: error: checkpoint {ckpt} not found", file=sys.stderr)
        return 2
    tmp = None
    if a.onnx:
        onnx_path = Path(a.onnx)
    else:
        from export.to_onnx import export_onnx

        tmp = tempfile.TemporaryDirectory()
        onnx_path = Path(tmp.name) / (ckpt.stem + ".onnx")
        t0 = time.perf_counter()
        s = export_onnx(ckpt, onnx_path, verify=False)
        print(f"exported {ckpt.name} -> ONNX opset {s['opset']} ({s['exporter']}) in {time.perf_counter() - t0:.1f} s")

    rows, per_pair, failures = [], [], []
    with Engine(ckpt, device="cpu", threads=a.threads) as pt, Engine(onnx_path, device="cpu", threads=a.threads) as ox:
        print(
            f"PyTorch backend: {pt.info().get('kernels', '?')} kernels; ONNX Runtime {ox.info()['onnxruntime']}, "
            f"{a.threads} threads each; k = {a.k if a.k is not None else ox.info()['config']['default_k']}"
        )
        for name in a.sets:
            n = worst = ids_bad = px_diff = px_total = 0
            t_pt = t_ox = 0.0
            sizes = set()
            for fname, ir, vis in pairs_of(data, name):
                t0 = time.perf_counter()
                f1, i1 = pt.fuse_with_tokens(ir, vis, a.k)
                t1 = time.perf_counter()
                f2, i2 = ox.fuse_with_tokens(ir, vis, a.k)
                t2 = time.perf_counter()
                t_pt += t1 - t0
                t_ox += t2 - t1
                d = np.abs(f1.astype(np.int16) - f2.astype(np.int16))
                md, same = int(d.max()), bool(np.array_equal(i1, i2))
                n += 1
                worst = max(worst, md)
                ids_bad += not same
                px_diff += int((d > 0).sum())
                px_total += d.size
                sizes.add(f"{f1.shape[1]}x{f1.shape[0]}")
                per_pair.append(
                    {
                        "set": name,
                        "pair": fname,
                        "size": [f1.shape[1], f1.shape[0]],
                        "max_abs_diff": md,
                        "ids_equal": same,
                        "ms_pytorch": 1e3 * (t1 - t0),
                        "ms_onnxruntime": 1e3 * (t2 - t1),
                    }
                )
                if md > 1 or not same:
                    failures.append(f"{name}/{fname}: max|Δ|={md}, ids {'equal' if same else 'differ'}")
            if n == 0:
                continue
            size_txt = next(iter(sizes)) if len(sizes) == 1 else f"{len(sizes)} sizes"
            rows.append(
                (
                    name,
                    n,
                    size_txt,
                    worst,
                    100.0 * px_diff / max(px_total, 1),
                    ids_bad,
                    1e3 * t_pt / n,
                    1e3 * t_ox / n,
                    "ok" if worst <= 1 and ids_bad == 0 else "FAIL",
                )
            )

    head = ("set", "pairs", "size", "max|Δ|", "px Δ≠0 %", "ids mismatches", "PyTorch ms", "ORT ms", "status")
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        table.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.4f} | {r[5]} | {r[6]:.0f} | {r[7]:.0f} | {r[8]} |")
    total = sum(r[1] for r in rows)
    table.append(
        f"| **all** | {total} | | {max((r[3] for r in rows), default=0)} | | "
        f"{sum(r[5] for r in rows)} | | | {'ok' if not failures else 'FAIL'} |"
    )
    print("\n".join(table))
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": per_pair, "failures": failures}, indent=1))
    if tmp is not None:
        tmp.cleanup()
    if failures:
        print(f"{len(failures)} pair(s) fail parity: " + "; ".join(failures[:10]), file=sys.stderr)
        return 1
    print(f"all {total} pairs: fused uint8 max|Δ| <= 1 and token ids identical")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
