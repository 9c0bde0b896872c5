"""Statistical metrics: EN, SD, SF, AG (fused image only) and SCD, CC, MSE, PSNR (fused vs sources).

Every function reproduces the reference evaluator (MMIF-CDDFuse ``utils/Evaluator.py``) operation by
operation, including its dtype: images read by :func:`tokfuse_rt.metrics.read_gray` are float32, and
numpy then keeps float32 arithmetic (pairwise summation) exactly as the reference does.  Pass float64
arrays to get float64 arithmetic instead.  Argument order is always ``(F, A, B)`` = (fused, ir, vis).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "en",
    "sd",
    "sf",
    "ag",
    "scd",
    "cc",
    "mse",
    "psnr",
    "corr",
    "thermal_kept",
    "sobel_magnitude",
    "texture_kept",
]


def _as_float(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype.kind != "f":
        img = img.astype(np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D (HxW) image, got shape {img.shape}")
    return img


def en(F: np.ndarray) -> float:
    """Entropy (bits) of the 256-bin grey-level histogram: ``-sum(p * log2 p)``.

    Histogram as in the reference: ``bincount(uint8(round(F))) / N``.  Values are clipped to
    [0, 255] before the cast (the reference relies on the image already being in range).
    """
    F = _as_float(F)
    a = np.clip(np.round(F), 0, 255).astype(np.uint8).ravel()
    h = np.bincount(a, minlength=256) / a.shape[0]
    return float(-np.sum(h * np.log2(h + (h == 0))))


def sd(F: np.ndarray) -> float:
    """Population standard deviation (ddof=0) of F."""
    return float(np.std(_as_float(F)))


def sf(F: np.ndarray) -> float:
    """Spatial frequency ``sqrt(mean(dx^2) + mean(dy^2))`` with forward differences, each mean over
    its own count ((W-1)*H and (H-1)*W)."""
    F = _as_float(F)
    return float(np.sqrt(np.mean((F[:, 1:] - F[:, :-1]) ** 2) + np.mean((F[1:, :] - F[:-1, :]) ** 2)))


def ag(F: np.ndarray) -> float:
    """Average gradient ``mean(sqrt((Gx^2 + Gy^2) / 2))`` over all HxW pixels.

    Gx, Gy are central differences ``(x[i+1] - x[i-1]) / 2`` inside the image and one-sided
    differences (not halved) on the first/last column/row, as in the reference (and MATLAB
    ``gradient``).
    """
    F = _as_float(F)
    if F.shape[0] < 2 or F.shape[1] < 2:
        raise ValueError("AG needs an image of at least 2x2 pixels")
    gx = np.empty_like(F)
    gy = np.empty_like(F)
    gx[:, 0] = F[:, 1] - F[:, 0]
    gx[:, -1] = F[:, -1] - F[:, -2]
    gx[:, 1:-1] = (F[:, 2:] - F[:, :-2]) / 2
    gy[0, :] = F[1, :] - F[0, :]
    gy[-1, :] = F[-1, :] - F[-2, :]
    gy[1:-1, :] = (F[2:, :] - F[:-2, :]) / 2
    return float(np.mean(np.sqrt((gx**2 + gy**2) / 2)))


def corr(X: np.ndarray, Y: np.ndarray):
    """Pearson correlation written as the reference writes it (same dtype, same reductions)."""
    dx = X - np.mean(X)
    dy = Y - np.mean(Y)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant input -> nan, as the reference
        return np.sum(dx * dy) / np.sqrt(np.sum(dx**2) * np.sum(dy**2))


def _check3(F, A, B):
    F, A, B = _as_float(F), _as_float(A), _as_float(B)
    if not (F.shape == A.shape == B.shape):
        raise ValueError(f"shape mismatch: F {F.shape}, A {A.shape}, B {B.shape}")
    return F, A, B


def scd(F: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    """Sum of the correlations of differences: ``corr(A, F - B) + corr(B, F - A)``
    (Aslantas & Bendes 2015)."""
    F, A, B = _check3(F, A, B)
    return float(corr(A, F - B) + corr(B, F - A))


def cc(F: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    """Mean correlation coefficient ``(corr(A, F) + corr(B, F)) / 2``."""
    F, A, B = _check3(F, A, B)
    return float((corr(A, F) + corr(B, F)) / 2)


def _mse(F, A, B):
    return (np.mean((A - F) ** 2) + np.mean((B - F) ** 2)) / 2


def mse(F: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    """``(mean((A - F)^2) + mean((B - F)^2)) / 2`` on the 0..255 scale."""
    F, A, B = _check3(F, A, B)
    return float(_mse(F, A, B))


def psnr(F: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    """``10 * log10(max(F)^2 / MSE)`` with MSE from :func:`mse`.

    The peak is the maximum of the fused image (reference convention), not 255.  Identical images
    give ``inf``.
    """
    F, A, B = _check3(F, A, B)
    m = _mse(F, A, B)
    with np.errstate(divide="ignore"):
        return float(10 * np.log10(np.max(F) ** 2 / m))


def thermal_kept(F: np.ndarray, A: np.ndarray, B: np.ndarray, margin: float) -> tuple[float, int]:
    """Share of the thermal excess that the fused image keeps, and on how many pixels.

    Over the pixels where A (infrared) is brighter than B (visible) by more than ``margin``:
    ``mean(F - B) / mean(A - B)`` (1: all of it kept, 0.5: a plain average, 0: B alone).
    ``margin`` is in the images' units (0.25 for [0, 1] luminance).  Not a CDDFuse metric; NaN
    when no pixel qualifies.  Returns ``(kept, n_pixels)``.
    """
    F, A, B = (_as_float(x) for x in (F, A, B))
    hot = (A - B) > margin
    n = int(hot.sum())
    if n == 0:
        return float("nan"), 0
    return float(np.mean(F[hot] - B[hot]) / np.mean(A[hot] - B[hot])), n


def sobel_magnitude(y: np.ndarray) -> np.ndarray:
    """hypot of the 3×3 Sobel responses of a 2-D image, zero on the one-pixel border (float64)."""
    y = _as_float(y).astype(np.float64)
    gx = np.zeros_like(y)
    gy = np.zeros_like(y)
    gx[1:-1, 1:-1] = (y[:-2, 2:] + 2 * y[1:-1, 2:] + y[2:, 2:]) - (y[:-2, :-2] + 2 * y[1:-1, :-2] + y[2:, :-2])
    gy[1:-1, 1:-1] = (y[2:, :-2] + 2 * y[2:, 1:-1] + y[2:, 2:]) - (y[:-2, :-2] + 2 * y[:-2, 1:-1] + y[:-2, 2:])
    return np.hypot(gx, gy)


def texture_kept(F: np.ndarray, S: np.ndarray) -> float:
    """How much of a source's texture the fused image shows: the correlation of the Sobel magnitude
    maps of F and S (:func:`sobel_magnitude`). Not a CDDFuse metric; scale-free, so F and S may be in
    any units. Against the visible image it is the "visible texture" guard: the strong learned
    peers keep >= 0.6 on about 85 % of RoadScene images. NaN for a flat image."""
    a, b = sobel_magnitude(F).ravel(), sobel_magnitude(S).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")
