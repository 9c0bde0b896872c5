"""``make demo``: fuse the bundled sample pair with the bundled default model and say where the output is."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .engine import DEFAULT_MODEL, Engine
from .outputs import save_image

ASSETS = Path(__file__).resolve().parent / "assets"


def main(out_dir: str = "out") -> int:
    ir, vis = ASSETS / "sample_ir.png", ASSETS / "sample_vis.png"
    with Engine() as eng:
        t = time.perf_counter()
        fused = eng.fuse(ir, vis)
        ms = (time.perf_counter() - t) * 1000
        info = eng.info()
    out = save_image(fused, Path(out_dir) / "demo_fused.png").resolve()
    print(f"model:   {DEFAULT_MODEL} ({info['backend']} on {info['device']}, kernels: {info['kernels']})")
    print(f"inputs:  {ir}\n         {vis}")
    print(f"fused {fused.shape[1]}x{fused.shape[0]} in {ms:.0f} ms (first call, includes warm-up)")
    print(f"output:  {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
