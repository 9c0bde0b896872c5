"""Montage of inputs and fused outputs: ``python scripts/montage.py --data ../shared/data/test -o docs/montage.png``.

Each row: infrared (or MRI) | visible (or CT/PET/SPECT) | fused, for a few pairs of each test set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tokfuse_rt.engine import Engine
from tokfuse_rt.imageio import load_image
from tokfuse_rt.outputs import save_image
from tokfuse_rt.pairing import pair_set

DEFAULT_PICKS = [
    ("TNO", "01.png"),
    ("TNO", "21.png"),
    ("RoadScene", "FLIR_00211.jpg"),
    ("MSRS", "00004N.png"),
    ("Harvard_MRI_PET", "11.png"),
    ("Harvard_MRI_CT", "11.png"),
]


def as_rgb(a: np.ndarray) -> np.ndarray:
    """(H, W) gray -> (H, W, 3); colour as is."""
    return np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a


def fit_height(a: np.ndarray, h: int) -> np.ndarray:
    """``a`` resized (bilinear) to height ``h``, keeping its aspect ratio."""
    from PIL import Image

    w = max(1, round(a.shape[1] * h / a.shape[0]))
    return np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR))


def build(engine: Engine, root: Path, picks=DEFAULT_PICKS, row_h: int = 200, k=None) -> np.ndarray:
    rows = []
    for set_name, file in picks:
        pair = pair_set(root / set_name).by_name(file)
        a, b = load_image(pair.ir, "ir"), load_image(pair.vis, "vis")
        f = engine.fuse(a, b, k=k)
        tiles = [fit_height(as_rgb(x), row_h) for x in (a, b, f)]
        gap = np.full((row_h, 6, 3), 255, np.uint8)
        rows.append(np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/montage.py", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/test", help="test root with the set folders")
    p.add_argument("--model", default=None, help="model file (default: bundled)")
    p.add_argument("--k", type=int, default=None)
    p.add_argument("-o", "--output", default="docs/montage.png")
    a = p.parse_args(argv)
    with Engine(a.model) as eng:
        img = build(eng, Path(a.data), k=a.k)
    print(
        f"wrote {save_image(img, a.output)}  (rows: {', '.join(s for s, _ in DEFAULT_PICKS)}; columns: ir, vis, fused)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
