"""l2-normalised vector quantisation (TiTok style) with a switchable search backend.

Backends for the nearest-codebook search (ids identical by contract, ties to the lowest index):
  "torch"  - plain PyTorch (argmax of z @ C.T); also what ONNX export traces.
  "ext"    - tokfuse_rt._C.nn_search (C++ AVX2/OpenMP) on CPU tensors.
  "triton" - tokfuse_rt.kernels.vq_lookup (Triton; CUDA, or the CPU interpreter with TRITON_INTERPRET=1).
  "auto"   - triton on CUDA tensors when importable, ext on CPU when built, else torch.
"""

from __future__ import annotations

import contextlib
import threading

import torch

_BACKENDS = ("auto", "torch", "ext", "triton")
_state = threading.local()


def get_backend() -> str:
    return getattr(_state, "backend", "auto")


@contextlib.contextmanager
def kernel_backend(name: str):
    """Select the quantisation/STE kernel backend for the current thread inside a ``with`` block."""
    if name not in _BACKENDS:
        raise ValueError(f"kernel backend must be one of {_BACKENDS}, got {name!r}")
    old = get_backend()
    _state.backend = name
    try:
        yield
    finally:
        _state.backend = old


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def resolve_backend(device: torch.device, requires_grad: bool = False) -> str:
    """The backend that will actually run for tensors on ``device``."""
    name = get_backend()
    if requires_grad or _exporting():
        return "torch"
    if name == "auto":
        if device.type == "cuda" and _triton_available():
            return "triton"
        if device.type == "cpu" and _ext_available():
            return "ext"
        return "torch"
    return name


def _ext_available() -> bool:
    try:
        from .. import nn_search as _nn
    except ImportError:
        return False
    return bool(getattr(_nn, "HAVE_EXT", False))


def _triton_available() -> bool:
    try:
        from .. import kernels
    except ImportError:
        return False
    return bool(getattr(kernels, "HAVE_TRITON", False))


def l2norm(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / max(||x||_2, eps) over the last dim (same as F.normalize)."""
    return x / torch.sqrt((x * x).sum(dim=-1, keepdim=True)).clamp_min(eps)


def nearest_code_ref(z: torch.Tensor, codebook_n: torch.Tensor) -> torch.Tensor:
    """ids[...] of the codebook row with the largest inner product (first one on ties)."""
    return torch.argmax(z @ codebook_n.t(), dim=-1)


def quantize(z_n: torch.Tensor, codebook_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest code by cosine for l2-normalised ``z_n`` [..., d]; returns (ids int64 [...], q [..., d])."""
    backend = resolve_backend(z_n.device, z_n.requires_grad or codebook_n.requires_grad)
    if backend == "ext":
        from ..nn_search import nn_search

        flat = z_n.reshape(-1, z_n.shape[-1]).contiguous().float()
        ids, _ = nn_search(flat, codebook_n.contiguous().float(), metric="ip")
        ids = ids.to(torch.int64).reshape(z_n.shape[:-1])
    elif backend == "triton":
        from ..kernels.vq_lookup import vq_lookup

        flat = z_n.reshape(-1, z_n.shape[-1]).contiguous()
        ids, _ = vq_lookup(flat, codebook_n.contiguous(), normalize=False)
        ids = ids.to(torch.int64).reshape(z_n.shape[:-1])
    else:
        ids = nearest_code_ref(z_n, codebook_n)
    return ids, codebook_n[ids]
