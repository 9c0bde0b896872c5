"""Unsupervised training losses: the fusion terms (intensity, gradient, SSIM, optional VIF and SCD) of the "blend"
head and the tone-target terms of the "tone" and "layers" heads (:func:`fusion_losses`, :func:`tone_losses`). The
pixel rules the losses aim at are in :mod:`tokfuse_rt.train.targets`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .targets import contrast_target, layers_mix, layers_rule, target_tone, tone_rule  # noqa: F401 - re-exported

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_mag(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of [B, 1, H, W] (replicate padding)."""
    k = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1).to(x)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    return g.abs().sum(dim=1, keepdim=True)


def ssim(x: torch.Tensor, y: torch.Tensor, win: int = 11, c1: float = 0.01**2, c2: float = 0.03**2):
    """Mean SSIM with a uniform window, images in [0, 1]."""
    mu_x = F.avg_pool2d(x, win, 1)
    mu_y = F.avg_pool2d(y, win, 1)
    sxx = F.avg_pool2d(x * x, win, 1) - mu_x**2
    syy = F.avg_pool2d(y * y, win, 1) - mu_y**2
    sxy = F.avg_pool2d(x * y, win, 1) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean()


def _valid(x: torch.Tensor, g: torch.Tensor, step: int = 1) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of [B, C, H, W], every ``step``-th output kept."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), stride=(step, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), stride=(1, step), groups=c)


