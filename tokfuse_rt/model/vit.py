"""TiTok-style 1D tokenizer: a ViT encoder with K latent tokens and a ViT decoder π.

Shapes: B batch, S image_size, P patch_size, G = S/P grid, L = G² patches, K latent tokens,
W width, d code dim.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TokFuseConfig


class Attention(nn.Module):
    """Multi-head self-attention written with plain matmul/softmax (exports to standard ONNX ops)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, W]
        return self.proj(attend(self.qkv(x), self.heads))


def attend(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Scaled dot-product attention over packed projections: qkv [B, T, 3W] (q, k, v blocks of W,
    each split into ``heads`` contiguous slices) -> [B, T, W], before the output projection."""
    b, t, w3 = qkv.shape
    w = w3 // 3
    h = heads
    qkv = qkv.reshape(b, t, 3, h, w // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # [B, h, T, W/h]
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(w // h))
    att = att.softmax(dim=-1)
    return (att @ v).transpose(1, 2).reshape(b, t, w)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def patchify(img: torch.Tensor, p: int) -> torch.Tensor:
    """[B, 1, S, S] -> [B, L, P²]."""
    b, _, s, _ = img.shape
    g = s // p
    x = img.reshape(b, g, p, g, p).permute(0, 1, 3, 2, 4)
    return x.reshape(b, g * g, p * p)


def unpatchify(x: torch.Tensor, p: int, g: int) -> torch.Tensor:
    """[B, L, P²] -> [B, 1, S, S]."""
    b = x.shape[0]
    x = x.reshape(b, g, g, p, p).permute(0, 1, 3, 2, 4)
    return x.reshape(b, 1, g * p, g * p)


class TokenEncoder(nn.Module):
    """[B, 1, S, S] luminance in [0, 1] -> [B, K, d] continuous (not yet normalised) latents."""

    def __init__(self, cfg: TokFuseConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.patch_embed = nn.Linear(cfg.patch_size**2, w)
        self.pos = nn.Parameter(torch.randn(1, cfg.grid**2, w) * 0.02)
        self.latents = nn.Parameter(torch.randn(1, cfg.num_tokens, w) * 0.02)
        self.blocks = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.enc_depth))
        self.norm = nn.LayerNorm(w)
        self.to_code = nn.Linear(w, cfg.code_dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(patchify(img * 2.0 - 1.0, self.cfg.patch_size)) + self.pos
        lat = self.latents.expand(x.shape[0], -1, -1)
        x = torch.cat([x, lat], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.to_code(self.norm(x[:, -self.cfg.num_tokens :]))


class TokenDecoder(nn.Module):
    """π: [B, K, d] quantised tokens -> [B, 1, S, S] base map (mask tokens + token embeddings)."""

    def __init__(self, cfg: TokFuseConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.token_embed = nn.Linear(cfg.code_dim, w)
        self.token_pos = nn.Parameter(torch.randn(1, cfg.num_tokens, w) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos = nn.Parameter(torch.randn(1, cfg.grid**2, w) * 0.02)
        self.blocks = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.dec_depth))
        self.norm = nn.LayerNorm(w)
        self.to_pixels = nn.Linear(w, cfg.patch_size**2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        t = self.token_embed(z) + self.token_pos
        m = self.mask_token.expand(b, self.cfg.grid**2, -1) + self.pos
        x = torch.cat([m, t], dim=1)
        for blk in self.blocks:
            x = blk(x)
        pix = self.to_pixels(self.norm(x[:, : self.cfg.grid**2]))
        return unpatchify(pix, self.cfg.patch_size, self.cfg.grid) * 0.5 + 0.5
