"""A strip of fused video frames for the README: rows infrared | visible | fused (decoded from the
H.264 output of ``Engine.fuse_video``), columns frames spread over the clip.

    python scripts/video_strip.py [--model M] [--seq 0114_1551] [--frames 0,6,13,19] [-o docs/video_strip.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--data", default=None, help="M3SVD folder (default: shared/data/video/M3SVD beside the repo)")
    p.add_argument("--seq", default="0114_1551")
    p.add_argument("--frames", default="0,6,13,19")
    p.add_argument("--height", type=int, default=150)
    p.add_argument("-o", "--output", default=str(ROOT / "docs" / "video_strip.png"))
    a = p.parse_args(argv)
    from workspace import data_option

    a.data = str(data_option(p, a.data, "video/M3SVD", start=ROOT))
    import av
    from montage import as_rgb, fit_height

    from tokfuse_rt import Engine
    from tokfuse_rt.outputs import save_image

    def frames(path):
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]

    d = Path(a.data) / a.seq
    picks = [int(x) for x in a.frames.split(",")]
    with tempfile.TemporaryDirectory() as tmp, Engine(a.model) as eng:
        out = Path(tmp) / "fused.mp4"
        rep = eng.fuse_video(d / "ir.mp4", d / "vis.mp4", out, progress=False)
        rows = [frames(d / "ir.mp4"), frames(d / "vis.mp4"), frames(out)]
    gap = 4
    strip = []
    for r in rows:
        tiles = [fit_height(as_rgb(r[i]), a.height) for i in picks]
        sep = np.full((a.height, gap, 3), 255, np.uint8)
        line = [t for tile in tiles for t in (tile, sep)][:-1]
        strip += [np.concatenate(line, axis=1), np.full((gap, sum(x.shape[1] for x in line), 3), 255, np.uint8)]
    img = np.concatenate(strip[:-1], axis=0)
    print(
        f"wrote {save_image(img, a.output)} (rows: ir, vis, fused H.264; frames {picks} of {a.seq}; "
        f"{rep.frames} frames fused at {rep.fps:.1f} fps)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
