"""Estimating a camera rig (``tokfuse calibrate``): the matrix that maps infrared pixels onto visible
pixels, from one or more image pairs of the same rig, or from hand-picked point correspondences.

Automatic estimation (:func:`estimate_pair`), cross-modal: infrared and visible intensities differ,
but edges and structure agree, so both images are compared as gradient-magnitude images
(:func:`structure`: Gaussian-smoothed, Sobel magnitude, divided by its local mean so that weak and
strong edges weigh alike).

1. **Global search** (coarse, visible width ~``COARSE_WIDTH`` px): the infrared structure image,
   scaled so that it covers 40–125 % of the visible width (geometric steps of 3 %) and rotated by
   -4, 0, +4 degrees, is slid over the visible one (normalised cross-correlation,
   ``cv2.matchTemplate``); the best few distinct peaks are kept.
2. **Refinement**: OpenCV's ECC (``cv2.findTransformECC``, enhanced correlation coefficient, which
   ignores gain and offset) on the structure images, coarse to fine, for the rig's model
   (translation, affine, homography); the candidate with the best final correlation wins. Pairs of
   equal sizes keep the identity unless the estimate's correlation is ``IDENTITY_RHO`` higher (a
   registered pair stays registered).

The final correlation (rho, in [-1, 1]) is the pair's confidence; below ``MIN_RHO`` the pair is
unreliable, and so is a pair where a placement far from the best (another peak of the global
search) correlates within ``AMBIGUOUS_RHO`` of it (repetitive or weak structure). Several pairs
(:func:`combine`): each pair's estimate maps the infrared frame's corners; the coordinate-wise
median of those corners gives the combined matrix; a pair whose corners lie more than ``AGREE_PX``
visible pixels from the median disagrees and is dropped; fewer than half of the pairs agreeing is a
failure. Every failure raises :class:`CalibrationError` (nothing is written).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .rig import MODELS, Rig, apply, corners, require_cv2

COARSE_WIDTH = 192  # visible width of the global search, px
COVER_RANGE = (0.40, 1.25)  # infrared frame width / visible frame width searched
SCALE_STEP = 1.03
ANGLES = (-4.0, 0.0, 4.0)  # degrees searched globally (ECC refines the rest)
CANDIDATES = 3  # distinct peaks of the global search refined
LEVEL_WIDTHS = (256, 512)  # visible width of the refinement levels below full resolution
MIN_RHO = 0.30  # final ECC correlation of structure images below which a pair is unreliable
AGREE_PX = 4.0  # pairs whose estimates differ by more (max over the frame corners) disagree
AMBIGUOUS_RHO = 0.02  # a far placement within this correlation of the best makes the pair ambiguous
MIN_STRUCTURE = 1e-3  # standard deviation of a luminance below which an image is flat
IDENTITY_RHO = 0.01  # equal sizes: the identity is kept unless an estimate correlates this much better
# A refined placement whose perspective divisor (m[2] . (x, y, 1)) differs more than this between the
# infrared frame's corners is dropped: rigs of side-by-side cameras are close to affine, and ECC can run
# off to a strongly projective matrix that correlates well on a sliver of overlap. Chosen on the
# development rigs (scripts/rig_dev.py sets, 16 pairs each, 204 refinements): the right ones (under 10 px
# from the truth) reach 1.21, 36 of the 126 wrong ones (over 30 px) exceed 1.5.
MAX_PERSPECTIVE = 1.5


class CalibrationError(ValueError):
    """No reliable rig (flat images, no agreement between pairs, bad points); nothing is written."""


@dataclass
class PairResult:
    name: str
    matrix: np.ndarray
    rho: float  # ECC correlation of the structure images at full resolution
    coarse_score: float
    seconds: float
    residual_px: float = 0.0  # max corner distance to the combined estimate
    inlier: bool = True
    ambiguous: bool = False  # another placement, far from this one, correlates about as well


@dataclass
class Calibration:
    rig: Rig
    pairs: list = field(default_factory=list)
    confidence: float = 0.0

    def report(self) -> str:
        lines = []
        for p in self.pairs:
            lines.append(
                f"  pair {p.name}: correlation {p.rho:.3f}, residual to the combined rig {p.residual_px:.2f} px "
                f"(max over the infrared frame corners){'' if p.inlier else ' -- disagrees, not used'}, "
                f"{p.seconds:.2f} s"
            )
        return "\n".join(lines)


# --- images --------------------------------------------------------------------------------------
def structure(y: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Luminance (H, W) float32 -> gradient magnitude normalised by its local mean, float32."""
    cv2 = require_cv2()
    y = np.ascontiguousarray(y, np.float32)
    if sigma > 0:
        y = cv2.GaussianBlur(y, (0, 0), sigma)
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3)
    g = cv2.magnitude(gx, gy)
    r = max(4.0, 0.04 * max(y.shape))
    local = cv2.GaussianBlur(g, (0, 0), r)
    return g / (local + np.float32(0.1 * float(g.mean()) + 1e-6))


