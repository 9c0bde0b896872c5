"""Model configuration: every hyper-parameter of a TokFuse model, stored in checkpoint metadata."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .config_json import config_from_json

HEADS = ("blend", "tone", "layers")
# Upper bounds checked before a model is built from a config (a corrupt or hostile checkpoint must not
# allocate gigabytes); generous against the defaults below. Integer fields not listed: _MAX_OTHER.
_MAX = {
    "image_size": 2048,
    "patch_size": 2048,
    "num_tokens": 4096,
    "code_dim": 1024,
    "codebook_size": 1 << 20,
    "width": 4096,
    "enc_depth": 64,
    "dec_depth": 64,
    "heads": 128,
    "mlp_ratio": 16,
    "default_k": 4096,
}
_MAX_OTHER = 4096


@dataclass(frozen=True)
class TokFuseConfig:
    """Hyper-parameters of the TokFuse model.

    Token pathway: luminance resized to ``image_size``² -> ViT encoder over ``patch_size`` patches
    with ``num_tokens`` (K) latent tokens -> projection to ``code_dim`` (d) -> l2-normalised VQ
    against a ``codebook_size`` × d l2-normalised codebook. π is a ViT decoder giving a base map.
    """

    image_size: int = 128  # S: token pathway resolution
    patch_size: int = 16
    num_tokens: int = 32  # K latent tokens per image
    code_dim: int = 12  # d
    codebook_size: int = 4096
    width: int = 128  # transformer width (encoder and decoder)
    enc_depth: int = 2
    dec_depth: int = 2
    heads: int = 4
    mlp_ratio: int = 2
    mixer_hidden: int = 64  # token mixer hidden width
    edit_hidden: int = 64  # STE edit MLP hidden width
    score_hidden: int = 32  # STE score head hidden width
    default_k: int = 4  # STE: tokens edited by default (0..K at run time)
    detail_channels: int = 16  # detail pathway width
    head_channels: int = 16  # fusion head width
    head: str = "blend"  # "blend": per-pixel blend + residual (format-1 models);
    # "tone": selection + additive layer under a token-predicted global tone
    # "layers": the tone over base/detail layers (box-blurred base, visible detail kept everywhere)
    tone_hidden: int = 64  # tone head hidden width ("tone" and "layers")
    base_radius: int = 4  # "layers": radius of the base layers' box filter (two passes of (2r+1)²)
    # Token pathway: "builtin" (the tokenizer above, trained in stage I) or "titok" (an official TiTok
    # tokenizer, frozen; its architecture as TiTokConfig JSON in tokenizer_config, see model/titok.py).
    tokenizer: str = "builtin"
    tokenizer_config: str = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):  # types and sane bounds first: nothing is allocated yet
            v, default = getattr(self, f.name), f.default
            if isinstance(default, int) and not isinstance(default, bool):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f"config field {f.name} must be an int, got {v!r}")
                hi = _MAX.get(f.name, _MAX_OTHER)
                if v > hi:
                    raise ValueError(f"config field {f.name} = {v} is out of bounds (at most {hi})")
        if self.tokenizer not in ("builtin", "titok"):
            raise ValueError(f"tokenizer must be 'builtin' or 'titok', got {self.tokenizer!r}")
        if self.tokenizer == "titok":
            from .titok_config import check_tokfuse_config

            check_tokfuse_config(self)
        elif self.tokenizer_config:
            raise ValueError("tokenizer_config is only used with tokenizer='titok'")
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if self.width % self.heads:
            raise ValueError("width must be a multiple of heads")
        if not 0 <= self.default_k <= self.num_tokens:
            raise ValueError("default_k must be in [0, num_tokens]")
        if self.head not in HEADS:
            raise ValueError(f"config field head must be one of {HEADS}, got {self.head!r}")
        for f in dataclasses.fields(self):
            if f.type in (int, "int") and getattr(self, f.name) <= 0 and f.name != "default_k":
                raise ValueError(f"config field {f.name} must be positive")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TokFuseConfig:
        return config_from_json(cls, text, "model config", " (checkpoint from a newer tokfuse_rt?)")


def tokfuse_config(tcfg, **fusion) -> TokFuseConfig:
    """A TokFuseConfig whose token pathway is the TiTok tokenizer ``tcfg`` (its native S, K, d and
    codebook; a ``tokfuse_rt.model.titok.TiTokConfig``); ``fusion`` sets the other fields (mixer, STE,
    detail and head widths, default_k)."""
    from .titok_config import TOKENIZER_FIELDS

    for k in TOKENIZER_FIELDS:
        if k in fusion:
            raise ValueError(f"{k} is fixed by the TiTok tokenizer")
    fusion.setdefault("default_k", min(4, tcfg.num_latent_tokens))
    return TokFuseConfig(
        image_size=tcfg.image_size,
        patch_size=tcfg.enc_patch_size,
        num_tokens=tcfg.num_latent_tokens,
        code_dim=tcfg.token_size,
        codebook_size=tcfg.codebook_size,
        tokenizer="titok",
        tokenizer_config=tcfg.to_json(),
        **fusion,
    )
