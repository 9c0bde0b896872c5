"""Shared tokens and Selective Token Editing (STE).

Shapes: B batch, K tokens, d code dim. ``ctx`` is the sequence context [B, 2d]: the mean of the
quantised infrared tokens and the mean of the quantised visible tokens, concatenated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TokFuseConfig
from .quant import l2norm, quantize


class TokenMixer(nn.Module):
    """(Z_ir, Z_vis) [B, K, d] each -> K shared latents [B, K, d] (unnormalised).

    A per-token MLP over the concatenated pair plus one token-mixing layer across the K positions.
    """

    def __init__(self, cfg: TokFuseConfig):
        super().__init__()
        d, h, k = cfg.code_dim, cfg.mixer_hidden, cfg.num_tokens
        self.inp = nn.Linear(2 * d, h)
        self.tok = nn.Linear(k, k)
        self.out = nn.Linear(h, d)
        nn.init.zeros_(self.tok.weight)
        nn.init.zeros_(self.tok.bias)

    def forward(self, z_ir: torch.Tensor, z_vis: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.inp(torch.cat([z_ir, z_vis], dim=-1)))
        x = x + self.tok(x.transpose(1, 2)).transpose(1, 2)
        return self.out(x) + 0.5 * (z_ir + z_vis)


def topk_mask(scores: torch.Tensor, k) -> torch.Tensor:
    """Boolean [B, K]: True for the k highest scores per row, ties to the lowest index.

    Rank-based (rank_i = #{j: s_j > s_i or (s_j == s_i and j < i)}), so it is exact for any
    k in [0, K], k may be a 0-d tensor, and it exports to plain ONNX comparisons.
    """
    n = scores.shape[-1]
    si = scores.unsqueeze(-1)  # [B, K, 1]
    sj = scores.unsqueeze(-2)  # [B, 1, K]
    idx = torch.arange(n, device=scores.device)
    earlier = idx.unsqueeze(0) < idx.unsqueeze(1)  # [K(i), K(j)]: j < i
    beats = (sj > si) | ((sj == si) & earlier)
    rank = beats.sum(dim=-1)
    return rank < k


class SelectiveTokenEditing(nn.Module):
    """Score the shared tokens, edit only the top-k: z' = normalise(z + sigmoid(s)·edit([z, ctx])),
    re-quantise; every other token passes through bit-for-bit."""

    def __init__(self, cfg: TokFuseConfig):
        super().__init__()
        d = cfg.code_dim
        self.score = nn.Sequential(nn.Linear(3 * d, cfg.score_hidden), nn.GELU(), nn.Linear(cfg.score_hidden, 1))
        self.edit_fc1 = nn.Linear(3 * d, cfg.edit_hidden)
        self.edit_fc2 = nn.Linear(cfg.edit_hidden, d)
        nn.init.normal_(self.edit_fc2.weight, std=1e-3)
        nn.init.zeros_(self.edit_fc2.bias)

    def scores(self, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """[B, K, d], [B, 2d] -> [B, K]."""
        c = ctx.unsqueeze(1).expand(-1, z.shape[1], -1)
        return self.score(torch.cat([z, c], dim=-1)).squeeze(-1)

    def edit(self, z: torch.Tensor, ctx: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The edited, l2-normalised (not yet re-quantised) tokens: z [..., K, d] with ctx [..., 2d]
        (one context per sequence), or z [N, d] with ctx [N, 2d] (one context per token)."""
        if ctx.ndim == z.ndim - 1:
            ctx = ctx.unsqueeze(-2).expand(*z.shape[:-1], ctx.shape[-1])
        e = self.edit_fc2(torch.relu(self.edit_fc1(torch.cat([z, ctx], dim=-1))))
        return l2norm(z + torch.sigmoid(scores).unsqueeze(-1) * e)

    def forward(self, z: torch.Tensor, ids: torch.Tensor, ctx: torch.Tensor, codebook_n: torch.Tensor, k):
        """z [B, K, d] quantised shared tokens, ids [B, K]; returns (z_out, ids_out, scores)."""
        s = self.scores(z, ctx)
        if self._use_kernel(z):
            from ..kernels.token_edit import token_edit

            z_out, ids_out = token_edit(z, ids, s, ctx, self, codebook_n, int(k))
            return z_out, ids_out.to(ids.dtype), s
        sel = topk_mask(s, k)
        z_new = self.edit(z, ctx, s)
        new_ids, q_new = quantize(z_new, codebook_n)
        if self.training:
            q_new = z_new + (q_new - z_new).detach()  # straight-through
        m = sel.unsqueeze(-1)
        return torch.where(m, q_new, z), torch.where(sel, new_ids, ids), s

    def _use_kernel(self, z: torch.Tensor) -> bool:
        """The fused Triton kernel runs in inference when the resolved backend is "triton"."""
        from .quant import resolve_backend

        return not (self.training or z.requires_grad) and resolve_backend(z.device) == "triton"