def _resize(y: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """(y resized by about f, T: full-resolution pixel -> resized pixel, pixel centres kept)."""
    cv2 = require_cv2()
    h, w = y.shape
    nw, nh = max(8, round(w * f)), max(8, round(h * f))
    fx, fy = nw / w, nh / h
    t = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]])
    if (nw, nh) == (w, h):
        return y, np.eye(3)
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(y, (nw, nh), interpolation=interp), t


def _check_flat(y: np.ndarray, name: str) -> None:
    if float(y.std()) < MIN_STRUCTURE:
        raise CalibrationError(f"{name}: the image is flat (no structure to align)")


# --- one pair ------------------------------------------------------------------------------------
def _coarse(y_ir: np.ndarray, y_vis: np.ndarray, model: str) -> list:
    """Global search -> [(score, 3x3 matrix full-resolution ir -> vis)], best first, distinct."""
    cv2 = require_cv2()
    f = min(1.0, COARSE_WIDTH / y_vis.shape[1])
    vis_c, t_vis = _resize(y_vis, f)
    s_vis = structure(vis_c, 1.0)
    hv, wv = s_vis.shape
    pad_y, pad_x = hv // 3, wv // 3
    canvas = cv2.copyMakeBorder(s_vis, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=0)
    hi, wi = y_ir.shape
    if model == "translation":
        covers, angles = [wi / y_vis.shape[1]], [0.0]
    else:
        n = int(math.log(COVER_RANGE[1] / COVER_RANGE[0]) / math.log(SCALE_STEP)) + 1
        covers = [COVER_RANGE[0] * SCALE_STEP**i for i in range(n)]
        angles = ANGLES
    found = []
    for cover in covers:
        s = cover * y_vis.shape[1] / wi  # visible pixels per infrared pixel
        g = f * s  # coarse pixels per infrared pixel
        ir_c, t_ir = _resize(y_ir, g)
        s_ir = structure(ir_c, 1.0)
        th, tw = s_ir.shape
        for ang in angles:
            if ang:
                c = ((tw - 1) / 2, (th - 1) / 2)
                rot = cv2.getRotationMatrix2D(c, ang, 1.0)
                cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
                bw, bh = int(th * sin + tw * cos), int(th * cos + tw * sin)
                rot[0, 2] += (bw - 1) / 2 - c[0]
                rot[1, 2] += (bh - 1) / 2 - c[1]
                tpl = cv2.warpAffine(s_ir, rot, (bw, bh), flags=cv2.INTER_LINEAR, borderValue=0)
                r3 = np.vstack([rot, [0, 0, 1]])
            else:
                tpl, r3 = s_ir, np.eye(3)
            if tpl.shape[0] >= canvas.shape[0] or tpl.shape[1] >= canvas.shape[1] or min(tpl.shape) < 8:
                continue
            res = cv2.matchTemplate(canvas, tpl, cv2.TM_CCOEFF_NORMED)
            _, score, _, (x, y) = cv2.minMaxLoc(res)
            shift = np.array([[1, 0, x - pad_x], [0, 1, y - pad_y], [0, 0, 1.0]])
            m = np.linalg.inv(t_vis) @ shift @ r3 @ t_ir  # full ir -> coarse ir -> template -> coarse vis -> vis
            found.append((float(score), m / m[2, 2]))
    found.sort(key=lambda t: -t[0])
    picked: list = []
    size = (wi, hi)
    for score, m in found:
        q = apply(m, corners(size))
        if all(np.abs(q - apply(p, corners(size))).max() > 0.05 * y_vis.shape[1] for _, p in picked):
            picked.append((score, m))
        if len(picked) == CANDIDATES:
            break
    return picked


_MOTION = {"translation": "MOTION_TRANSLATION", "affine": "MOTION_AFFINE", "homography": "MOTION_HOMOGRAPHY"}


def _ecc(s_ir, s_vis, m: np.ndarray, model: str, iters: int) -> tuple[float, np.ndarray]:
    """One ECC run: template = infrared structure, input = visible structure; the warp maps infrared
    pixels to visible pixels. Returns (rho, 3x3)."""
    cv2 = require_cv2()
    motion = getattr(cv2, _MOTION[model])
    w = (m if model == "homography" else m[:2]).astype(np.float32)
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iters, 1e-6)
    rho, w = cv2.findTransformECC(s_ir, s_vis, w, motion, crit, None, 1)
    out = np.vstack([w, [0, 0, 1]]).astype(np.float64) if model != "homography" else w.astype(np.float64)
    return float(rho), out / out[2, 2]


