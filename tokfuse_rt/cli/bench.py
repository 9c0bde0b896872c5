"""``tokfuse bench``: time ``Engine.fuse`` on one pair, for one or more models side by side.

    tokfuse bench [--model M [--model M2 ...]] [--backend B [--backend B2 ...]] [--ir IR --vis VIS]
                  [--size WxH] [--rounds 20] [--warmup 3] [--k K] [--device D] [--threads N] [--max-pixels N]
                  [--json]

``--backend`` pairs with ``--model``: one backend for every model, one per model, or several backends for a
single model (the same checkpoint through each, e.g. ``--backend native --backend native-int8``).

Each model's engine fuses the same pair (default: the bundled sample pair, ``--size`` resizes it) ``--warmup``
times untimed, then ``--rounds`` times, each call timed alone (``time.perf_counter``). The pair is decoded once
beforehand, so the times cover what ``fuse`` does with arrays: input checks, colour conversion, the model and
the result. Reported per model: backend, device, threads, median / p90 / min milliseconds per pair and pairs per
second (1000 / median). Timings are as noisy as the machine is busy. The kernel-level and full benchmark suites
are ``pytest bench/ --benchmark-only`` in a source checkout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .options import DEFAULT_MODEL_WORD, add_device, add_k, add_model, add_threads, model_path

EPILOG = """examples:
  tokfuse bench                                              # bundled model, bundled sample pair
  tokfuse bench --model default --model model.onnx --size 640x480 --threads 2
  tokfuse bench --backend pytorch --backend native --backend native-int8 --size 640x480 --threads 2
  tokfuse bench --model model.onnx --ir ir.png --vis vis.png --rounds 50 --json
"""


def register(subparsers, help: str) -> None:
    b = subparsers.add_parser(
        "bench",
        help=help,
        description="Time Engine.fuse on one pair for each model given, side by side in one run.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model(
        b,
        multiple=True,
        help="model file (.safetensors, .onnx, .plan) or 'default' (the bundled model); repeat to "
        "compare (default: the bundled model)",
    )
    from ..backends import BACKEND_NAMES

    b.add_argument(
        "--backend",
        action="append",
        choices=BACKEND_NAMES,
        default=None,
        help="backend (default auto); repeat: one per --model, or several for a single model",
    )
    b.add_argument("--ir", default=None, help="infrared image (default: the bundled sample pair)")
    b.add_argument("--vis", default=None, help="visible image (with --ir)")
    b.add_argument("--size", default=None, metavar="WxH", help="resize the pair to WxH first (bilinear)")
    from ..imageio import DEFAULT_MAX_PIXELS

    b.add_argument(
        "--max-pixels",
        type=float,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse a pair (or --size) with more pixels, before any work (default: {DEFAULT_MAX_PIXELS:.0e})",
    )
    b.add_argument("--rounds", type=int, default=20, help="timed calls per model (default 20)")
    b.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    add_k(b)
    add_device(b)
    add_threads(b)
    b.add_argument("--json", action="store_true", help="print the results as JSON")
    b.set_defaults(func=cmd_bench)


def parse_size(text: str, max_pixels: int | None = None) -> tuple[int, int]:
    """'640x480' -> (640, 480); ValueError naming --size otherwise (also over ``max_pixels``)."""
    from ..onnx_contract import MIN_SIDE

    parts = str(text).lower().replace("×", "x").split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--size {text!r}: expected WxH, e.g. 640x480") from None
    if min(w, h) < MIN_SIDE:
        raise ValueError(f"--size {text!r}: width and height must be >= {MIN_SIDE}")
    if max_pixels is not None and w * h > max_pixels:
        raise ValueError(f"--size {text}: {w * h} pixels is over the limit of {int(max_pixels)} (--max-pixels)")
    return w, h


def load_pair(ir, vis, size, max_pixels=None):
    """(ir, vis) decoded as arrays (uint8; files over ``max_pixels`` refused from the header), resized to
    ``size`` = (W, H) when given."""
    from PIL import Image

    from ..engine import DEFAULT_MODEL
    from ..imageio import load_image, to_uint8

    if (ir is None) != (vis is None):
        raise ValueError("give both --ir and --vis, or neither (the bundled sample pair)")
    if ir is None:
        ir, vis = (DEFAULT_MODEL.parent / f"sample_{n}.png" for n in ("ir", "vis"))
    arrays = [load_image(p, name, max_pixels=max_pixels) for p, name in ((ir, "ir"), (vis, "vis"))]
    if size is not None:
        import numpy as np

        arrays = [
            np.asarray(Image.fromarray(to_uint8(a) if a.dtype != np.uint8 else a).resize(size, Image.BILINEAR))
            for a in arrays
        ]
    return arrays[0], arrays[1]


def time_engine(eng, ir, vis, rounds: int, warmup: int, k=None) -> dict:
    """Milliseconds of ``eng.fuse(ir, vis, k)`` over ``rounds`` timed calls after ``warmup`` untimed ones."""
    import numpy as np

    for _ in range(warmup):
        eng.fuse(ir, vis, k)
    ms = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        eng.fuse(ir, vis, k)
        ms.append((time.perf_counter() - t0) * 1000.0)
    a = np.asarray(ms)
    median = float(np.median(a))
    return {
        "rounds": rounds,
        "median_ms": median,
        "p90_ms": float(np.percentile(a, 90)),
        "min_ms": float(a.min()),
        "pairs_per_s": 1000.0 / median,
    }


def runs(models: list, backends: list) -> list[tuple]:
    """(model, backend) pairs: zipped when the counts match, else one of the two lists has one entry."""
    if len(models) == len(backends):
        return list(zip(models, backends))
    if len(models) == 1:
        return [(models[0], b) for b in backends]
    if len(backends) == 1:
        return [(m, backends[0]) for m in models]
    raise ValueError(
        f"{len(backends)} --backend for {len(models)} --model: give one backend, one per model, or one model"
    )


def cmd_bench(a) -> int:
    from ..engine import Engine

    if a.rounds < 1 or a.warmup < 0:
        raise ValueError(f"--rounds must be >= 1 and --warmup >= 0, got {a.rounds} and {a.warmup}")
    max_pixels = int(a.max_pixels) if a.max_pixels else None
    size = parse_size(a.size, max_pixels) if a.size else None
    plan = runs(a.model or [DEFAULT_MODEL_WORD], a.backend or ["auto"])  # before the pair is read
    ir, vis = load_pair(a.ir, a.vis, size, max_pixels)
    results = []
    for model, backend in plan:
        with Engine(
            model_path(model), device=a.device, threads=a.threads, max_pixels=max_pixels, backend=backend
        ) as eng:
            info = eng.info()
            r = {
                "model": str(eng.path),
                "backend": info.get("backend"),
                "device": str(info.get("device")),
                "threads": info.get("threads"),
                "size": f"{ir.shape[1]}x{ir.shape[0]}",
                "k": eng.resolve_k(a.k),
            }
            r.update(time_engine(eng, ir, vis, a.rounds, a.warmup, r["k"]))
        results.append(r)
        if not a.json:
            print(
                f"{Path(r['model']).name}: {r['backend']} on {r['device']} ({r['threads']} threads), {r['size']}, "
                f"k={r['k']}: median {r['median_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, min {r['min_ms']:.1f} ms, "
                f"{r['pairs_per_s']:.2f} pairs/s ({r['rounds']} rounds)",
                flush=True,
            )
    if a.json:
        print(json.dumps(results, indent=2))
    return 0
