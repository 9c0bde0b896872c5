"""tokfuse_rt: a fast runtime for 1D-token multimodal image fusion (IVIF and medical).

    import tokfuse_rt
    tokfuse_rt.Engine().fuse(ir, vis)          # bundled default model, PyTorch backend

Importing this package needs only numpy and torch; everything else is imported when used.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .engine import Engine, FuseReport  # noqa: E402

__all__ = ["Engine", "FuseReport", "__version__", "default_model_path"]


def default_model_path():
    """Path of the bundled default checkpoint."""
    from .engine import DEFAULT_MODEL

    return DEFAULT_MODEL