def _refine(y_ir, y_vis, m0: np.ndarray, model: str) -> tuple[float, np.ndarray]:
    """Coarse-to-fine ECC from ``m0`` (full-resolution ir -> vis); returns (rho at full resolution, matrix)."""
    cv2 = require_cv2()
    m = m0.copy()
    rho = -1.0
    fs = [w / y_vis.shape[1] for w in LEVEL_WIDTHS if w < 0.75 * y_vis.shape[1]] + [1.0]
    for f in fs:
        vis_l, t_vis = _resize(y_vis, f)
        ir_l, t_ir = _resize(y_ir, f * _scale(m))
        s_vis, s_ir = structure(vis_l, 1.0), structure(ir_l, 1.0)
        ml = t_vis @ m @ np.linalg.inv(t_ir)
        try:
            rho, ml = _ecc(s_ir, s_vis, ml / ml[2, 2], model, 60 if f < 1 else 40)
        except cv2.error:
            return -1.0, m
        m = np.linalg.inv(t_vis) @ ml @ t_ir
        m /= m[2, 2]
    return rho, m


def _corr(y_ir, y_vis, m: np.ndarray) -> float:
    """Correlation of the structure images with the infrared warped by ``m``, over the infrared field of view."""
    cv2 = require_cv2()
    s_ir, s_vis = structure(y_ir, 1.0), structure(y_vis, 1.0)
    size = (y_vis.shape[1], y_vis.shape[0])
    w = cv2.warpPerspective(s_ir, m, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones_like(s_ir), m, size, flags=cv2.INTER_NEAREST) > 0
    a, b = w[mask], s_vis[mask]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12))


def _scale(m: np.ndarray) -> float:
    """Visible pixels per infrared pixel of a matrix (square root of the area ratio at the origin)."""
    return float(math.sqrt(abs(np.linalg.det(m[:2, :2])))) or 1.0


def perspective(m: np.ndarray, size) -> float:
    """Largest over smallest perspective divisor ``m[2] . (x, y, 1)`` at the corners of a frame of ``size``
    (w, h); inf when a corner is not in front (divisor <= 0). 1 for an affine matrix."""
    c = corners(size)
    w = m[2, 0] * c[:, 0] + m[2, 1] * c[:, 1] + m[2, 2]
    return float(w.max() / w.min()) if w.min() > 0 else math.inf


def estimate_pair(y_ir: np.ndarray, y_vis: np.ndarray, model: str = "homography", name: str = "1") -> PairResult:
    """Estimate the matrix of one pair (luminance float32 arrays). Raises CalibrationError when flat."""
    import time

    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    t0 = time.perf_counter()
    _check_flat(y_ir, f"pair {name}: ir")
    _check_flat(y_vis, f"pair {name}: vis")
    cands = _coarse(y_ir, y_vis, model)
    if not cands:
        raise CalibrationError(f"pair {name}: the global search found no placement of the infrared image")
    size = (y_ir.shape[1], y_ir.shape[0])
    refined = ((*_refine(y_ir, y_vis, m0, model), score) for score, m0 in cands)
    done = sorted((t for t in refined if perspective(t[1], size) <= MAX_PERSPECTIVE), key=lambda t: -t[0])
    if not done:
        raise CalibrationError(
            f"pair {name}: no plausible alignment (every refined placement is strongly projective, more than "
            f"{MAX_PERSPECTIVE:g}x between the corners)"
        )
    rho, m, score = done[0]
    if y_ir.shape == y_vis.shape and _corr(y_ir, y_vis, np.eye(3)) >= _corr(y_ir, y_vis, m) - IDENTITY_RHO:
        m = np.eye(3)  # equal sizes: the identity unless the estimate correlates clearly better
    c = corners((y_ir.shape[1], y_ir.shape[0]))
    ambiguous = any(
        r2 >= rho - AMBIGUOUS_RHO and np.linalg.norm(apply(m2, c) - apply(m, c), axis=1).max() > AGREE_PX
        for r2, m2, _ in done[1:]
    )
    return PairResult(name, m, rho, score, time.perf_counter() - t0, ambiguous=ambiguous)


