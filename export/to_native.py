"""Add int8 ranges to a checkpoint for the native backend's int8 render (``backend="native-int8"``).

    python -m export.to_native CKPT -o OUT.safetensors --calib DIR [--calib-pairs N]
    tokfuse export native CKPT -o OUT.safetensors --calib DIR

Runs the float32 model over ``N`` calibration pairs under DIR (default 24, evenly spaced, centre crops
of at most 256², the same pairs as ``python -m export.to_onnx --int8``; a DIR under a ``test`` folder
is refused) and records the render half's activation ranges (``tokfuse_rt.backends.render_int8.calibrate``)
in the checkpoint's metadata (``extra["render_int8"]``). The weights are unchanged, so the float32
backends read OUT as before; OUT is written atomically (OUT may be CKPT itself).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_ranges(ckpt, output, calib, calib_pairs: int | None = None) -> dict:
    """Calibrate ``ckpt`` on pairs under ``calib`` and write it with the ranges to ``output``; a summary."""
    from tokfuse_rt.backends.render_int8 import RANGES_KEY, calibrate
    from tokfuse_rt.model.checkpoint import load_checkpoint, save_checkpoint

    from .quantize import DEFAULT_CALIB_PAIRS, calibration_pairs

    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"output {output} must end in .safetensors")
    if calib is None:
        raise ValueError("--calib DIR is needed: a folder of train/ pairs to calibrate the int8 ranges on")
    t0 = time.perf_counter()
    pairs = calibration_pairs(calib, calib_pairs or DEFAULT_CALIB_PAIRS)  # bad inputs fail before loading
    model, meta = load_checkpoint(ckpt)
    ranges = calibrate(model, ((a[0, 0], b[0, 0]) for a, b in pairs))
    ranges["calibration"] = {
        "dir": str(calib),
        "pairs": len(pairs),
        "crop": max(max(a.shape[-2:]) for a, _ in pairs),
    }
    extra = dict(meta.get("extra") or {})
    extra[RANGES_KEY] = ranges
    save_checkpoint(model, output, extra=extra)
    return {"path": str(output), "ranges": ranges, "seconds": round(time.perf_counter() - t0, 2)}


def add_options(p) -> list:
    return [
        p.add_argument("--calib", metavar="DIR", default=None, help="calibration pairs: a train/ folder of sets"),
        p.add_argument(
            "--calib-pairs", metavar="N", type=int, default=None, help="calibration pairs, evenly spaced (default 24)"
        ),
    ]


def run(a: argparse.Namespace, prog: str = "export.to_native") -> int:
    out = a.output or a.ckpt
    try:
        s = add_ranges(a.ckpt, out, a.calib, a.calib_pairs)
    except (ValueError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    r = s["ranges"]
    print(
        f"wrote {s['path']}: int8 ranges of the render half from {r['calibration']['pairs']} pairs of "
        f"{r['calibration']['dir']} ({s['seconds']} s); run it with backend native-int8"
    )
    if getattr(a, "json", False):
        print(json.dumps(s, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.to_native", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="TokFuse checkpoint (.safetensors)")
    p.add_argument("-o", "--output", default=None, help="output .safetensors (default: CKPT itself)")
    add_options(p)
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    return p


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
