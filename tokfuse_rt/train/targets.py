"""The training targets, in one place: the pixel rules that stage II trains each head towards (the image's
own tone, ``target_tone``; the "tone" head's rule ``tone_rule``; the "layers" head's ``layers_mix`` and
``layers_rule``, which the bundled model trains towards; the "blend" head's ``contrast_target``). Choosing
a rule is an experiment made on val/ (docs/model.md); the losses that use them are in ``losses``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def layers_mix(ir, vis, a, c, radius: int, ir_detail: float, vis_detail: float = 1.0) -> torch.Tensor:
    """m of the "layers" rule (``tokfuse_rt.model.layers``) with a hard max: (1 − a)·max(L_ir, L_vis) +
    a·clamp(L_ir + L_vis − c, 0, 1) + ``vis_detail``·D_vis + ``ir_detail``·D_ir, L = box_blur(·,
    ``radius``) and D = source − L. a, c: numbers or [B, 1, 1, 1]; ir, vis [B, 1, H, W] in [0, 1]."""
    from ..model.layers import box_blur

    low = box_blur(torch.cat([ir, vis], dim=1), radius)
    l_ir, l_vis = low[:, :1], low[:, 1:]
    m = (1.0 - a) * torch.maximum(l_ir, l_vis) + a * (l_ir + l_vis - c).clamp(0.0, 1.0)
    return m + vis_detail * (vis - l_vis) + ir_detail * (ir - l_ir)


def target_tone(
    ir: torch.Tensor,
    vis: torch.Tensor,
    alpha: float = 0.0,
    gain: float = 1.0,
    sd: float = 0.0,
    gain_max: float = 2.0,
    layers: tuple[int, float, float] | None = None,
) -> torch.Tensor:
    """The tone [B, 4] = (g, a, mu, c) of :func:`tone_rule` (or, with ``layers`` = (radius,
    ir_detail, vis_detail), of :func:`layers_rule`) that the training target uses, per image.

    c = (mean(ir) + mean(vis)) / 2; a = ``alpha``; mu = mean of m = (1 − a)·max(ir, vis) +
    a·clamp(ir + vis − c, 0, 1) (:func:`layers_mix` with ``layers``); g = ``gain``, or with ``sd`` > 0
    the gain that brings m's standard deviation to ``sd``, clamped to [1, ``gain_max``].
    ir, vis: [B, 1, H, W] in [0, 1].
    """

    def mean(t):  # per image -> [B]
        return t.mean(dim=(-3, -2, -1))

    c = 0.5 * (mean(ir) + mean(vis))
    if layers is not None:
        m = layers_mix(ir, vis, alpha, c[:, None, None, None], *layers)
    else:
        m = torch.maximum(ir, vis)
        if alpha:
            m = (1.0 - alpha) * m + alpha * (ir + vis - c[:, None, None, None]).clamp(0.0, 1.0)
    if sd:
        g = (sd / m.flatten(1).std(dim=1, unbiased=False).clamp_min(1e-6)).clamp(1.0, gain_max)
    else:
        g = torch.full_like(c, gain)
    return torch.stack([g, torch.full_like(c, alpha), mean(m), c], dim=1)


def tone_rule(
    ir: torch.Tensor,
    vis: torch.Tensor,
    tone: torch.Tensor,
    roll_off: bool = True,
    vis_detail: float = 0.0,
    detail_where: str = "all",
) -> torch.Tensor:
    """The pixel rule of the "tone" head with a hard max (``tokfuse_rt.model.tone``):
    knee(mu + g·(m − mu)), m = (1 − a)·max(ir, vis) + a·clamp(ir + vis − c, 0, 1); with
    ``roll_off=False`` clamp(·, 0, 1) instead of the knee.

    ``vis_detail`` = β > 0 adds β·(vis − mean3×3(vis)) to m (the visible image's 3×3 high-pass,
    replicate padding): visible texture kept where the selection took the infrared. ``detail_where``
    "all" adds it everywhere, "ir" only where ir > vis. β = 0 is the rule above exactly.

    ir, vis [B, 1, H, W] in [0, 1]; tone [B, 4] = (g, a, mu, c).
    """
    g, a, mu, c = (t[:, None, None, None] for t in tone.unbind(dim=1))
    from ..model.tone import knee

    if detail_where not in ("all", "ir"):
        raise ValueError(f"detail_where must be 'all' or 'ir', got {detail_where!r}")
    m = (1.0 - a) * torch.maximum(ir, vis) + a * (ir + vis - c).clamp(0.0, 1.0)
    if vis_detail:
        hp = vis - F.avg_pool2d(F.pad(vis, (1, 1, 1, 1), mode="replicate"), 3, 1)
        m = m + vis_detail * (hp if detail_where == "all" else hp * (ir > vis).to(hp.dtype))
    y = mu + g * (m - mu)
    return knee(y) if roll_off else y.clamp(0.0, 1.0)


def layers_rule(
    ir: torch.Tensor, vis: torch.Tensor, tone: torch.Tensor, radius: int, ir_detail: float, vis_detail: float = 1.0
) -> torch.Tensor:
    """The pixel rule of the "layers" head with a hard max (``tokfuse_rt.model.layers``):
    knee(mu + g·(m − mu)), m = :func:`layers_mix` (detail gains ``vis_detail``, ``ir_detail``).
    ir, vis [B, 1, H, W] in [0, 1]; tone [B, 4] = (g, a, mu, c)."""
    from ..model.tone import knee

    g, a, mu, c = (t[:, None, None, None] for t in tone.unbind(dim=1))
    return knee(mu + g * (layers_mix(ir, vis, a, c, radius, ir_detail, vis_detail) - mu))


def contrast_target(ir: torch.Tensor, vis: torch.Tensor, gain: float = 1.0, alpha: float = 0.0) -> torch.Tensor:
    """Intensity target of the "blend" head in [0, 1]: :func:`tone_rule` at the tone of
    :func:`target_tone` (fixed ``gain``; a mix of max(ir, vis) (weight 1 − ``alpha``) and the additive
    composite ir + vis − (mean(ir) + mean(vis)) / 2, its contrast about its mean scaled by ``gain``).

    ir, vis: [B, 1, H, W] in [0, 1].  gain=1, alpha=0 gives max(ir, vis) exactly.
    """
    if gain == 1.0 and not alpha:
        return torch.maximum(ir, vis)
    return tone_rule(ir, vis, target_tone(ir, vis, alpha, gain), roll_off=False)
