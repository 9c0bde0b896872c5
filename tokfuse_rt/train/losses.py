"""Unsupervised fusion losses (intensity, gradient, structure) and tokenizer losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_mag(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of [B, 1, H, W] (replicate padding)."""
    k = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1).to(x)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    return g.abs().sum(dim=1, keepdim=True)


def ssim(x: torch.Tensor, y: torch.Tensor, win: int = 11, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2):
    """Mean SSIM with a uniform window, images in [0, 1]."""
    mu_x = F.avg_pool2d(x, win, 1)
    mu_y = F.avg_pool2d(y, win, 1)
    sxx = F.avg_pool2d(x * x, win, 1) - mu_x ** 2
    syy = F.avg_pool2d(y * y, win, 1) - mu_y ** 2
    sxy = F.avg_pool2d(x * y, win, 1) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.mean()


def contrast_target(ir: torch.Tensor, vis: torch.Tensor, gain: float = 1.0, alpha: float = 0.0) -> torch.Tensor:
    """Intensity target in [0, 1]: a mix of max(ir, vis) (weight 1 − ``alpha``) and the additive
    composite ir + vis − (mean(ir) + mean(vis)) / 2 (weight ``alpha``), its contrast about each image's
    mean scaled by ``gain``.

    ir, vis: [B, 1, H, W] in [0, 1]; means are per image.  gain=1, alpha=0 gives max(ir, vis).
    """
    mean = lambda t: t.mean(dim=(-2, -1), keepdim=True)  # noqa: E731
    m = torch.maximum(ir, vis)
    if alpha:
        add = (ir + vis - 0.5 * (mean(ir) + mean(vis))).clamp(0.0, 1.0)
        m = (1.0 - alpha) * m + alpha * add
    if gain != 1.0:
        mu = mean(m)
        m = (mu + gain * (m - mu)).clamp(0.0, 1.0)
    return m


def fusion_losses(fused, ir, vis, w_int=1.0, w_grad=10.0, w_ssim=1.0, gain=1.0, alpha=0.0):
    """Dict of weighted loss terms and their sum under 'total'.

    int: L1 to :func:`contrast_target`; grad: L1 of Sobel magnitudes to ``gain`` × the larger source
    gradient; ssim: 1 − mean SSIM to the two sources.
    """
    l_int = F.l1_loss(fused, contrast_target(ir, vis, gain, alpha))
    l_grad = F.l1_loss(sobel_mag(fused), gain * torch.maximum(sobel_mag(ir), sobel_mag(vis)))
    l_ssim = 1.0 - 0.5 * (ssim(fused, ir) + ssim(fused, vis))
    total = w_int * l_int + w_grad * l_grad + w_ssim * l_ssim
    return {"total": total, "int": l_int, "grad": l_grad, "ssim": l_ssim}