# --- several pairs -------------------------------------------------------------------------------
def combine(results: list, ir_size, vis_size, model: str) -> Calibration:
    """Robust combination of per-pair estimates (module docstring); CalibrationError when unreliable."""
    cv2 = require_cv2()
    for r in results:
        r.inlier = r.rho >= MIN_RHO and not r.ambiguous
    good = [r for r in results if r.inlier]
    if not good:
        worst = ", ".join(f"pair {r.name}: {r.rho:.2f}{' (ambiguous)' if r.ambiguous else ''}" for r in results)
        raise CalibrationError(
            f"no reliable alignment: the structure of the infrared and visible images does not match well enough "
            f"(correlation {worst}; needs >= {MIN_RHO} and one clear placement); use other pairs (with edges "
            "in both), or --points"
        )
    c = corners(ir_size)
    qs = np.stack([apply(r.matrix, c) for r in good])
    med = np.median(qs, axis=0)
    for r, q in zip(good, qs):
        r.residual_px = float(np.linalg.norm(q - med, axis=1).max())
        r.inlier = r.residual_px <= AGREE_PX
    inl = [r for r in good if r.inlier]
    if len(inl) * 2 <= len(results) and len(results) > 1:
        weak = [r.name for r in results if r not in good]
        raise CalibrationError(
            f"the pairs disagree: only {len(inl)} of {len(results)} pairs agree within {AGREE_PX} px "
            f"(residuals {', '.join(f'pair {r.name}: {r.residual_px:.1f}' for r in good)} px"
            f"{'; unreliable: pair ' + ', '.join(weak) if weak else ''}); are they from the same rig?"
        )
    if len(inl) == 1:
        m = inl[0].matrix
    else:
        med = np.median(np.stack([apply(r.matrix, c) for r in inl]), axis=0)
        if model == "homography":
            m = cv2.getPerspectiveTransform(c.astype(np.float32), med.astype(np.float32)).astype(np.float64)
        else:
            m = np.median(np.stack([r.matrix for r in inl]), axis=0)
    for r in good:
        r.residual_px = float(np.linalg.norm(apply(r.matrix, c) - apply(m, c), axis=1).max())
    conf = float(min(r.rho for r in inl))
    meta = {
        "calibration": {
            "method": "structure (gradient) global search + ECC",
            "pairs": [
                {
                    "name": r.name,
                    "correlation": round(r.rho, 4),
                    "residual_px": round(r.residual_px, 3),
                    "used": r.inlier,
                }
                for r in results
            ],
            "confidence": round(conf, 4),
        }
    }
    try:
        rig = Rig(m, ir_size, vis_size, model, meta)
    except ValueError as e:
        raise CalibrationError(f"the estimate is not a usable rig: {e}") from None
    return Calibration(rig, results, conf)


def calibrate_images(pairs: list, model: str = "homography", max_pixels=None) -> Calibration:
    """[(ir path or array, vis path or array)] of one rig -> Calibration (all pairs of the same two sizes)."""
    from .imageio import DEFAULT_MAX_PIXELS, luminance
    from .inputs import to_array

    if not pairs:
        raise ValueError("calibrate needs at least one (ir, vis) pair")
    results, sizes = [], None
    for i, (ir, vis) in enumerate(pairs, 1):
        a, _ = to_array(ir, f"pair {i}: ir", max_pixels or DEFAULT_MAX_PIXELS)
        b, _ = to_array(vis, f"pair {i}: vis", max_pixels or DEFAULT_MAX_PIXELS)
        sz = ((a.shape[1], a.shape[0]), (b.shape[1], b.shape[0]))
        if sizes is None:
            sizes = sz
        elif sz != sizes:
            raise ValueError(
                f"pair {i}: ir {sz[0][0]}x{sz[0][1]}, vis {sz[1][0]}x{sz[1][1]}, but pair 1 is ir "
                f"{sizes[0][0]}x{sizes[0][1]}, vis {sizes[1][0]}x{sizes[1][1]}: the pairs of one rig have "
                "the same sizes"
            )
        results.append(estimate_pair(luminance(a), luminance(b), model, str(i)))
    return combine(results, sizes[0], sizes[1], model)


