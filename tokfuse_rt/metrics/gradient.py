"""Gradient-based metrics: Qabf (edge information transfer) and Nabf (fusion artifacts).

Qabf -- Xydeas & Petrovic (2000), exactly as the reference evaluator (MMIF-CDDFuse) computes it:

* Sobel responses with ``scipy.signal.convolve2d(img, h, 'same')`` (zero padding, kernel flipped):
  ``Sx`` with ``[[-1,0,1],[-2,0,2],[-1,0,1]]``, ``Sy`` with ``[[1,2,1],[0,0,0],[-1,-2,-1]]``;
  ``g = sqrt(Sx^2 + Sy^2)``, ``a = arctan(Sy / Sx)`` (``pi/2`` where ``Sx == 0``; not atan2).
* ``G^AF = gF/gA if gA > gF, gA/gF if gA < gF`` and -- the reference's quirk, kept --
  ``G^AF = gF where gA == gF`` (so 0 where both gradients vanish, gF elsewhere).
* ``A^AF = 1 - |aA - aF| / (pi/2)``;
  ``Q^AF = Tg / (1 + exp(kg (G^AF - Dg))) * Ta / (1 + exp(ka (A^AF - Da)))`` with
  Tg=0.9994, kg=-15, Dg=0.5, Ta=0.9879, ka=-22, Da=0.8.
* ``Qabf = sum(Q^AF gA + Q^BF gB) / sum(gA + gB)`` (L = 1).

Arithmetic stays in the input's dtype (float32 for images from ``read_gray``), as in the reference.

Nabf -- the *modified* fusion-artifact measure of B. K. Shreyamsha Kumar ("Multifocus and
multispectral image fusion based on pixel significance using DCT", SIViP 2013; MATLAB
``objective_fusion_perform_fn`` / ``analysis_nabf`` as shipped with VIFB and most IVIF evaluators)::

    gv, gh = Sobel / 8 with mirror ('reflect') border extension; g = sqrt(gv^2 + gh^2)
    a = atan(gv / gh)  (0 where gv == gh == 0; +-pi/2 where gh == 0)
    g^XF = 0 if gX == 0 or gF == 0, else min(gX, gF) / max(gX, gF)
    a^XF = | |aX - aF| - pi/2 | * 2 / pi
    Q^XF = sqrt( Nrg / (1 + exp(-kg (g^XF - sg))) * Nra / (1 + exp(-ka (a^XF - sa))) )
           Nrg = 0.9999, kg = 19, sg = 0.5, Nra = 0.9995, ka = 22, sa = 0.5
    w^X  = gX ** 1.5 where gX >= Td = 2, else wt_min = 0.001
    AM   = 1 where gF > gA and gF > gB, else 0
    Nabf = sum(AM * ((1 - Q^AF) w^A + (1 - Q^BF) w^B)) / sum(w^A + w^B)

The thresholds (Td = 2) are on the scale of the pixel values passed in: the "cddfuse" convention
passes 0..255 images (as the Python ports do); VIFB passes ``im2double`` images in [0, 1], where
no gradient reaches Td and every weight is wt_min (select ``convention="vifb"`` for that).
Computed in float64.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["qabf", "nabf", "sobel_same_zero"]

_TG, _KG, _DG = 0.9994, -15, 0.5
_TA, _KA, _DA = 0.9879, -22, 0.8


def sobel_same_zero(img: np.ndarray):
    """``convolve2d(img, h3, 'same')`` and ``convolve2d(img, h1, 'same')`` (zero padding),
    evaluated with slices in the input dtype.  Returns ``(Sx, Sy)``."""
    x = np.pad(img, 1)
    # convolve2d flips the kernel: Sx[i, j] = sum_di w(di) * (x[i+di, j-1] - x[i+di, j+1]),
    # Sy[i, j] = s[i+1, j] - s[i-1, j] with s the [1, 2, 1] horizontal smoothing.
    d = x[:, :-2] - x[:, 2:]
    sx = d[:-2] + 2 * d[1:-1] + d[2:]
    s = x[:, :-2] + 2 * x[:, 1:-1] + x[:, 2:]
    sy = s[2:] - s[:-2]
    return sx, sy


def _grad_angle(img):
    sx, sy = sobel_same_zero(img)
    g = np.sqrt(sx * sx + sy * sy)
    zero = sx == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.arctan(sy / np.where(zero, 1, sx))
    a[zero] = math.pi / 2
    return g, a


def _q(aX, gX, aF, gF):
    with np.errstate(divide="ignore", invalid="ignore"):
        G = np.where(gX > gF, gF / gX, np.where(gX == gF, gF, gX / gF))
    A = 1 - np.abs(aX - aF) / (math.pi / 2)
    Qg = _TG / (1 + np.exp(_KG * (G - _DG)))
    Qa = _TA / (1 + np.exp(_KA * (A - _DA)))
    return Qg * Qa


def _check(F, A, B):
    F, A, B = (np.asarray(v) for v in (F, A, B))
    if not (F.shape == A.shape == B.shape) or F.ndim != 2:
        raise ValueError(f"shape mismatch / not 2-D: F {F.shape}, A {A.shape}, B {B.shape}")

    def fl(v):
        return v if v.dtype.kind == "f" else v.astype(np.float64)

    return fl(F), fl(A), fl(B)


def qabf(F: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    """Xydeas-Petrovic Qabf (reference variant, see module docstring)."""
    F, A, B = _check(F, A, B)
    gA, aA = _grad_angle(A)
    gB, aB = _grad_angle(B)
    gF, aF = _grad_angle(F)
    QAF = _q(aA, gA, aF, gF)
    QBF = _q(aB, gB, aF, gF)
    deno = np.sum(gA + gB)
    nume = np.sum(QAF * gA + QBF * gB)
    return float(nume / deno)


def _sobel_kumar(img):
    """Kumar's ``sobel_fn``: correlation with [-1 0 1; -2 0 2; -1 0 1]/8 (gv) and
    [-1 -2 -1; 0 0 0; 1 2 1]/8 (gh) on the mirror-extended image."""
    x = np.pad(np.asarray(img, dtype=np.float64), 1, mode="reflect")
    d = x[:, 2:] - x[:, :-2]
    gv = (d[:-2] + 2 * d[1:-1] + d[2:]) / 8
    s = x[:, :-2] + 2 * x[:, 1:-1] + x[:, 2:]
    gh = (s[2:] - s[:-2]) / 8
    return gv, gh


_TD, _WT_MIN = 2.0, 0.001  # weight exponent Lg = 1.5
_NRG, _KGN, _SG = 0.9999, 19.0, 0.5
_NRA, _KAN, _SA = 0.9995, 22.0, 0.5


def nabf(F: np.ndarray, A: np.ndarray, B: np.ndarray, scale: float = 1.0) -> float:
    """Kumar's modified fusion-artifact measure Nabf (lower is better), see module docstring.

    ``scale`` multiplies the pixel values (applied to the Sobel responses, which is equivalent):
    1.0 for 0..255 ("cddfuse"), 1/255 for the ``im2double`` inputs VIFB uses.
    """
    F, A, B = _check(F, A, B)
    # Scaling the pixels scales the Sobel responses; applying it to the responses instead keeps
    # exact ties (gF == gA on identical neighbourhoods) exact, which the strict gF > gX test needs.
    gvA, ghA = _sobel_kumar(A)
    gvB, ghB = _sobel_kumar(B)
    gvF, ghF = _sobel_kumar(F)
    if scale != 1.0:
        gvA, ghA, gvB, ghB, gvF, ghF = (v * scale for v in (gvA, ghA, gvB, ghB, gvF, ghF))
    gA = np.sqrt(ghA**2 + gvA**2)
    gB = np.sqrt(ghB**2 + gvB**2)
    gF = np.sqrt(ghF**2 + gvF**2)
    wA = np.where(gA >= _TD, gA * np.sqrt(gA), _WT_MIN)  # gA ** 1.5
    wB = np.where(gB >= _TD, gB * np.sqrt(gB), _WT_MIN)
    # Only pixels with AM = 1 contribute to the numerator: evaluate Q^AF, Q^BF there only.
    am = (gF > gA) & (gF > gB)
    gvA, ghA, gvB, ghB, gvF, ghF = (v[am] for v in (gvA, ghA, gvB, ghB, gvF, ghF))
    gA_, gB_, gF_ = gA[am], gB[am], gF[am]

    def angle(gv, gh):
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.arctan(gv / gh)  # gh == 0, gv != 0 -> +-inf -> +-pi/2 (as MATLAB atan)
        a[(gv == 0) & (gh == 0)] = 0
        return a

    aA, aB, aF = angle(gvA, ghA), angle(gvB, ghB), angle(gvF, ghF)

    def rel(gX):
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(gX > gF_, gF_ / gX, gX / gF_)
        r[(gX == 0) | (gF_ == 0)] = 0
        return r

    def Q(gXF, aX):
        aXF = np.abs(np.abs(aX - aF) - math.pi / 2) * 2 / math.pi
        Qg = _NRG / (1 + np.exp(-_KGN * (gXF - _SG)))
        Qa = _NRA / (1 + np.exp(-_KAN * (aXF - _SA)))
        return np.sqrt(Qg * Qa)

    QAF = Q(rel(gA_), aA)
    QBF = Q(rel(gB_), aB)
    num = np.sum((1 - QAF) * wA[am] + (1 - QBF) * wB[am])
    return float(num / np.sum(wA + wB))
