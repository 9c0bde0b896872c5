"""SSIM = SSIM(F, A) + SSIM(F, B), reproducing ``skimage.metrics.structural_similarity`` defaults.

Per pair (Wang et al. 2004 as implemented by scikit-image with its defaults)::

    u_x = uniform_filter(x, 7)  (scipy.ndimage, mode 'reflect')   v_x = 49/48 * (u_xx - u_x^2)
    v_xy = 49/48 * (u_xy - u_x u_y)                                C1 = (0.01 R)^2, C2 = (0.03 R)^2
    S = (2 u_x u_y + C1)(2 v_xy + C2) / ((u_x^2 + u_y^2 + C1)(v_x + v_y + C2))
    SSIM = mean of S over the image cropped by 3 px on each side (float64 mean)

computed in the input's float type (float32 images stay float32, as scikit-image does).  R is the
data range.  The published CDDFuse tables called ``ssim(F, A)`` on float images without a data
range, which scikit-image <= 0.19 resolved to R = 2 (float dtype range (-1, 1)); that is the
``SSIM_2`` value and the default ``SSIM`` of the "cddfuse" convention.  ``SSIM_255`` uses R = 255.
Both ranges share all filtered maps, so computing both costs one extra elementwise pass.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["ssim", "ssim_pair", "ssim_both"]

WIN = 7
K1 = 0.01
K2 = 0.03


def _float_type(dt: np.dtype):
    # skimage's _supported_float_type: float16/float32 -> float32, everything else -> float64
    if dt in (np.float16, np.float32):
        return np.float32
    return np.float64


def _stats(x, filt):
    u = filt(x, size=WIN)
    uu = filt(x * x, size=WIN)
    return u, uu


def _ssim_from_maps(ux, uxx, uy, uyy, uxy, ranges: Iterable[float]) -> dict[float, float]:
    NP = WIN * WIN
    cov_norm = NP / (NP - 1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    pad = (WIN - 1) // 2
    crop = (slice(pad, ux.shape[0] - pad), slice(pad, ux.shape[1] - pad))
    out = {}
    uxuy2 = 2 * ux * uy
    vxy2 = 2 * vxy
    usq = ux**2 + uy**2
    vsum = vx + vy
    for R in ranges:
        C1 = (K1 * R) ** 2
        C2 = (K2 * R) ** 2
        A1, A2, B1, B2 = uxuy2 + C1, vxy2 + C2, usq + C1, vsum + C2
        S = (A1 * A2) / (B1 * B2)
        out[R] = float(S[crop].mean(dtype=np.float64))
    return out


def _prep(F, X):
    F = np.asarray(F)
    X = np.asarray(X)
    if F.shape != X.shape or F.ndim != 2:
        raise ValueError(f"shape mismatch / not 2-D: {F.shape} vs {X.shape}")
    if min(F.shape) < WIN:
        raise ValueError(f"SSIM needs images of at least {WIN}x{WIN} pixels, got {F.shape}")
    ft = _float_type(F.dtype)
    return F.astype(ft, copy=False), X.astype(ft, copy=False)


def ssim_pair(F: np.ndarray, X: np.ndarray, data_range: float = 2.0) -> float:
    """``structural_similarity(F, X, data_range=data_range)`` with scikit-image defaults."""
    from scipy.ndimage import uniform_filter

    F, X = _prep(F, X)
    ux, uxx = _stats(F, uniform_filter)
    uy, uyy = _stats(X, uniform_filter)
    uxy = uniform_filter(F * X, size=WIN)
    return _ssim_from_maps(ux, uxx, uy, uyy, uxy, [data_range])[data_range]


def ssim_both(F: np.ndarray, A: np.ndarray, B: np.ndarray, ranges=(2.0, 255.0)) -> dict[str, float]:
    """Per-pair SSIM for several data ranges at once.

    Returns ``{"A": {R: ssim(F, A, R), ...}, "B": {...}}`` sharing F's filtered maps.
    """
    from scipy.ndimage import uniform_filter

    F, A = _prep(F, A)
    _, B = _prep(F, B)
    ux, uxx = _stats(F, uniform_filter)
    res = {}
    for key, X in (("A", A), ("B", B)):
        uy, uyy = _stats(X, uniform_filter)
        uxy = uniform_filter(F * X, size=WIN)
        res[key] = _ssim_from_maps(ux, uxx, uy, uyy, uxy, ranges)
    return res


def ssim(F: np.ndarray, A: np.ndarray, B: np.ndarray, data_range: float = 2.0) -> float:
    """``SSIM(F, A) + SSIM(F, B)`` with the given data range (2: published CDDFuse column)."""
    r = ssim_both(F, A, B, ranges=(data_range,))
    return r["A"][data_range] + r["B"][data_range]