# --- hand-picked points --------------------------------------------------------------------------
def read_points(path) -> np.ndarray:
    """CSV of ``ir_x, ir_y, vis_x, vis_y`` rows (a header row is allowed) -> (N, 4) float64."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"points file not found: {p}")
    rows = []
    with open(p, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), 1):
            cells = [c.strip() for c in row if c.strip()]
            if not cells or cells[0].startswith("#"):
                continue
            try:
                vals = [float(c) for c in cells]
            except ValueError:
                if n == 1 and not rows:
                    continue  # header
                raise ValueError(
                    f"points {p}: line {n}: expected 4 numbers ir_x, ir_y, vis_x, vis_y, got {row}"
                ) from None
            if len(vals) != 4:
                raise ValueError(f"points {p}: line {n}: expected 4 numbers ir_x, ir_y, vis_x, vis_y, got {len(vals)}")
            rows.append(vals)
    pts = np.array(rows, np.float64).reshape(-1, 4)
    if not np.isfinite(pts).all():
        raise ValueError(f"points {p}: NaN or infinite coordinates")
    return pts


_MIN_POINTS = {"translation": 1, "affine": 3, "homography": 4}


def fit_points(pts: np.ndarray, ir_size, vis_size, model: str = "homography", source="points") -> Calibration:
    """Least-squares fit of ``model`` to correspondences (N, 4); CalibrationError when degenerate."""
    cv2 = require_cv2()
    need = max(4, _MIN_POINTS[model])
    if len(pts) < need:
        raise CalibrationError(f"{source}: {len(pts)} correspondence(s); at least {need} are needed")
    a, b = pts[:, :2], pts[:, 2:]
    for side, q, size in (("infrared", a, ir_size), ("visible", b, vis_size)):
        if len(np.unique(np.round(q, 6), axis=0)) < len(q):
            raise CalibrationError(f"{source}: repeated {side} points")
        sv = np.linalg.svd(q - q.mean(0), compute_uv=False)
        if sv[1] < 0.01 * max(size):
            raise CalibrationError(
                f"{source}: the {side} points are (nearly) collinear; pick points spread over the frame, "
                "not along one line"
            )
        if model == "homography" and len(q) == 4:
            for i in range(4):
                t = np.delete(q, i, axis=0)
                u, v = t[1] - t[0], t[2] - t[0]
                area = abs(u[0] * v[1] - u[1] * v[0]) / 2
                if area < 1e-4 * size[0] * size[1]:
                    raise CalibrationError(f"{source}: three of the four {side} points are collinear")
    if model == "translation":
        m = np.eye(3)
        m[:2, 2] = np.median(b - a, axis=0)
    elif model == "affine":
        m2, _ = (
            cv2.estimateAffine2D(a, b, method=cv2.LMEDS)
            if len(a) > 3
            else (cv2.getAffineTransform(a.astype(np.float32), b.astype(np.float32)), None)
        )
        if m2 is None:
            raise CalibrationError(f"{source}: no affine transform fits the points")
        m = np.vstack([m2, [0, 0, 1]]).astype(np.float64)
    else:
        m, _ = cv2.findHomography(a, b, 0)
        if m is None:
            raise CalibrationError(f"{source}: no homography fits the points (degenerate configuration)")
    res = np.linalg.norm(apply(m, a) - b, axis=1)
    meta = {
        "calibration": {
            "method": f"{len(pts)} point correspondences ({source})",
            "rms_px": round(float(np.sqrt((res**2).mean())), 3),
            "max_px": round(float(res.max()), 3),
        }
    }
    try:
        rig = Rig(m, ir_size, vis_size, model, meta)
    except ValueError as e:
        raise CalibrationError(f"{source}: the points give no usable rig: {e}") from None
    cal = Calibration(rig, [], 1.0)
    cal.point_residuals = res
    return cal


# --- preview -------------------------------------------------------------------------------------
def checker_preview(ir: np.ndarray, vis: np.ndarray, rig: Rig, squares: int = 8) -> np.ndarray:
    """uint8 RGB picture: left, the infrared image stretched to the visible size (no alignment) in a
    checkerboard with the visible image; right, the same with the infrared aligned by ``rig`` (outside
    its field of view the visible image). Edges that continue across squares mean a good alignment."""
    cv2 = require_cv2()
    from .imageio import luminance, to_uint8

    w, h = rig.vis_size
    vis_rgb = to_uint8(
        np.repeat(luminance(vis)[..., None], 3, -1)
        if vis.ndim == 2
        else vis.astype(np.float32) / (255.0 if vis.dtype == np.uint8 else 1.0)
    )
    y_ir = luminance(ir)
    before = cv2.resize(y_ir, (w, h), interpolation=cv2.INTER_LINEAR)
    after = rig.model_input(rig.warp(y_ir), luminance(vis))
    cell = max(8, int(math.ceil(max(w, h) / squares)))
    yy, xx = np.mgrid[0:h, 0:w]
    board = ((yy // cell + xx // cell) % 2 == 0)[..., None]
    panels = []
    for y in (before, after):
        ir_rgb = np.repeat(to_uint8(np.clip(y, 0, 1))[..., None], 3, -1)
        panels.append(np.where(board, ir_rgb, vis_rgb))
    gap = np.full((h, max(4, w // 64), 3), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1]], axis=1)
