"""Score fusion models on shared/data/val and rank them against the peers.

    python scripts/val_rank.py MODEL.safetensors [MODEL2 ...] [--formulas] [--sets TNO RoadScene]
        [--threads 2] [--json out.json]

Each model fuses every val pair through the PyTorch reference model on luminance (read as the
metrics read images: OpenCV-exact BGR2GRAY, rounded); the fused luminance is rounded to uint8 and
scored with the 8 CDDFuse-convention rank metrics plus ``thermal_kept`` (margin 0.25, mean over
images with >= 500 hot pixels, as in val/peer_scores.json).  The mean rank of each model is
computed against the peers of ``val/peer_scores.json`` (ties averaged, 1 = best), each model
ranked on its own against the peers.  ``--formulas`` adds the pixel formulas max(ir, vis),
(ir + vis) / 2 and a copy of the visible image as reference rows.

Only for choosing architectures and recipes: val/ is never trained on; test/ is not read here.
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
M8 = ["EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"]


def load_set(root: Path):
    from tokfuse_rt.metrics import read_gray
    from tokfuse_rt.pairing import pair_set

    return [(p.name, read_gray(p.ir), read_gray(p.vis)) for p in pair_set(root)]


def score(fuse, pairs):
    """Mean of the 8 metrics and thermal_kept over ``pairs`` fused by ``fuse(a, b)`` (float [0, 1] in/out),
    and the visible texture kept (``texture``: mean of tokfuse_rt.metrics.texture_kept against the visible
    image; ``texture_low``: share of images at or below 0.6; ``ir_structure`` and ``ir_structure_low``: the same
    against the infrared image, share at or below 0.2)."""
    from tokfuse_rt.metrics import evaluate, texture_kept, thermal_kept

    rows, kept, tex, irs = [], [], [], []
    for _, A, B in pairs:
        a, b = A / 255.0, B / 255.0
        F = np.clip(np.round(fuse(a, b) * 255.0), 0, 255)
        rows.append(evaluate(F, A, B, metrics=M8))
        k, n_hot = thermal_kept(F / 255.0, a, b, margin=0.25)
        if n_hot >= 500:
            kept.append(k)
        tex.append(texture_kept(F, B))
        irs.append(texture_kept(F, A))
    return {m: float(np.mean([r[m] for r in rows])) for m in M8} | {
        "kept": float(np.mean(kept)),
        "texture": float(np.nanmean(tex)),
        "texture_low": float(np.mean(np.array(tex) <= 0.6)),
        "ir_structure": float(np.nanmean(irs)),
        "ir_structure_low": float(np.mean(np.array(irs) <= 0.2)),
    }


def mean_rank(ours: dict, peers: dict) -> tuple[float, dict]:
    """Mean rank and per-metric ranks of ``ours`` among ``peers`` + ours (tokfuse_rt.metrics.rank)."""
    from tokfuse_rt.metrics.rank import mean_ranks

    return mean_ranks(peers | {"__ours__": ours})["__ours__"]


def place(ours: dict, peers: dict) -> tuple[int, float]:
    """(position of ``ours`` by mean rank among ``peers`` + ours, 1 = first; best peer's mean rank)."""
    from tokfuse_rt.metrics.rank import mean_ranks
    from tokfuse_rt.metrics.rank import place as _place

    table = peers | {"__ours__": ours}
    best = min(v[0] for k, v in mean_ranks(table).items() if k != "__ours__")
    return _place(table, "__ours__"), best


def peer_table(data: Path, set_name: str, path: Path | None = None) -> dict:
    """The peers of ``set_name`` in ``path`` (default: ``val/peer_scores.json`` of ``data``), without a
    ``tokfuse_default`` row (the rows ranked here are ours)."""
    from tokfuse_rt.metrics.rank import load_peers

    path = data / "val" / "peer_scores.json" if path is None else path
    return {k: v for k, v in load_peers(path, set_name).items() if k != "tokfuse_default"}


def as_tensor(x):
    """A 2-D float image as a float32 tensor [1, 1, H, W] (the model's input)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]


def save_json(path, data: dict) -> None:
    """``data`` as indented JSON at ``path``; nothing when ``path`` is None (no --json)."""
    if path:
        Path(path).write_text(json.dumps(data, indent=1))


def model_fuse(path, threads: int):
    import torch

    from tokfuse_rt.model.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    model, _ = load_checkpoint(path)

    def f(a, b):
        with torch.inference_mode():
            return model(as_tensor(a), as_tensor(b))[0][0, 0].numpy()

    return f


def main(argv=None) -> int:
    from workspace import find_shared_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--formulas", action="store_true")
    ap.add_argument("--sets", nargs="+", default=["TNO", "RoadScene"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    data = find_shared_data("val")
    fusers = {}
    if a.formulas:
        fusers |= {"max": np.maximum, "mean": lambda x, y: 0.5 * (x + y), "copy_vis": lambda x, y: y}
    for p in a.models:
        fusers[Path(p).stem] = model_fuse(p, a.threads)
    out = {}
    for s in a.sets:
        pairs = load_set(data / "val" / s)
        peers = peer_table(data, s)
        print(
            f"== val/{s} ({len(pairs)} pairs); peers: "
            + ", ".join(
                f"{k} {mean_rank(v, {q: w for q, w in peers.items() if q != k} | {})[0]:.2f}" for k, v in peers.items()
            )
        )
        for name, f in fusers.items():
            t0 = time.time()
            r = score(f, pairs)
            mr, ranks = mean_rank(r, peers)
            pos, best = place(r, peers)
            out.setdefault(name, {})[s] = r | {"mean_rank": mr, "ranks": ranks, "place": pos, "best_peer": best}
            print(
                f"{name:24s} #{pos} {mr:.3f} (best peer {best:.3f}) | "
                + " ".join(f"{m} {r[m]:.3f}({ranks[m]:g})" for m in M8)
                + f" | kept {r['kept']:.3f} texture {r['texture']:.3f} ({100 * r['texture_low']:.0f} % <= 0.6)"
                + f" ir structure {r['ir_structure']:.3f} ({100 * r['ir_structure_low']:.0f} % <= 0.2)"
                + f" ({time.time() - t0:.0f}s)",
                flush=True,
            )
    save_json(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
