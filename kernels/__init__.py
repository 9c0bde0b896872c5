"""Triton kernels of tokfuse_rt, imported as ``tokfuse_rt.kernels``.

The source stays in the repository's top-level ``kernels/`` folder; it is installed as the
``tokfuse_rt.kernels`` package (never as a top-level ``kernels``, a PyPI package of its own), and a
source tree resolves the same name (see ``tokfuse_rt/__init__.py``).

Modules (import them explicitly; nothing heavy is imported here):

* ``tokfuse_rt.kernels.vq_lookup``  - fused l2-normalise -> nearest codebook entry (cosine) -> gather.
  ``vq_lookup(z, codebook_n, normalize=True) -> (ids int32 [N], q [N, d])`` and ``vq_lookup_ref``.
* ``tokfuse_rt.kernels.token_edit`` - fused Selective Token Editing: per sequence top-k of the scores, gather,
  edit MLP, normalise, re-quantise, scatter back; unselected tokens copied bit-for-bit.
  ``token_edit(z, ids, scores, ctx, ste_module, codebook_n, k)``, ``token_edit_weights(...)`` and
  ``token_edit_ref`` / ``token_edit_weights_ref``.
* ``tokfuse_rt.kernels.common`` - what both share: mode and device checks, and the device functions of
  the nearest-code search (score tile, best score at the lowest index).

Every kernel has a pure-PyTorch ``*_ref`` in the same module: the test oracle, the benchmark baseline
and the fallback. The ``*_ref`` functions work without triton; ``import tokfuse_rt.kernels`` and importing
the kernel modules never fail when triton is missing - only calling a Triton wrapper raises ImportError.

Where the kernels run: on CUDA tensors (compiled, autotuned for Hopper-class GPUs), or on CPU tensors
under Triton's interpreter (``TRITON_INTERPRET=1``; that is how the tests run them on machines without a
GPU - one fixed launch configuration, no autotuning). Triton fixes the mode when it is first imported
(its own ``tl.max``/``tl.sigmoid`` helpers are jit objects of that mode), so TRITON_INTERPRET=1 must be
set before anything imports triton; the kernels report a mismatch with a clear error.
"""

from __future__ import annotations

import importlib.util
import os


def _find(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError, AttributeError):  # e.g. sys.modules[mod] = None (import blocked)
        return False


#: triton is installed (cheap probe; the kernel modules do the real import when a kernel is called).
HAVE_TRITON = _find("triton")


def interpreter_enabled() -> bool:
    """True when ``TRITON_INTERPRET`` asks for Triton's CPU interpreter (1/true/on/yes), as triton reads it.
    It takes effect only if set before triton is first imported."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def triton_mode():
    """ "interpret" or "compiled" (as triton was imported in this process), or None without triton.
    Imports triton."""
    if not HAVE_TRITON:
        return None
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return "interpret" if isinstance(tl.max, InterpretedFunction) else "compiled"


def run_device():
    """(device, why): where the Triton kernels can run in this process ("cpu" under the
    interpreter, "cuda" when compiled with a GPU), or (None, the reason they cannot)."""
    import torch

    mode = triton_mode()
    if mode == "interpret":
        return "cpu", ""
    if mode == "compiled" and torch.cuda.is_available():
        return "cuda", ""
    return None, (
        "requires_triton: triton is not installed"
        if mode is None
        else "triton was imported in compiled mode (TRITON_INTERPRET unset when it was first imported) "
        "and there is no CUDA GPU; run with TRITON_INTERPRET=1"
    )


__all__ = ["HAVE_TRITON", "interpreter_enabled", "triton_mode", "run_device"]
