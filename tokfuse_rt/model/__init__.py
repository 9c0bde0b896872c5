"""Reference TokFuse model."""

from .checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from .config import TokFuseConfig
from .fusion import TokFuse
from .quant import kernel_backend, l2norm, quantize
from .ste import SelectiveTokenEditing, TokenMixer, topk_mask

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "load_checkpoint",
    "save_checkpoint",
    "TokFuseConfig",
    "TokFuse",
    "kernel_backend",
    "l2norm",
    "quantize",
    "SelectiveTokenEditing",
    "TokenMixer",
    "topk_mask",
]