def vifp(refs: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Differentiable multi-scale pixel VIF of ``dist`` against each reference channel
    (refs [B, R, H, W], dist [B, 1, H, W], both in [0, 1] -> [B, R]).

    Same scales, windows, noise variance and eps as :func:`tokfuse_rt.metrics.vif.vifp` (images
    taken to the 0..255 scale; the dist-only maps are filtered once for all references, as there);
    its hard masks become clamps (g ≥ 0, s1, s2 ≥ 0, sv ≥ eps) so the gradient exists everywhere.
    A scale whose window no longer fits is skipped, as in the metric (all four fit from 41² up;
    training crops are 128²); an image smaller than 17² gives 0, not the metric's 1.
    """
    from tokfuse_rt.metrics.vif import EPS, SIGMA_NSQ, gaussian_window_1d

    r_n = refs.shape[1]
    x = torch.cat([refs, dist], dim=1) * 255.0
    num = torch.zeros(x.shape[0], r_n, dtype=x.dtype, device=x.device)
    den = torch.zeros_like(num)
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        g = torch.from_numpy(gaussian_window_1d(n)).to(x)
        if scale > 1:
            x = _valid(x, g, step=2)
        if min(x.shape[-2:]) < n:
            break
        r, d = x[:, :r_n], x[:, r_n:]
        f = _valid(torch.cat([x, x * x, r * d], dim=1), g)
        mu1, mu2 = f[:, :r_n], f[:, r_n : r_n + 1]
        e11, e22, e12 = f[:, r_n + 1 : 2 * r_n + 1], f[:, 2 * r_n + 1 : 2 * r_n + 2], f[:, 2 * r_n + 2 :]
        s1 = (e11 - mu1 * mu1).clamp_min(0)
        s2 = (e22 - mu2 * mu2).clamp_min(0)
        s12 = e12 - mu1 * mu2
        gg = (s12 / (s1 + EPS)).clamp_min(0)
        sv = (s2 - gg * s12).clamp_min(EPS)
        num = num + torch.log10(1 + gg * gg * s1 / (sv + SIGMA_NSQ)).sum(dim=(-2, -1))
        den = den + torch.log10(1 + s1 / SIGMA_NSQ).sum(dim=(-2, -1))
    return num / den.clamp_min(EPS)


def scd(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """corr(ir, fused − vis) + corr(vis, fused − ir) per image ([B, 1, H, W] -> [B])."""

    def corr(a, b):
        a = a - a.mean(dim=(-2, -1), keepdim=True)
        b = b - b.mean(dim=(-2, -1), keepdim=True)
        return (a * b).sum(dim=(1, 2, 3)) / ((a * a).sum(dim=(1, 2, 3)) * (b * b).sum(dim=(1, 2, 3))).clamp_min(
            1e-12
        ).sqrt()

    return corr(ir, fused - vis) + corr(vis, fused - ir)


def fusion_losses(fused, ir, vis, w_int=1.0, w_grad=10.0, w_ssim=1.0, gain=1.0, alpha=0.0, w_vif=0.0, w_scd=0.0):
    """Dict of weighted loss terms and their sum under 'total'.

    int: L1 to :func:`contrast_target`; grad: L1 of Sobel magnitudes to ``gain`` × the larger source
    gradient; ssim: 1 − mean SSIM to the two sources; vif: 1 − mean of :func:`vifp` of the fused
    image against each source; scd: 1 − :func:`scd` / 2.  Terms with weight 0 are not computed.
    """
    l_int = F.l1_loss(fused, contrast_target(ir, vis, gain, alpha))
    l_grad = F.l1_loss(sobel_mag(fused), gain * torch.maximum(sobel_mag(ir), sobel_mag(vis)))
    l_ssim = 1.0 - 0.5 * (ssim(fused, ir) + ssim(fused, vis))
    total = w_int * l_int + w_grad * l_grad + w_ssim * l_ssim
    out = {"int": l_int, "grad": l_grad, "ssim": l_ssim}
    if w_vif:
        out["vif"] = 1.0 - 0.5 * vifp(torch.cat([ir, vis], dim=1), fused).sum(dim=1).mean()
        total = total + w_vif * out["vif"]
    if w_scd:
        out["scd"] = 1.0 - 0.5 * scd(fused, ir, vis).mean()
        total = total + w_scd * out["scd"]
    return {"total": total} | out


def tone_losses(
    fused,
    tone,
    ir,
    vis,
    alpha=0.5,
    sd=55 / 255,
    gain_max=2.0,
    w_int=1.0,
    w_grad=10.0,
    w_ssim=1.0,
    w_tone=1.0,
    grad_target="target",
    vis_detail=0.0,
    detail_where="all",
    layers: tuple[int, float, float] | None = None,
):
    """Loss terms of the "tone" head (dict, their weighted sum under 'total') and the target.

    The target is :func:`tone_rule` at the image's own tone (:func:`target_tone` with ``alpha``,
    ``sd``, ``gain_max``; visible detail ``vis_detail``, ``detail_where``). int: L1 to it; grad: L1 of
    Sobel magnitudes to the target's
    (``grad_target="target"``) or to the larger of the two sources' times the target's gain g
    (``"max"``: the strongest edge of either source, as the "blend" recipe); ssim:
    1 − SSIM to it; tone: L1 of the predicted tone [B, 4] to the target's.
    With ``layers`` = (radius, ir_detail, vis_detail) the target is :func:`layers_rule` instead (the "layers"
    head; ``vis_detail`` and ``detail_where`` do not apply).
    Returns (terms, target).
    """
    t_true = target_tone(ir, vis, alpha, sd=sd, gain_max=gain_max, layers=layers)
    if grad_target not in ("target", "max"):
        raise ValueError(f"grad_target must be 'target' or 'max', got {grad_target!r}")
    if layers is not None:
        target = layers_rule(ir, vis, t_true, *layers)
    else:
        target = tone_rule(ir, vis, t_true, vis_detail=vis_detail, detail_where=detail_where)
    out = {
        "int": F.l1_loss(fused, target),
        "grad": F.l1_loss(
            sobel_mag(fused),
            sobel_mag(target)
            if grad_target == "target"
            else t_true[:, :1, None, None] * torch.maximum(sobel_mag(ir), sobel_mag(vis)),
        ),
        "ssim": 1.0 - ssim(fused, target),
        "tone": F.l1_loss(tone, t_true),
    }
    total = w_int * out["int"] + w_grad * out["grad"] + w_ssim * out["ssim"] + w_tone * out["tone"]
    return {"total": total} | out, target
