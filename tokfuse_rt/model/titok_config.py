"""The architecture of a first-generation TiTok tokenizer as data: ``TiTokConfig``, the official presets,
and the check that a TokFuse config agrees with its tokenizer. A leaf of the model package (the modules
that build the tokenizer are in ``tokfuse_rt.model.titok``), so configs can be checked without them."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .config_json import config_from_json
from .errors import CheckpointError

# ViT sizes by name (width, layers, heads), as in the official TiTok code.
MODEL_SIZES = {"small": (512, 8, 8), "base": (768, 12, 12), "large": (1024, 24, 16)}

# The official inference configs of the released first-generation tokenizers (configs/infer/TiTok/*.yaml
# of bytedance/1d-tokenizer): the fields that define the architecture.
PRESETS = {
    "L-32": {"vit_enc_model_size": "large", "vit_dec_model_size": "large", "num_latent_tokens": 32},
    "B-64": {"vit_enc_model_size": "base", "vit_dec_model_size": "base", "num_latent_tokens": 64},
    "S-128": {"vit_enc_model_size": "small", "vit_dec_model_size": "small", "num_latent_tokens": 128},
}
_PRESET_COMMON = {
    "codebook_size": 4096,
    "token_size": 12,
    "use_l2_norm": True,
    "commitment_cost": 0.25,
    "vit_enc_patch_size": 16,
    "vit_dec_patch_size": 16,
    "finetune_decoder": True,
}
_ALIASES = {"l32": "L-32", "b64": "B-64", "s128": "S-128"}

# MaskGIT-VQGAN pixel decoder of the first-generation checkpoints (fixed in the official code).
PIXEL_DECODER = {
    "codes": 1024,
    "z_channels": 256,
    "hidden_channels": 128,
    "channel_mult": [1, 1, 2, 2, 4],
    "num_res_blocks": 2,
}


class TiTokError(CheckpointError):
    """A TiTok file or config cannot be used: unreadable, of another architecture, or unsupported."""


@dataclass(frozen=True)
class TiTokConfig:
    """The architecture of a first-generation TiTok tokenizer (everything its weights' shapes depend on).

    Built from the official config with ``from_official`` or by name with ``preset``. The encoder and
    decoder sizes come from ``vit_*_model_size`` (small/base/large); explicit widths, depths, head counts
    and a smaller pixel decoder are accepted too (``from_official`` reads them from the project's
    extension keys ``vit_enc_width`` ... and ``pixel_decoder``) for small test configurations.
    """

    image_size: int = 256
    codebook_size: int = 4096
    token_size: int = 12
    num_latent_tokens: int = 32
    enc_patch_size: int = 16
    dec_patch_size: int = 16
    enc_width: int = 1024
    enc_layers: int = 24
    enc_heads: int = 16
    dec_width: int = 1024
    dec_layers: int = 24
    dec_heads: int = 16
    pixel_codes: int = 1024
    pixel_z_channels: int = 256
    pixel_hidden_channels: int = 128
    pixel_channel_mult: tuple = (1, 1, 2, 2, 4)
    pixel_num_res_blocks: int = 2

    def __post_init__(self):
        object.__setattr__(self, "pixel_channel_mult", tuple(int(m) for m in self.pixel_channel_mult))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            vals = v if isinstance(v, tuple) else (v,)
            if not vals or any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in vals):
                raise ValueError(f"TiTok config field {f.name} must be a positive int (or tuple of them), got {v!r}")
        for side in ("enc", "dec"):
            p = getattr(self, f"{side}_patch_size")
            if self.image_size % p:
                raise ValueError(f"TiTok crop_size {self.image_size} is not a multiple of vit_{side}_patch_size {p}")
            w, h = getattr(self, f"{side}_width"), getattr(self, f"{side}_heads")
            if w % h:
                raise ValueError(f"TiTok {side}oder width {w} is not a multiple of its {h} heads")

    @property
    def enc_grid(self) -> int:
        return self.image_size // self.enc_patch_size

    @property
    def dec_grid(self) -> int:
        return self.image_size // self.dec_patch_size

    @property
    def output_size(self) -> int:
        """Side of the decoded image: the decoder grid upsampled by the pixel decoder."""
        return self.dec_grid * 2 ** (len(self.pixel_channel_mult) - 1)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["pixel_channel_mult"] = list(self.pixel_channel_mult)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TiTokConfig:
        return config_from_json(cls, text, "TiTok config")

    @classmethod
    def preset(cls, name: str) -> TiTokConfig:
        """``"L-32"``, ``"B-64"`` or ``"S-128"`` (also ``titok_l32`` ...): the released tokenizers."""
        return cls.from_official(official_config(name))

    @classmethod
    def from_official(cls, config: dict) -> TiTokConfig:
        """From the official config (the content of a published ``config.json`` or of
        ``configs/infer/TiTok/*.yaml``): ``{"model": {"vq_model": {...}}, "dataset": {"preprocessing":
        {"crop_size": ...}}}``. Raises TiTokError naming a missing, invalid or unsupported field."""
        if not isinstance(config, dict):
            raise TiTokError(f"TiTok config must be a mapping, got {type(config).__name__}")
        try:
            vq = config["model"]["vq_model"]
        except (KeyError, TypeError):
            raise TiTokError("TiTok config has no model.vq_model section (is this a TiTok config.json?)") from None
        try:
            crop = config["dataset"]["preprocessing"]["crop_size"]
        except (KeyError, TypeError):
            raise TiTokError("TiTok config has no dataset.preprocessing.crop_size (the image size)") from None
        mode = vq.get("quantize_mode", "vq")
        if mode != "vq":
            raise TiTokError(
                f"TiTok quantize_mode {mode!r} is not supported: only VQ tokenizers (discrete "
                "tokens) can serve as a token pathway"
            )
        if not vq.get("use_l2_norm", False):
            raise TiTokError(
                "TiTok use_l2_norm false (the VQ-8k variants) is not supported: this runtime "
                "quantises by cosine against an l2-normalised codebook"
            )
        if not vq.get("is_legacy", True):
            raise TiTokError(
                "TiTok is_legacy false (direct RGB pixel head) is not supported: only the "
                "first-generation MaskGIT-VQGAN decoder (L-32, B-64, S-128) is implemented"
            )
        if not vq.get("finetune_decoder", True):
            raise TiTokError(
                "TiTok finetune_decoder false (a stage-1 checkpoint without the pixel decoder) "
                "is not supported: use the released stage-2 tokenizers"
            )

        def need(key):
            if key not in vq:
                raise TiTokError(f"TiTok config model.vq_model.{key} is missing")
            return vq[key]

        sizes = {}
        for side in ("enc", "dec"):
            name = need(f"vit_{side}_model_size")
            explicit = [vq.get(f"vit_{side}_{k}") for k in ("width", "num_layers", "num_heads")]
            if all(v is not None for v in explicit):
                sizes[side] = tuple(explicit)
            elif name in MODEL_SIZES:
                sizes[side] = MODEL_SIZES[name]
            else:
                raise TiTokError(f"TiTok vit_{side}_model_size {name!r} is not one of {sorted(MODEL_SIZES)}")
        pix = dict(PIXEL_DECODER)
        pix.update(vq.get("pixel_decoder") or {})
        try:
            return cls(
                image_size=crop,
                codebook_size=need("codebook_size"),
                token_size=need("token_size"),
                num_latent_tokens=need("num_latent_tokens"),
                enc_patch_size=need("vit_enc_patch_size"),
                dec_patch_size=need("vit_dec_patch_size"),
                enc_width=sizes["enc"][0],
                enc_layers=sizes["enc"][1],
                enc_heads=sizes["enc"][2],
                dec_width=sizes["dec"][0],
                dec_layers=sizes["dec"][1],
                dec_heads=sizes["dec"][2],
                pixel_codes=pix["codes"],
                pixel_z_channels=pix["z_channels"],
                pixel_hidden_channels=pix["hidden_channels"],
                pixel_channel_mult=tuple(pix["channel_mult"]),
                pixel_num_res_blocks=pix["num_res_blocks"],
            )
        except (ValueError, TypeError, KeyError) as e:
            raise TiTokError(f"invalid TiTok config: {e}") from None


def official_config(name: str) -> dict:
    """The official config (architecture fields) of a released first-generation tokenizer."""
    key = _ALIASES.get(str(name).lower().replace("titok_", "").replace("tokenizer_", "").replace("-", ""), name)
    if key not in PRESETS:
        raise TiTokError(f"unknown TiTok preset {name!r}: expected one of {sorted(PRESETS)}")
    return {
        "model": {"vq_model": dict(_PRESET_COMMON, **PRESETS[key])},
        "dataset": {"preprocessing": {"crop_size": 256}},
    }


TOKENIZER_FIELDS = (
    "image_size",
    "patch_size",
    "num_tokens",
    "code_dim",
    "codebook_size",
    "tokenizer",
    "tokenizer_config",
)


def check_tokfuse_config(cfg) -> TiTokConfig:
    """The TiTokConfig of a TokFuseConfig with ``tokenizer == "titok"``; ValueError if they disagree."""
    try:
        t = TiTokConfig.from_json(cfg.tokenizer_config)
    except (ValueError, TypeError) as e:
        raise ValueError(f"tokenizer_config is not a valid TiTok config: {e}") from None
    pairs = {
        "image_size": t.image_size,
        "num_tokens": t.num_latent_tokens,
        "code_dim": t.token_size,
        "codebook_size": t.codebook_size,
    }
    for k, v in pairs.items():
        if getattr(cfg, k) != v:
            raise ValueError(f"{k} = {getattr(cfg, k)} disagrees with the TiTok tokenizer ({v})")
    if t.output_size != t.image_size:
        raise ValueError(f"the TiTok decoder gives {t.output_size}² images for {t.image_size}² inputs")
    return t
