"""The official TiTok tokenizer architecture (Yu et al., "An Image is Worth 32 Tokens for
Reconstruction and Generation", 2024), loading the published checkpoints unchanged.

First-generation TiTok (L-32, B-64, S-128): a ViT encoder reads a 256² RGB image as 16×16 patches
together with K learnable latent tokens; the K latent outputs are projected to d = 12, l2-normalised
and quantised to the nearest entry of an l2-normalised 4096 × 12 codebook. The ViT decoder turns the K
tokens (plus G² mask tokens) into logits over the 1024 codes of a MaskGIT-VQGAN for each cell of the
16×16 grid; their softmax mixture goes through the VQGAN's convolutional decoder to RGB
(``titok_vqgan.py``).

Parameter names and shapes follow the published files (``tokenizer_titok_*.bin`` and
``config.json`` + ``model.safetensors``), so ``TiTokTokenizer.state_dict()`` has exactly their keys.
The architecture is read from the official config fields (``model.vq_model.*`` and
``dataset.preprocessing.crop_size``). Details the weights depend on, kept exactly:

  * the encoder prepends a class token; the latent tokens follow the patch tokens;
  * "legacy" output projection: the encoder's K × W latent outputs are *reshaped* (not transposed) to
    W × K before the 1×1 convolution to d channels (``is_legacy``, true for all first-generation files);
  * nearest code = smallest Euclidean distance between l2-normalised vectors, i.e. the largest cosine
    (this runtime's ``quantize``: the C++ and Triton search paths serve the same codebook);
  * the decoder adds positional embeddings to [class, G² mask tokens] and to the K token embeddings,
    keeps the G² mask-token outputs, and maps them with conv1×1 -> tanh -> conv1×1 to code logits.

Only what the first-generation checkpoints use is implemented: VQ mode with l2-normalised codes and
the MaskGIT-VQGAN pixel decoder. The later variants (``use_l2_norm: False`` VQ-8k tokenizers, VAE
tokenizers, non-legacy pixel heads) are refused with a clear error.

Shapes: B batch, S image side (crop_size), P patch, G = S/P, K latent tokens, W width, d token size.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .quant import l2norm, quantize
from .titok_config import (  # noqa: F401 - re-exported: the config side of this module
    MODEL_SIZES,
    PIXEL_DECODER,
    PRESETS,
    TOKENIZER_FIELDS,
    TiTokConfig,
    TiTokError,
    check_tokfuse_config,
    official_config,
)
from .titok_vqgan import PixelCodebook, PixelDecoder
from .vit import attend

# Rec. 601 luma weights (the same as tokfuse_rt.imageio's RGB -> Y).
_LUMA = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------------------------------------------
# Modules (parameter names as in the published checkpoints)
# ---------------------------------------------------------------------------------------------------
class _MHA(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter layout, in plain ops."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(attend(F.linear(x, self.in_proj_weight, self.in_proj_bias), self.heads))


class _Block(nn.Module):
    """Pre-norm transformer block (``ln_1``, ``attn``, ``ln_2``, ``mlp.c_fc``/``mlp.c_proj``, GELU)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = _MHA(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TiTokEncoder(nn.Module):
    """[B, 3, S, S] RGB in [0, 1] + latent tokens [K, W] -> [B, K, d] continuous (not normalised) tokens."""

    def __init__(self, c: TiTokConfig):
        super().__init__()
        w, g, k = c.enc_width, c.enc_grid, c.num_latent_tokens
        self.width, self.grid, self.num_latent_tokens = w, g, k
        s = w**-0.5
        self.patch_embed = nn.Conv2d(3, w, c.enc_patch_size, stride=c.enc_patch_size)
        self.class_embedding = nn.Parameter(s * torch.randn(1, w))
        self.positional_embedding = nn.Parameter(s * torch.randn(g * g + 1, w))
        self.latent_token_positional_embedding = nn.Parameter(s * torch.randn(k, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = nn.ModuleList(_Block(w, c.enc_heads) for _ in range(c.enc_layers))
        self.ln_post = nn.LayerNorm(w)
        self.conv_out = nn.Conv2d(w, c.token_size, 1)

    def forward(self, x: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        p = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, G², W]
        cls = self.class_embedding.unsqueeze(0).expand(b, -1, -1)
        p = torch.cat([cls, p], dim=1) + self.positional_embedding
        lat = (latent_tokens + self.latent_token_positional_embedding).unsqueeze(0).expand(b, -1, -1)
        x = self.ln_pre(torch.cat([p, lat], dim=1))
        for blk in self.transformer:
            x = blk(x)
        lat = self.ln_post(x[:, 1 + self.grid * self.grid :])  # [B, K, W]
        lat = lat.reshape(b, self.width, self.num_latent_tokens, 1)  # legacy: reshape, not transpose
        z = self.conv_out(lat)  # [B, d, K, 1]
        return z.flatten(2).transpose(1, 2)  # [B, K, d]


class TiTokDecoder(nn.Module):
    """[B, K, d] quantised tokens -> [B, pixel_codes, G, G] logits over the MaskGIT-VQGAN codes."""

    def __init__(self, c: TiTokConfig):
        super().__init__()
        w, g, k = c.dec_width, c.dec_grid, c.num_latent_tokens
        self.width, self.grid = w, g
        s = w**-0.5
        self.decoder_embed = nn.Linear(c.token_size, w)
        self.class_embedding = nn.Parameter(s * torch.randn(1, w))
        self.positional_embedding = nn.Parameter(s * torch.randn(g * g + 1, w))
        self.mask_token = nn.Parameter(s * torch.randn(1, 1, w))
        self.latent_token_positional_embedding = nn.Parameter(s * torch.randn(k, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = nn.ModuleList(_Block(w, c.dec_heads) for _ in range(c.dec_layers))
        self.ln_post = nn.LayerNorm(w)
        self.ffn = nn.Sequential(nn.Conv2d(w, 2 * w, 1), nn.Tanh(), nn.Conv2d(2 * w, c.pixel_codes, 1))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        b, k, _ = q.shape
        g2 = self.grid * self.grid
        t = self.decoder_embed(q) + self.latent_token_positional_embedding[:k]
        m = (
            torch.cat([self.class_embedding.unsqueeze(0).expand(b, -1, -1), self.mask_token.expand(b, g2, -1)], dim=1)
            + self.positional_embedding
        )
        x = self.ln_pre(torch.cat([m, t], dim=1))
        for blk in self.transformer:
            x = blk(x)
        x = self.ln_post(x[:, 1 : 1 + g2])  # [B, G², W]
        x = x.transpose(1, 2).reshape(b, self.width, self.grid, self.grid)
        return self.ffn(x)


class _Codebook(nn.Module):
    """``quantize.embedding.weight`` [codebook_size, d] (stored unnormalised, used l2-normalised)."""

    def __init__(self, n: int, d: int):
        super().__init__()
        self.embedding = nn.Embedding(n, d)


class TiTokTokenizer(nn.Module):
    """A first-generation TiTok tokenizer; ``state_dict()`` keys and shapes equal the published files'.

    RGB API (the official one): ``tokenize(x)`` -> ids, ``decode_ids(ids)`` -> image, x in [0, 1].
    Luminance API (the fusion token pathway): ``encode_luma`` / ``decode_luma`` (see their docs).
    """

    def __init__(self, cfg: TiTokConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = TiTokEncoder(cfg)
        self.decoder = TiTokDecoder(cfg)
        self.latent_tokens = nn.Parameter(cfg.enc_width**-0.5 * torch.randn(cfg.num_latent_tokens, cfg.enc_width))
        self.quantize = _Codebook(cfg.codebook_size, cfg.token_size)
        self.pixel_quantize = PixelCodebook(cfg.pixel_codes, cfg.pixel_z_channels)
        self.pixel_decoder = PixelDecoder(
            cfg.pixel_z_channels, cfg.pixel_hidden_channels, cfg.pixel_channel_mult, cfg.pixel_num_res_blocks
        )

    # --- RGB API --------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] RGB in [0, 1] -> [B, K, d] continuous tokens (before normalisation)."""
        return self.encoder(x, self.latent_tokens)

    def codebook_n(self) -> torch.Tensor:
        return l2norm(self.quantize.embedding.weight)

    def quantize_tokens(self, z: torch.Tensor, cb: torch.Tensor | None = None):
        """[B, K, d] continuous -> (ids int64 [B, K], q [B, K, d] l2-normalised codes)."""
        cb = self.codebook_n() if cb is None else cb
        return quantize(l2norm(z), cb)

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] RGB in [0, 1] -> ids int64 [B, K]."""
        return self.quantize_tokens(self.encode(x))[0]

    def code_logits(self, q: torch.Tensor) -> torch.Tensor:
        """[B, K, d] codes -> [B, pixel_codes, G, G] logits of the ViT decoder."""
        return self.decoder(q)

    def decode(self, q: torch.Tensor) -> torch.Tensor:
        """[B, K, d] codes -> [B, 3, S, S] RGB, not clamped (clamp to [0, 1] for display)."""
        return self.pixel_decoder(self.pixel_quantize.mix(self.decoder(q)))

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, K] -> [B, 3, S, S] RGB, not clamped."""
        return self.decode(self.codebook_n()[ids])

    # --- luminance API (token pathway of a fusion model) ----------------------------------------------
    def encode_luma(self, y: torch.Tensor) -> torch.Tensor:
        """[B, 1, S, S] luminance in [0, 1] -> [B, K, d]: the gray image replicated to R = G = B."""
        return self.encode(y.expand(-1, 3, -1, -1))

    def decode_luma(self, q: torch.Tensor) -> torch.Tensor:
        """[B, K, d] codes -> [B, 1, S, S] base map: the decoded RGB clamped to [0, 1], then its
        Rec. 601 luminance (0.299 R + 0.587 G + 0.114 B)."""
        rgb = self.decode(q).clamp(0.0, 1.0)
        return rgb[:, 0:1] * _LUMA[0] + rgb[:, 1:2] * _LUMA[1] + rgb[:, 2:3] * _LUMA[2]


# ---------------------------------------------------------------------------------------------------
# Loading the published files
# ---------------------------------------------------------------------------------------------------
_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TiTokError(f"TiTok config {path} cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise TiTokError(f"TiTok config {path} is not a JSON object")
    return data


def read_state_dict(path) -> dict:
    """Tensors of a TiTok weights file: ``.safetensors``, or a PyTorch ``.bin``/``.pt``/``.pth`` read with
    ``torch.load(weights_only=True)`` (no code runs). Raises FileNotFoundError / TiTokError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"TiTok weights not found: {path}")
    if path.stat().st_size == 0:
        raise TiTokError(f"TiTok weights {path} are empty")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise TiTokError(f"TiTok weights {path} are corrupt or not a safetensors file: {e}") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError (bad zip), EOFError, ...: all mean unreadable
        raise TiTokError(
            f"TiTok weights {path} cannot be read as a PyTorch state dict "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TiTokError(f"TiTok weights {path} do not hold a state dict of tensors")
    return state


def _infer_preset(state: dict, path: Path) -> dict:
    """Which released tokenizer a bare weights file is, from its shapes (width and token count)."""
    try:
        w = state["encoder.patch_embed.weight"].shape[0]
        k = state["latent_tokens"].shape[0]
    except (KeyError, IndexError, AttributeError):
        raise TiTokError(
            f"{path} is not a TiTok tokenizer (no encoder.patch_embed.weight / latent_tokens); pass its config.json"
        ) from None
    for name, p in PRESETS.items():
        if MODEL_SIZES[p["vit_enc_model_size"]][0] == w and p["num_latent_tokens"] == k:
            return official_config(name)
    raise TiTokError(
        f"{path}: encoder width {w} with {k} latent tokens matches none of the released "
        f"tokenizers {sorted(PRESETS)}; pass its config.json"
    )


def resolve_files(path, config=None) -> tuple[Path, dict]:
    """(weights file, official config dict) for ``path``: a folder with ``config.json`` +
    ``model.safetensors`` (or ``pytorch_model.bin``), or a weights file. ``config``: a dict, a
    ``config.json`` path or a preset name; default: ``config.json`` beside the weights, else the
    released tokenizer whose shapes the weights have."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"TiTok tokenizer not found: {path}")
    if path.is_dir():
        weights = next((path / n for n in _WEIGHT_NAMES if (path / n).exists()), None)
        if weights is None:
            raise TiTokError(f"TiTok folder {path} has none of {list(_WEIGHT_NAMES)}")
    else:
        weights = path
    if config is None:
        side = weights.parent / "config.json"
        config = side if side.exists() else None
    if isinstance(config, (str, Path)) and Path(config).suffix == ".json":
        if not Path(config).exists():
            raise FileNotFoundError(f"TiTok config not found: {config}")
        config = _read_json(Path(config))
    elif isinstance(config, str):
        config = official_config(config)
    return weights, config


def check_state_dict(model: nn.Module, state: dict, source) -> None:
    """Raise TiTokError naming missing/unexpected keys, shape mismatches or non-finite values."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise TiTokError(
            f"TiTok weights {source} do not match the configured architecture: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    for k, t in state.items():
        if tuple(t.shape) != tuple(expected[k].shape):
            raise TiTokError(
                f"TiTok weights {source}: {k} has shape {tuple(t.shape)}, the config expects {tuple(expected[k].shape)}"
            )
        if not t.is_floating_point():
            raise TiTokError(f"TiTok weights {source}: {k} has dtype {t.dtype}, expected floating point")
        if not torch.isfinite(t).all():
            raise TiTokError(f"TiTok weights {source}: {k} contains NaN or inf")


def load_titok(path, config=None) -> TiTokTokenizer:
    """Load a published TiTok tokenizer (frozen, eval mode, float32). See ``resolve_files``."""
    weights, cfg_dict = resolve_files(path, config)
    state = read_state_dict(weights)
    if cfg_dict is None:
        cfg_dict = _infer_preset(state, weights)
    cfg = TiTokConfig.from_official(cfg_dict)
    with torch.device("meta"):
        model = TiTokTokenizer(cfg)
    check_state_dict(model, state, weights)
    model = model.to_empty(device="cpu")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.requires_grad_(False)
    return model.eval()


def state_digest(model: nn.Module) -> str:
    """SHA-256 over the names, shapes and float32 bytes of a module's tensors (provenance of a tokenizer)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Fusion models on a TiTok token pathway
# ---------------------------------------------------------------------------------------------------
# TokFuseConfig fields set by the TiTok tokenizer (the others configure the fusion part).
