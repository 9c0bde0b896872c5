"""Mutual information MI = MI(F, A) + MI(F, B).

Reproduces ``sklearn.metrics.mutual_info_score(F.ravel(), X.ravel())`` (used unmodified by the
reference evaluator) without scikit-learn: the contingency table is taken over the distinct values
present in each image (for 8-bit grey levels a 256x256 joint histogram built with one
``bincount``), no smoothing, no normalisation, natural log (nats) by default::

    MI(X, Y) = sum_ij p_ij * log(p_ij / (p_i * p_j)),   p_ij = n_ij / N

Like scikit-learn, per-cell terms smaller than float64 eps in magnitude are zeroed and the sum is
clipped at 0.  ``base=2`` gives bits (= nats / ln 2).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mi", "mutual_information"]


def _labels(x: np.ndarray):
    """Dense integer labels 0..k-1 for the distinct values of ``x`` (fast path for 8-bit levels)."""
    x = np.asarray(x).ravel()
    if x.size and x.dtype.kind in "fiu":
        lo, hi = x.min(), x.max()
        if lo >= 0 and hi <= 255:
            xi = x.astype(np.int64)
            if np.array_equal(xi, x):
                present = np.bincount(xi, minlength=256) > 0
                remap = np.cumsum(present) - 1
                return remap[xi], int(present.sum())
    uniq, inv = np.unique(x, return_inverse=True)
    return inv.ravel(), int(uniq.size)


def mutual_information(X: np.ndarray, Y: np.ndarray, base: float = math.e) -> float:
    """Mutual information of two equally sized images (contingency over distinct values)."""
    X = np.asarray(X)
    Y = np.asarray(Y)
    if X.shape != Y.shape:
        raise ValueError(f"shape mismatch: {X.shape} vs {Y.shape}")
    lx, kx = _labels(X)
    ly, ky = _labels(Y)
    if kx == 1 or ky == 1:
        return 0.0
    n = lx.size
    joint = np.bincount(lx * ky + ly, minlength=kx * ky).reshape(kx, ky)
    pi = joint.sum(axis=1)
    pj = joint.sum(axis=0)
    nzx, nzy = np.nonzero(joint)
    nz = joint[nzx, nzy].astype(np.float64)
    log_nz = np.log(nz)
    p_nz = nz / n
    outer = pi[nzx].astype(np.int64) * pj[nzy].astype(np.int64)
    log_outer = -np.log(outer.astype(np.float64)) + math.log(pi.sum()) + math.log(pj.sum())
    terms = p_nz * (log_nz - math.log(n)) + p_nz * log_outer
    terms = np.where(np.abs(terms) < np.finfo(terms.dtype).eps, 0.0, terms)
    value = max(float(terms.sum()), 0.0)
    if base != math.e:
        value /= math.log(base)
    return value


def mi(F: np.ndarray, A: np.ndarray, B: np.ndarray, base: float = math.e) -> float:
    """``MI(F, A) + MI(F, B)``; natural log (nats, the CDDFuse convention) unless ``base`` is given
    (``base=2`` for bits)."""
    return mutual_information(F, A, base) + mutual_information(F, B, base)
