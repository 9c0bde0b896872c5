"""VIF: pixel-domain multi-scale visual information fidelity (Sheikh & Bovik 2006, "VIFP").

Definition (reference: MMIF-CDDFuse ``Evaluator.compare_viff``, i.e. the classic ``vifp_mscale``)::

    for scale s = 1..4:
        N = 2**(5 - s) + 1                       # 17, 9, 5, 3
        w = Gaussian N x N, sd = N / 5, normalised to sum 1
        if s > 1: ref, dist = valid(ref, w)[::2, ::2], valid(dist, w)[::2, ::2]
        mu1, mu2 = valid(ref, w), valid(dist, w)
        s1 = valid(ref^2, w) - mu1^2 ; s2 = valid(dist^2, w) - mu2^2 ; s12 = valid(ref*dist, w) - mu1*mu2
        clip s1, s2 at 0;  g = s12 / (s1 + eps);  sv = s2 - g * s12
        where s1 < eps: g = 0, sv = s2, s1 = 0
        where s2 < eps: g = 0, sv = 0
        where g < 0:    sv = s2, g = 0
        sv = max(sv, eps)
        num += sum(log10(1 + g^2 s1 / (sv + sigma_n^2)));  den += sum(log10(1 + s1 / sigma_n^2))
    vifp = num / den   (NaN -> 1.0),      sigma_n^2 = 2, eps = 1e-10

``VIF(F, A, B) = vifp(ref=A, dist=F) + vifp(ref=B, dist=F)``.

Speed: the Gaussian window is an outer product (no tap falls under the eps*max cut-off for these
N), so every 'valid' 2-D convolution is done as two 1-D passes, all maps of a scale stacked into one
array (``scipy.ndimage.correlate1d``), and the decimation keeps only the needed rows early.  The fused image's
maps are shared between the two pairs.  Results agree with ``scipy.signal.convolve2d`` to ~1e-12
relative (float64 throughout, as in the reference).
"""

from __future__ import annotations

import numpy as np

__all__ = ["vif", "vifp", "gaussian_window_1d"]

SIGMA_NSQ = 2.0
EPS = 1e-10


def gaussian_window_1d(N: int) -> np.ndarray:
    """1-D factor of the N x N window: ``outer(w, w)`` equals MATLAB ``fspecial('gaussian', N, N/5)``."""
    sd = N / 5.0
    m = (N - 1) / 2.0
    x = np.arange(-m, m + 1)
    g = np.exp(-(x * x) / (2.0 * sd * sd))
    return g / g.sum()


def _valid_1d(x: np.ndarray, w: np.ndarray, axis: int, step: int = 1) -> np.ndarray:
    """'valid' correlation of ``x`` with the symmetric 1-D kernel ``w`` along ``axis``, keeping
    every ``step``-th output (empty when the kernel is longer than the axis)."""
    from scipy.ndimage import correlate1d

    n = x.shape[axis]
    k = w.size
    r = k // 2
    idx = [slice(None)] * x.ndim
    if n - k + 1 <= 0:
        idx[axis] = slice(0, 0)
        return np.zeros_like(x[tuple(idx)], dtype=np.float64)
    y = correlate1d(x, w, axis=axis, mode="constant")
    idx[axis] = slice(r, n - r, step)
    return y[tuple(idx)]


def _valid_2d(x: np.ndarray, w: np.ndarray, step: int = 1) -> np.ndarray:
    """Separable 'valid' filtering over the last two axes (optionally decimated by ``step``)."""
    y = _valid_1d(x, w, axis=x.ndim - 2, step=step)
    return _valid_1d(y, w, axis=x.ndim - 1, step=step)


def _pair_terms(mu1, mu2, e11, e22, e12):
    """num and den of one scale for one (ref, dist) pair, following the reference's masking order."""
    s1 = e11 - mu1 * mu1
    s2 = e22 - mu2 * mu2
    s12 = e12 - mu1 * mu2
    s1[s1 < 0] = 0
    s2[s2 < 0] = 0
    g = s12 / (s1 + EPS)
    sv = s2 - g * s12
    m = s1 < EPS
    g[m] = 0
    sv[m] = s2[m]
    s1[m] = 0
    m = s2 < EPS
    g[m] = 0
    sv[m] = 0
    m = g < 0
    sv[m] = s2[m]
    g[m] = 0
    sv[sv <= EPS] = EPS
    num = np.sum(np.log10(1 + g * g * s1 / (sv + SIGMA_NSQ)))
    den = np.sum(np.log10(1 + s1 / SIGMA_NSQ))
    return float(num), float(den)


def _vif_refs(refs, dist):
    """vifp(ref_k, dist) for each ref in ``refs`` sharing the dist-only filtering."""
    refs = [np.asarray(r, dtype=np.float64) for r in refs]
    dist = np.asarray(dist, dtype=np.float64)
    for r in refs:
        if r.shape != dist.shape or r.ndim != 2:
            raise ValueError(f"shape mismatch / not 2-D: {r.shape} vs {dist.shape}")
    k = len(refs)
    imgs = np.stack(refs + [dist])  # (k+1, H, W)
    num = np.zeros(k)
    den = np.zeros(k)
    for scale in range(1, 5):
        N = 2 ** (4 - scale + 1) + 1
        w = gaussian_window_1d(N)
        if scale > 1:
            imgs = _valid_2d(imgs, w, step=2)
        d = imgs[k]
        maps = np.concatenate([imgs, imgs * imgs, imgs[:k] * d], axis=0)  # mu, E[x^2], E[ref*dist]
        f = _valid_2d(maps, w)
        if f.shape[-1] == 0 or f.shape[-2] == 0:
            continue
        mu2, e22 = f[k], f[2 * k + 1]
        for i in range(k):
            n_i, d_i = _pair_terms(f[i], mu2, f[k + 1 + i], e22, f[2 * k + 2 + i])
            num[i] += n_i
            den[i] += d_i
    with np.errstate(invalid="ignore", divide="ignore"):
        v = num / den
    return [1.0 if np.isnan(x) else float(x) for x in v]


def vifp(ref: np.ndarray, dist: np.ndarray) -> float:
    """Multi-scale pixel-domain VIF of ``dist`` against ``ref`` (NaN, e.g. a flat ref, -> 1.0)."""
    return _vif_refs([ref], dist)[0]


def vif(F: np.ndarray, A: np.ndarray, B: np.ndarray, parts: bool = False):
    """``vifp(A, F) + vifp(B, F)``; with ``parts=True`` returns ``(total, vif_A, vif_B)``."""
    va, vb = _vif_refs([A, B], F)
    return (va + vb, va, vb) if parts else va + vb
