"""Synthetic camera rigs drawn on registered pairs, to measure calibration and alignment against a
known truth (tests, ``bench/bench_rig.py``, ``scripts/rig_accuracy.py``).

:func:`draw_rig`: an infrared camera ``ir_width`` px wide (320–640, even sizes) whose frame covers 70–95 % of
the visible frame's width, with the visible frame's aspect ratio, shifted (the frame stays inside the
visible frame), rotated by up to ±4 degrees and with mild perspective (the corners move by up to 2 %
of the visible width). :func:`render_ir`: the infrared image that camera would see, rendered from the
registered infrared image through the true matrix (anti-aliased).
"""

from __future__ import annotations

import math

import numpy as np

from .rig import Rig, apply, corners, require_cv2


def draw_rig(
    vis_size, rng: np.random.Generator, ir_width=(320, 640), cover=(0.70, 0.95), max_deg=4.0, perspective=0.02
) -> Rig:
    """A random rig for a visible frame of ``vis_size`` (w, h) (module docstring)."""
    cv2 = require_cv2()
    wv, hv = vis_size
    for _ in range(1000):
        wi = 2 * int(rng.integers(ir_width[0] // 2, ir_width[1] // 2 + 1))  # even sizes, as sensors have
        hi = max(16, 2 * round(wi * hv / wv / 2))
        c = float(rng.uniform(*cover))
        ang = math.radians(float(rng.uniform(-max_deg, max_deg)))
        s = c * wv / wi
        # the frame's corners placed by similarity, then each moved by up to ``perspective`` * wv
        src = corners((wi, hi))
        cx, cy = (wi - 1) / 2, (hi - 1) / 2
        rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        dst = (src - (cx, cy)) @ (s * rot).T
        dst += rng.uniform(-perspective, perspective, size=(4, 2)) * wv
        span = dst.max(0) - dst.min(0)
        room = np.array([wv, hv]) - span
        if (room <= 1).any():
            continue
        lo = -0.5 - dst.min(0)
        dst += lo + rng.uniform(0, 1, size=2) * (room - 1)
        m = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)
        q = apply(m, src)
        if (q < -0.5).any() or (q[:, 0] > wv - 0.5).any() or (q[:, 1] > hv - 0.5).any():
            continue
        return Rig(m, (wi, hi), (wv, hv), "homography", {"synthetic": True})
    raise RuntimeError(f"could not draw a rig for {wv}x{hv}")


def render_ir(ir_registered: np.ndarray, rig: Rig) -> np.ndarray:
    """The infrared camera's image: ``ir_registered`` (on the visible grid) sampled through the rig's
    matrix, blurred first where the infrared camera has coarser pixels (anti-aliasing)."""
    cv2 = require_cv2()
    src = np.ascontiguousarray(ir_registered)
    s = math.sqrt(abs(np.linalg.det(rig.matrix[:2, :2])))  # visible px per infrared px
    if s > 1.0:
        src = cv2.GaussianBlur(src, (0, 0), 0.5 * math.sqrt(s * s - 1.0))
    out = cv2.warpPerspective(
        src, rig.matrix, rig.ir_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    return out


def frame_error(estimate: np.ndarray, truth: Rig, n: int = 16) -> np.ndarray:
    """Distances (visible px) between the estimate's and the truth's mapping of an n×n grid of points
    spread over the infrared frame (its pixel centres, corners included)."""
    wi, hi = truth.ir_size
    xs, ys = np.meshgrid(np.linspace(0, wi - 1, n), np.linspace(0, hi - 1, n))
    pts = np.stack([xs.ravel(), ys.ravel()], 1)
    return np.linalg.norm(apply(estimate, pts) - apply(truth.matrix, pts), axis=1)


__all__ = ["corners", "draw_rig", "frame_error", "render_ir"]
