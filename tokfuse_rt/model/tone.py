"""The "tone" fusion head: the shared 1D tokens set the fused image's global tone, the 2D half
selects and adds the sources under it.

Shapes: B batch, K tokens, d code dim, H×W full resolution, S token-pathway size.

Token half (:class:`ToneHead`): the K shared tokens after STE, flattened in token order, go through
an MLP to four numbers per image -- the tone:

    g   contrast gain in [1, 2]            mu  mean level in [0, 1]
    a   additive share in [0, 1]           c   additive offset in [0, 1]

Render half (:class:`ToneRender`), per pixel, with A = ir, B = vis in [0, 1]:

    w    = sigmoid(tau · (A − B) + delta)        soft selection of the brighter source
    sel  = w·A + (1 − w)·B
    add  = clamp(A + B − c, 0, 1)                 additive composite
    m    = (1 − a)·sel + a·add
    F    = knee(mu + g·(m − mu) + r)

knee(x) rolls highlights off instead of clipping them: x below KNEE, KNEE + (1 − KNEE)·tanh((x −
KNEE) / (1 − KNEE)) above it (continuous with slope 1, never above 1), clamped at 0 below.

delta (selection correction) and r (residual) come from 3×3 convolutions over the detail features,
the token base map and the sources; tau is a learned scalar. With delta = r = 0 and tau large this is
the pixel rule "max(A, B) mixed with the additive composite, its contrast about mu scaled by g" --
the rule the training target uses, with g, mu and c computed from the image (see
``tokfuse_rt.train.targets.contrast_target``). The tone is global, so it comes from the tokens, which
see the whole image; the render half has only 3×3 context.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import TokFuseConfig
from .head import HeadConvs, split_base

TONE_CHANNELS = ("g", "a", "mu", "c")
KNEE = 0.9
# tone at initialisation (before training): gain 1.25, additive share 0.5, mean 0.45, offset 0.4
_INIT = (0.25, 0.5, 0.45, 0.4)


def knee(x: torch.Tensor) -> torch.Tensor:
    """Highlight roll-off to [0, 1) above KNEE (see the module docstring); clamp at 0 below."""
    hi = KNEE + (1.0 - KNEE) * torch.tanh((x - KNEE) / (1.0 - KNEE))
    return torch.where(x > KNEE, hi, x.clamp_min(0.0))


def _logit(p: float) -> float:
    return float(torch.logit(torch.tensor(p, device="cpu")))  # a number, also while a model is built on "meta"


class ToneHead(nn.Module):
    """Shared tokens z [B, K, d] -> tone [B, 4] = (g, a, mu, c) (ranges in the module docstring)."""

    def __init__(self, cfg: TokFuseConfig):
        super().__init__()
        h = cfg.tone_hidden
        self.fc1 = nn.Linear(cfg.num_tokens * cfg.code_dim, h)
        self.fc2 = nn.Linear(h, len(TONE_CHANNELS))
        nn.init.normal_(self.fc2.weight, std=1e-3)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor([_logit(p) for p in _INIT]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(self.fc2(torch.nn.functional.gelu(self.fc1(z.flatten(1)))))
        return torch.cat([1.0 + t[:, :1], t[:, 1:]], dim=1)


class ToneRender(HeadConvs):
    """[D, base_up, ir, vis] -> fused luminance in [0, 1].

    ``base_up`` [B, 5, H, W]: channel 0 the token decoder's base map, channels 1..4 the tone
    (g, a, mu, c) (constant over the image).
    """

    def __init__(self, cfg: TokFuseConfig):
        super().__init__(cfg)
        self.tau = nn.Parameter(torch.tensor(40.0))

    def forward(self, d, base_up, ir, vis):
        return self.rule(self.corrections(d, split_base(base_up)[0], ir, vis), base_up, ir, vis)

    def rule(self, y, base_up, ir, vis):
        """The per-pixel rule given the corrections ``y`` [B, 2, H, W]."""
        _, g, a, mu, c = split_base(base_up)
        w = torch.sigmoid(self.tau * (ir - vis) + y[:, :1])
        sel = w * ir + (1.0 - w) * vis
        add = (ir + vis - c).clamp(0.0, 1.0)
        m = (1.0 - a) * sel + a * add
        return knee(mu + g * (m - mu) + y[:, 1:2])
