"""The MaskGIT-VQGAN pixel decoder used by the first-generation TiTok tokenizers (L-32, B-64, S-128).

TiTok's ViT decoder predicts, for every cell of a G×G grid, logits over the 1024 codes of a frozen
MaskGIT-VQGAN; the softmax-weighted mixture of those codes (a [B, 256, G, G] feature map) goes through
this convolutional decoder, which upsamples by 2^(levels - 1) to RGB. Parameter names and shapes are
those of the published checkpoints (``pixel_quantize.*``, ``pixel_decoder.*``), so the files load
unchanged.

Behaviour the published weights depend on, kept exactly:
  * every 3×3 convolution pads one pixel on each side ("same" padding at stride 1);
  * GroupNorm with 32 groups and eps = 1e-6; SiLU activations; no attention layers;
  * in a residual block whose input and output widths differ, the 1×1 shortcut is applied to the
    block's *output* (``h + shortcut(h)``), not to its input -- that is how the weights were trained;
  * upsampling is nearest-neighbour ×2 followed by a 3×3 convolution.

Shapes: B batch, C channels, G grid, S = G · 2^(levels - 1) output side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(c: int) -> nn.GroupNorm:
    if c % 32:
        raise ValueError(f"MaskGIT-VQGAN decoder widths must be multiples of 32 (GroupNorm groups), got {c}")
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm -> SiLU -> conv3×3 -> norm -> SiLU -> conv3×3, plus the shortcut described above."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cout, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.nin_shortcut(h) if self.cin != self.cout else x)


class UpBlock(nn.Module):
    """Level ``j`` of the decoder: residual blocks at width hidden·mult[j], then ×2 (except level 0)."""

    def __init__(self, hidden: int, mult: tuple, num_res_blocks: int, j: int):
        super().__init__()
        cin = hidden * (mult[-1] if j == len(mult) - 1 else mult[j + 1])
        cout = hidden * mult[j]
        blocks = []
        for _ in range(num_res_blocks):
            blocks.append(ResnetBlock(cin, cout))
            cin = cout
        self.block = nn.ModuleList(blocks)
        self.upsample = j != 0
        if self.upsample:
            self.upsample_conv = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.block:
            x = blk(x)
        if self.upsample:
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class PixelDecoder(nn.Module):
    """[B, z_channels, G, G] code features -> [B, 3, S, S] RGB (not clamped)."""

    def __init__(self, z_channels: int = 256, hidden: int = 128, mult=(1, 1, 2, 2, 4), num_res_blocks: int = 2):
        super().__init__()
        mult = tuple(int(m) for m in mult)
        top = hidden * mult[-1]
        self.conv_in = nn.Conv2d(z_channels, top, 3, padding=1)
        self.mid = nn.ModuleList(ResnetBlock(top, top) for _ in range(num_res_blocks))
        self.up = nn.ModuleList(UpBlock(hidden, mult, num_res_blocks, j) for j in range(len(mult)))
        self.norm_out = _norm(hidden * mult[0])
        self.conv_out = nn.Conv2d(hidden * mult[0], 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for blk in self.mid:
            x = blk(x)
        for j in reversed(range(len(self.up))):  # coarsest level first
            x = self.up[j](x)
        return self.conv_out(F.silu(self.norm_out(x)))


class PixelCodebook(nn.Module):
    """The VQGAN's code embeddings (``pixel_quantize.embedding.weight`` [codes, z_channels])."""

    def __init__(self, codes: int = 1024, z_channels: int = 256):
        super().__init__()
        self.embedding = nn.Embedding(codes, z_channels)

    def mix(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, codes, G, G] logits -> [B, z_channels, G, G]: softmax over the codes, weighted sum of embeddings."""
        p = logits.softmax(dim=1)
        b, n, h, w = p.shape
        e = self.embedding.weight  # [codes, z]
        y = torch.matmul(p.reshape(b, n, h * w).transpose(1, 2), e)  # [B, G², z]
        return y.transpose(1, 2).reshape(b, e.shape[1], h, w)
