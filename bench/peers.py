"""Learned peers timed beside tokfuse_rt in the same run, from their own public code (loaded from a
checkout, never copied into this repository).

MMDRFuse student (Deng et al., 113 parameters: two 3×3 convolutions, 2->4->1 channels, reflection
padding, ReLU, tanh): ``TOKFUSE_MMDRFUSE=DIR``, DIR a checkout of https://github.com/yanglinDeng/MMDRFuse
(``student_net.py`` and ``pretrained_models/student.model``; measured at commit c9e5014):

    git clone https://github.com/yanglinDeng/MMDRFuse /path/MMDRFuse
    TOKFUSE_MMDRFUSE=/path/MMDRFuse pytest bench/bench_engine.py --benchmark-only

It runs as its ``test_student.py`` does, arrays in -> uint8 out: both images as 8-bit gray (the
visible image converted like PIL's ``convert("L")``, which its ``imread(mode="L")`` does), divided by
255, stacked into a [1, 2, H, W] tensor, encoder then decoder on the CPU with the given threads, the
first output (tanh) scaled to uint8. Its output is gray; ours keeps the visible colour.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ENV = "TOKFUSE_MMDRFUSE"


def mmdrfuse_dir() -> Path | None:
    """The MMDRFuse checkout named by TOKFUSE_MMDRFUSE, or None when unset or incomplete."""
    d = os.environ.get(ENV)
    if not d:
        return None
    d = Path(d)
    ok = (d / "student_net.py").is_file() and (d / "pretrained_models" / "student.model").is_file()
    return d if ok else None


def mmdrfuse_student(root: Path, threads: int):
    """fuse(ir uint8 (H, W), vis uint8 (H, W) or (H, W, 3)) -> fused uint8 (H, W) with the public student."""
    import torch
    from PIL import Image

    sys.path.insert(0, str(root))
    try:
        from student_net import stu_net
    finally:
        sys.path.remove(str(root))
    model = stu_net(2, 1)
    state = torch.load(root / "pretrained_models" / "student.model", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    torch.set_num_threads(threads)

    def gray(a: np.ndarray) -> np.ndarray:
        return a if a.ndim == 2 else np.asarray(Image.fromarray(a).convert("L"))

    def fuse(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        a, b = gray(ir) / 255.0, gray(vis) / 255.0
        img = torch.cat([torch.from_numpy(a[None, None]), torch.from_numpy(b[None, None])], 1).float()
        with torch.no_grad():
            out = model.decoder(model.encoder(img))[0][0, 0].numpy()
        return np.clip(out * 255.0, 0, 255).astype(np.uint8)

    fuse.parameters = sum(p.numel() for p in model.parameters())
    return fuse
