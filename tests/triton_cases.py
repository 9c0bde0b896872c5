"""Helpers shared by the Triton kernel tests (test_vq_lookup, test_token_edit, test_triton_engine).

Import after TRITON_INTERPRET is set: ``DEVICE, WHY`` come from ``kernels.run_device()``, which
imports triton.
"""

import numpy as np
import pytest
import torch

from tokfuse_rt import kernels

DEVICE, WHY = kernels.run_device()
KERNEL_MARKS = [
    pytest.mark.requires_triton,
    pytest.mark.skipif(DEVICE is None, reason=WHY or "no device for the Triton kernels"),
]


def kernel_test(fn):
    """Mark a test that runs a Triton kernel: skips, naming why, where the kernels cannot run."""
    for m in KERNEL_MARKS:
        fn = m(fn)
    return fn


def seed_of(*xs, salt=17):
    """A deterministic seed for one parametrisation."""
    s = salt
    for x in xs:
        s = (s * 1000003 + int(x)) % (2**31)
    return s


def canon_map(cb):
    """canon[i] = lowest index j with cb[j] identical to cb[i]."""
    _, inv = torch.unique(cb, dim=0, return_inverse=True)
    first = torch.full((int(inv.max()) + 1,), cb.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, inv, torch.arange(cb.shape[0]), reduce="amin")
    return first[inv]


def dyadic_rows(d):
    """Unit vectors whose dot products with themselves are exact in any summation order."""
    e0 = torch.zeros(d)
    e0[0] = 1.0
    h = torch.zeros(d)
    h[1:5] = torch.tensor([0.5, -0.5, 0.5, 0.5])
    return e0, h


def load_gray(path):
    """8-bit gray (PIL "L") as float32 [H, W] in [0, 1]."""
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)
