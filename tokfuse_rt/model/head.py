"""The convolutions every fusion head starts with (shared by the "blend" and "tone" heads)."""

from __future__ import annotations

import torch
from torch import nn

from .config import TokFuseConfig


def split_base(base_up):
    """(b, g, a, mu, c) of a "tone"/"layers" head's base input: a tensor [B, 5, H, W] (the render half's
    input: the base map and the four tone values upsampled), or a pair (base map [B, 1, H, W], tone
    [B, 4, 1, 1]) that broadcasts the tone instead of upsampling four constant maps (the whole model)."""
    if isinstance(base_up, (tuple, list)):
        b, tone = base_up
        return (b, *tone.split(1, dim=1))
    return base_up.split(1, dim=1)


class HeadConvs(nn.Module):
    """[D, base, ir, vis] -> two correction maps [B, 2, H, W]: a 3×3 convolution over the detail
    features, one base-map channel and the sources, ReLU, a 1×1 convolution (zero at initialisation,
    so an untrained head starts from its pixel rule)."""

    def __init__(self, cfg: TokFuseConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(cfg.detail_channels + 3, cfg.head_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(cfg.head_channels, 2, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def corrections(self, d, base, ir, vis) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(torch.cat([d, base, ir, vis], dim=1))))
