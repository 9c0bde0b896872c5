"""The "layers" fusion head: the tone of the "tone" head over a base/detail decomposition, so the
visible texture survives where the infrared base is selected.

Shapes: B batch, H×W full resolution, r = ``cfg.base_radius``.

Token half: :class:`tokfuse_rt.model.tone.ToneHead` (the K shared tokens -> the image's tone
g, a, mu, c, see there).

Render half (:class:`LayersRender`), per pixel, with A = ir, B = vis in [0, 1]:

    L_A, L_B = blur(A), blur(B)            base layers: two passes of a (2r+1)² box filter,
    D_A, D_B = A − L_A, B − L_B            replicate padding; detail layers
    w    = sigmoid(tau · (L_A − L_B) + delta)      soft selection of the brighter base
    sel  = w·L_A + (1 − w)·L_B
    add  = clamp(L_A + L_B − c, 0, 1)
    m    = (1 − a)·sel + a·add + g_B·D_B + g_A·D_A
    F    = knee(mu + g·(m − mu) + res)

The selection and the additive composite act on the base layers only; the detail of the visible
image (gain g_B, ~1) is added everywhere and the infrared detail at a smaller gain g_A, so a hot
region takes the infrared level with the visible texture on top of it. delta and res come from 3×3
convolutions over the detail features, the token base map and the sources (zero at
initialisation); tau, g_A and g_B are learned scalars. With delta = res = 0 this is
``tokfuse_rt.train.targets.layers_rule``, the training target. Every output pixel depends on the
sources within 2r pixels (the blur) and on the convolutions' 3 pixels, nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TokFuseConfig
from .head import HeadConvs, split_base
from .tone import knee


def box_blur(x: torch.Tensor, radius: int, passes: int = 2) -> torch.Tensor:
    """``passes`` × mean over a (2·radius+1)² window, replicate padding; [B, C, H, W] -> same shape.
    Separable (a row mean, then a column mean): 2·(2r+1) reads per pixel and pass instead of (2r+1)²."""
    n = 2 * radius + 1
    for _ in range(passes):
        x = F.avg_pool2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), (1, n), 1)
        x = F.avg_pool2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), (n, 1), 1)
    return x


class LayersRender(HeadConvs):
    """[D, base_up, ir, vis] -> fused luminance in [0, 1] (rule in the module docstring).

    ``base_up`` [B, 5, H, W]: channel 0 the token decoder's base map, channels 1..4 the tone
    (g, a, mu, c) (constant over the image).
    """

    def __init__(self, cfg: TokFuseConfig):
        super().__init__(cfg)
        self.radius = cfg.base_radius
        self.tau = nn.Parameter(torch.tensor(40.0))
        self.gain_vis = nn.Parameter(torch.tensor(1.0))
        self.gain_ir = nn.Parameter(torch.tensor(0.3))

    def forward(self, d, base_up, ir, vis):
        return self.rule(self.corrections(d, split_base(base_up)[0], ir, vis), base_up, ir, vis)

    def rule(self, y, base_up, ir, vis):
        """The per-pixel rule given the corrections ``y`` [B, 2, H, W]."""
        _, g, a, mu, c = split_base(base_up)
        low = box_blur(torch.cat([ir, vis], dim=1), self.radius)
        l_ir, l_vis = low[:, :1], low[:, 1:]
        w = torch.sigmoid(self.tau * (l_ir - l_vis) + y[:, :1])
        sel = w * l_ir + (1.0 - w) * l_vis
        add = (l_ir + l_vis - c).clamp(0.0, 1.0)
        m = (1.0 - a) * sel + a * add + self.gain_vis * (vis - l_vis) + self.gain_ir * (ir - l_ir)
        return knee(mu + g * (m - mu) + y[:, 1:2])
