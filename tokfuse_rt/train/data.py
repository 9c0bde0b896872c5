"""Training data: registered ir/vis pairs from ``shared/data/train`` held in memory as luminance."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..imageio import load_image, luminance
from ..pairing import find_pairs as _find_pairs


def find_pairs(root) -> list[tuple[Path, Path]]:
    """All (ir, vis) pairs under ``root`` (sets with ir/vi, ir/vis or a/b sub-folders), paired by
    ``tokfuse_rt.pairing``: sets in layout order then sorted, files by name. On ``shared/data/train``
    this is the list the bundled default model was trained on, in the same order."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"training data directory not found: {root}")
    pairs = _find_pairs(root)
    if not pairs:
        raise ValueError(f"no image pairs found under {root} (expected <set>/ir and <set>/vi folders)")
    return pairs


class PairBank:
    """Luminance pairs as float32 tensors [1, H, W] in [0, 1]."""

    def __init__(self, root):
        self.pairs = []
        for a, b in find_pairs(root):
            ya = torch.from_numpy(luminance(load_image(a, "ir")))[None]
            yb = torch.from_numpy(luminance(load_image(b, "vis")))[None]
            if ya.shape != yb.shape:
                continue
            self.pairs.append((ya, yb))

    def __len__(self):
        return len(self.pairs)

    def sample(self, gen: torch.Generator, batch: int, out: int, min_crop: int = 96, max_crop: int = 512):
        """Random crops of random size (min_crop..max_crop), flipped, resized to out×out.

        Returns ir, vis: [batch, 1, out, out].
        """
        irs, viss = [], []
        for _ in range(batch):
            i = int(torch.randint(len(self.pairs), (1,), generator=gen))
            a, b = self.pairs[i]
            h, w = a.shape[-2:]
            hi = max(min_crop, min(max_crop, h, w))
            c = int(torch.randint(min(min_crop, hi), hi + 1, (1,), generator=gen))
            y = int(torch.randint(0, h - c + 1, (1,), generator=gen))
            x = int(torch.randint(0, w - c + 1, (1,), generator=gen))
            pa, pb = a[:, y : y + c, x : x + c], b[:, y : y + c, x : x + c]
            if torch.rand((), generator=gen) < 0.5:
                pa, pb = pa.flip(-1), pb.flip(-1)
            irs.append(pa)
            viss.append(pb)
        ir = torch.cat([F.interpolate(p[None], size=(out, out), mode="bilinear", align_corners=False) for p in irs])
        vis = torch.cat([F.interpolate(p[None], size=(out, out), mode="bilinear", align_corners=False) for p in viss])
        return ir, vis


def single_images(bank: PairBank, gen: torch.Generator, batch: int, out: int):
    """Tokenizer warm-up batches: random crops of either modality. [batch, 1, out, out]."""
    ir, vis = bank.sample(gen, batch, out)
    pick = torch.rand(batch, 1, 1, 1, generator=gen) < 0.5
    return torch.where(pick, ir, vis)
