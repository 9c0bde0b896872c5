"""The small TokFuse configuration the tests build untrained models from (fast; not for quality)."""

from __future__ import annotations

from tokfuse_rt.model import TokFuseConfig

TINY = dict(
    image_size=32,
    patch_size=8,
    num_tokens=8,
    codebook_size=64,
    width=32,
    enc_depth=1,
    dec_depth=1,
    heads=2,
    default_k=2,
    detail_channels=4,
    head_channels=4,
)


def tiny_config(**kw) -> TokFuseConfig:
    """TokFuseConfig of :data:`TINY`, fields overridden by ``kw``."""
    return TokFuseConfig(**(TINY | kw))
