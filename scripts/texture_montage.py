"""Montage of the test images whose visible texture the bundled model loses, fused by two models.

    python scripts/texture_montage.py --old OLD.safetensors [--new NEW] [--data ../shared/data/test]
        [--picks RoadScene/FLIR_00211.jpg ...] -o docs/quality/texture_montage.png

Each row: infrared | visible | fused by OLD | fused by NEW (default: the bundled model), each fused
tile labelled with its visible texture kept (tokfuse_rt.metrics.texture_kept against the visible
luminance; the default-model checks ask > 0.6) and its thermal share kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the six test/TNO and test/RoadScene images with the lowest visible texture under the bundled
# ("blend", K = 32) model (0.17-0.47), and FLIR_00211, the default-model check's closest call
PICKS = [
    "RoadScene/FLIR_06995.jpg",
    "RoadScene/FLIR_06974.jpg",
    "RoadScene/FLIR_07190.jpg",
    "TNO/06.png",
    "RoadScene/FLIR_07206.jpg",
    "TNO/18.png",
    "RoadScene/FLIR_00211.jpg",
]


def label(tile: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(tile)
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, 7 * len(text) + 6, 14], fill=(0, 0, 0))
    d.text((3, 1), text, fill=(255, 255, 0))
    return np.asarray(im)


def main(argv=None) -> int:
    from montage import as_rgb, fit_height

    from tokfuse_rt import Engine
    from tokfuse_rt.imageio import load_image, luminance
    from tokfuse_rt.metrics import texture_kept, thermal_kept
    from tokfuse_rt.outputs import save_image
    from tokfuse_rt.pairing import pair_set

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True)
    p.add_argument("--new", default=None)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "test"))
    p.add_argument("--picks", nargs="+", default=PICKS)
    p.add_argument("--row-height", type=int, default=180)
    p.add_argument("-o", "--output", default="docs/quality/texture_montage.png")
    a = p.parse_args(argv)
    h = a.row_height
    rows = []
    with Engine(a.old) as old, Engine(a.new) as new:
        for pick in a.picks:
            set_name, file = pick.split("/")
            pair = pair_set(Path(a.data) / set_name).by_name(file)
            ir, vis = load_image(pair.ir, "ir"), load_image(pair.vis, "vis")
            yi, yv = luminance(ir), luminance(vis)
            tiles = [fit_height(as_rgb(ir), h), fit_height(as_rgb(vis), h)]
            for name, eng in (("old", old), ("new", new)):
                f = eng.fuse(ir, vis)
                yf = luminance(f)
                tex = texture_kept(yf, yv)
                kept, n = thermal_kept(yf, yi, yv, margin=0.25)
                txt = f"{name}: texture {tex:.2f}" + (f" thermal {kept:.2f}" if n >= 500 else "")
                tiles.append(label(fit_height(as_rgb(f), h), txt))
                print(f"{pick} {name}: texture {tex:.3f}, thermal kept {kept:.3f} ({n} hot pixels)")
            gap = np.full((h, 6, 3), 255, np.uint8)
            row = tiles[0]
            for t in tiles[1:]:
                row = np.concatenate([row, gap, t], axis=1)
            rows.append(row)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    print(f"wrote {save_image(np.concatenate(rows, axis=0), a.output)} (columns: ir, vis, old, new)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
