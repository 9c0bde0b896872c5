"""``evaluate``: all metrics for one (fused, ir, vis) triplet under a named convention."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from . import basic, gradient, info
from . import ssim as _ssim
from . import vif as _vif
from .io import to_gray_cv

#: The 13 metrics, in report order.
METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "PSNR", "CC", "MSE", "Nabf")

#: Direction of each metric: True where higher is better.
HIGHER_IS_BETTER = {m: True for m in METRICS}
HIGHER_IS_BETTER.update({"MSE": False, "Nabf": False})


@dataclass(frozen=True)
class Convention:
    """How metrics are computed and reported.

    name         label of the convention
    mi_base      logarithm base of MI: ``math.e`` (nats, CDDFuse) or 2 (bits)
    ssim_range   data range behind the ``SSIM`` key: 2 (published CDDFuse column) or 255;
                 ``SSIM_2`` and ``SSIM_255`` are always reported too, named
    per_channel  colour (HxWx3) fused images are evaluated per RGB channel and the 13 values
                 averaged (VIFB style); sources that are gray are replicated to 3 channels.
                 When False, colour inputs are first converted to the reference luminance.
    nabf_scale   factor applied to pixel values before Nabf (1: 0..255, 1/255: im2double as VIFB)
    """

    name: str
    mi_base: float = math.e
    ssim_range: float = 2.0
    per_channel: bool = False
    nabf_scale: float = 1.0


#: Named conventions.  "cddfuse" is the default and reproduces ``shared/data/metric_reference.json``.
CONVENTIONS: dict[str, Convention] = {
    "cddfuse": Convention("cddfuse"),
    # same, MI in bits (= nats / ln 2)
    "cddfuse_bits": Convention("cddfuse_bits", mi_base=2.0),
    # same, SSIM column with data range 255 (the value scikit-image gives for 8-bit data)
    "cddfuse_ssim255": Convention("cddfuse_ssim255", ssim_range=255.0),
    # VIFB-style: per-RGB-channel evaluation averaged, MI in bits, SSIM with range 255, Nabf on
    # im2double ([0, 1]) values.  The per-metric formulas are otherwise those of "cddfuse" (this is
    # not a re-implementation of VIFB's MATLAB code, only of its channel averaging and scales).
    "vifb": Convention("vifb", mi_base=2.0, ssim_range=255.0, per_channel=True, nabf_scale=1 / 255),
}


def get_convention(convention: str | Convention | None = None, **overrides) -> Convention:
    """Resolve a convention name (or object) and apply keyword overrides, e.g.
    ``get_convention("cddfuse", mi_base=2)``."""
    if convention is None:
        convention = "cddfuse"
    if isinstance(convention, str):
        key = convention.lower()
        if key not in CONVENTIONS:
            raise ValueError(f"unknown convention {convention!r}; known: {sorted(CONVENTIONS)}")
        convention = CONVENTIONS[key]
    if not isinstance(convention, Convention):
        raise TypeError(f"convention must be a name or Convention, got {type(convention).__name__}")
    return replace(convention, **overrides) if overrides else convention


def _resolve_metrics(metrics: Iterable[str] | None):
    if metrics is None:
        return list(METRICS)
    if isinstance(metrics, str):
        metrics = [metrics]
    lut = {m.lower(): m for m in METRICS}
    lut.update({"ssim_2": "SSIM", "ssim_255": "SSIM"})
    out = []
    for m in metrics:
        key = lut.get(str(m).lower())
        if key is None:
            raise ValueError(f"unknown metric {m!r}; known: {list(METRICS)}")
        if key not in out:
            out.append(key)
    return out


#: metric -> f(F, A, B, convention) for every metric with a single value (SSIM is handled apart:
#: it reports three keys from one pass).
_SINGLE = {
    "EN": lambda F, A, B, c: basic.en(F),
    "SD": lambda F, A, B, c: basic.sd(F),
    "SF": lambda F, A, B, c: basic.sf(F),
    "AG": lambda F, A, B, c: basic.ag(F),
    "MI": lambda F, A, B, c: info.mi(F, A, B, base=c.mi_base),
    "SCD": lambda F, A, B, c: basic.scd(F, A, B),
    "VIF": lambda F, A, B, c: _vif.vif(F, A, B),
    "Qabf": lambda F, A, B, c: gradient.qabf(F, A, B),
    "PSNR": lambda F, A, B, c: basic.psnr(F, A, B),
    "CC": lambda F, A, B, c: basic.cc(F, A, B),
    "MSE": lambda F, A, B, c: basic.mse(F, A, B),
    "Nabf": lambda F, A, B, c: gradient.nabf(F, A, B, scale=c.nabf_scale),
}


def _evaluate_gray(F, A, B, names, conv: Convention) -> dict[str, float]:
    r: dict[str, float] = {}
    for m in names:
        if m == "SSIM":
            ranges = tuple(dict.fromkeys((2.0, 255.0, float(conv.ssim_range))))
            s = _ssim.ssim_both(F, A, B, ranges=ranges)
            r["SSIM"] = s["A"][float(conv.ssim_range)] + s["B"][float(conv.ssim_range)]
            r["SSIM_2"] = s["A"][2.0] + s["B"][2.0]
            r["SSIM_255"] = s["A"][255.0] + s["B"][255.0]
        else:
            r[m] = _SINGLE[m](F, A, B, conv)
    return r


def _to_float32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _channels(x: np.ndarray) -> np.ndarray:
    """HxW -> HxWx3 (replicated); HxWx1 -> HxWx3; HxWx4 -> first three channels."""
    if x.ndim == 2:
        return np.repeat(x[..., None], 3, axis=2)
    if x.ndim == 3 and x.shape[2] == 1:
        return np.repeat(x, 3, axis=2)
    if x.ndim == 3 and x.shape[2] in (3, 4):
        return x[..., :3]
    raise ValueError(f"expected HxW or HxWxC image, got shape {x.shape}")


def evaluate(
    fused: np.ndarray,
    ir: np.ndarray,
    vis: np.ndarray,
    convention: str | Convention | None = "cddfuse",
    metrics: Iterable[str] | None = None,
    **overrides,
) -> dict[str, float]:
    """Compute fusion metrics for one triplet.

    ``fused``, ``ir`` (A) and ``vis`` (B) are HxW luminance or HxWx3 RGB arrays on the 0..255
    scale (e.g. from :func:`read_gray` / :func:`read_rgb`); all the same HxW.  Arrays are converted
    to float32 first, as the reference reads them.  ``metrics`` selects a subset of :data:`METRICS`
    (default: all, in order).  ``convention`` is a name from :data:`CONVENTIONS` or a
    :class:`Convention`; keyword overrides (``mi_base=2``, ``ssim_range=255``, ``per_channel=True``,
    ``nabf_scale=...``) adjust it.

    Returns a dict in :data:`METRICS` order; when SSIM is requested it also holds ``SSIM_2`` (data
    range 2, the published CDDFuse column) and ``SSIM_255`` (data range 255), ``SSIM`` being the one
    the convention selects.
    """
    conv = get_convention(convention, **overrides)
    names = _resolve_metrics(metrics)
    F, A, B = (_to_float32(x) for x in (fused, ir, vis))
    if not (F.shape[:2] == A.shape[:2] == B.shape[:2]):
        raise ValueError(f"size mismatch: fused {F.shape}, ir {A.shape}, vis {B.shape}")
    colour = any(x.ndim == 3 and x.shape[2] > 1 for x in (F, A, B))
    if conv.per_channel and colour and F.ndim == 3 and F.shape[2] > 1:
        Fc, Ac, Bc = (_channels(x) for x in (F, A, B))
        per = [
            _evaluate_gray(
                np.ascontiguousarray(Fc[..., c]),
                np.ascontiguousarray(Ac[..., c]),
                np.ascontiguousarray(Bc[..., c]),
                names,
                conv,
            )
            for c in range(3)
        ]
        return {k: float(np.mean([p[k] for p in per])) for k in per[0]}
    F, A, B = (to_gray_cv(x) for x in (F, A, B))
    return _evaluate_gray(F, A, B, names, conv)
