"""Camera rigs: an infrared and a visible camera that are not pixel-registered (different sizes, fields
of view and positions), described once by a rig file and aligned everywhere.

The rig file is JSON::

    {"version": 1, "model": "homography", "matrix": [[...], [...], [...]],
     "ir_size": [w, h], "vis_size": [w, h], ...}

``matrix`` maps an infrared pixel (x, y, 1) to a visible pixel (OpenCV convention: pixel centres at
integer coordinates, the top-left pixel's centre is (0, 0)). ``model`` says which form the matrix
has: "translation" ([[1, 0, tx], [0, 1, ty], [0, 0, 1]]), "affine" (last row [0, 0, 1]) or
"homography" (any invertible 3x3, scaled so that matrix[2][2] = 1). Other keys (calibration
residuals, confidence, sources) are kept as ``meta``.

Alignment (:meth:`Rig.warp`, :meth:`Rig.model_input`, :meth:`Rig.blend`): the infrared image is
warped onto the visible grid (bilinear, ``cv2.warpPerspective``); the result has the visible image's
size. Outside the infrared field of view the visible image is used as is. The rule, per visible
pixel p with infrared position q = matrix⁻¹ p and d = the distance of q inside the infrared frame
(in infrared pixels, the frame's edges at -0.5 and size - 0.5):

- the model sees the warped infrared where d > 0 and the visible luminance elsewhere;
- the fused luminance is ``w * fused + (1 - w) * visible`` with ``w = smoothstep(clip(d / FEATHER_PX,
  0, 1))``: w = 1 (fusion as is) from FEATHER_PX infrared pixels inside the frame on, w = 0 (the
  visible image) outside, and a smooth ramp between, so there is no hard seam.

OpenCV is imported only when a rig is used (``pip install 'tokfuse_rt[rig]'``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

VERSION = 1
MODELS = ("translation", "affine", "homography")
FEATHER_PX = 16.0  # width of the blend ramp inside the infrared frame, in infrared pixels
MAX_CONDITION = 1e4  # of the matrix in normalised coordinates (frames scaled to [-1, 1])
_FORM_TOL = 1e-9


def require_cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError(
            f"camera rigs need OpenCV: pip install 'tokfuse_rt[rig]' (opencv-python-headless) [{e}]"
        ) from None
    return cv2


def _size(v, what: str) -> tuple[int, int]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"{what} must be [width, height], got {v!r}")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or int(x) < 1:
            raise ValueError(f"{what} must be two positive integers [width, height], got {v!r}")
        out.append(int(x))
    return out[0], out[1]


def _norm(size: tuple[int, int]) -> np.ndarray:
    """Pixel coordinates of a frame of ``size`` -> [-1, 1] (the frame's outer edges)."""
    w, h = size
    return np.array([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]])


def corners(size: tuple[int, int]) -> np.ndarray:
    """The four outer corners of a frame (edges at -0.5 and size - 0.5), (4, 2)."""
    w, h = size
    return np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 3x3 matrix (projective division)."""
    pts = np.asarray(pts, np.float64)
    q = pts @ m[:, :2].T + m[:, 2]
    return q[:, :2] / q[:, 2:3]


class Rig:
    """An infrared/visible camera rig: ``matrix`` (3x3, infrared pixel -> visible pixel), ``model``,
    ``ir_size`` and ``vis_size`` ((width, height)), ``meta`` (other keys of the file). Validated on
    construction (ValueError naming what is wrong and ``source``, the file it came from)."""

    def __init__(self, matrix, ir_size, vis_size, model: str = "homography", meta: dict | None = None, source=None):
        where = f"rig {source}: " if source else "rig: "
        try:
            if model not in MODELS:
                raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
            self.ir_size = _size(ir_size, "ir_size")
            self.vis_size = _size(vis_size, "vis_size")
            self.matrix = _check_matrix(matrix, model, self.ir_size, self.vis_size)
        except ValueError as e:
            raise ValueError(where + str(e)) from None
        self.model = model
        self.meta = dict(meta or {})
        self.source = str(source) if source else None
        self._maps = None  # cached (inside, weight) on the visible grid

    # --- file ------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d, source=None) -> Rig:
        where = f"rig {source}: " if source else "rig: "
        if not isinstance(d, dict):
            raise ValueError(f"{where}expected a JSON object, got {type(d).__name__}")
        missing = [k for k in ("version", "model", "matrix", "ir_size", "vis_size") if k not in d]
        if missing:
            raise ValueError(f"{where}missing key(s) {', '.join(missing)}")
        if d["version"] != VERSION or isinstance(d["version"], bool):
            raise ValueError(f"{where}version {d['version']!r} is not supported (this runtime reads version {VERSION})")
        meta = {k: v for k, v in d.items() if k not in ("version", "model", "matrix", "ir_size", "vis_size")}
        return cls(d["matrix"], d["ir_size"], d["vis_size"], d["model"], meta, source)

    @classmethod
    def load(cls, path) -> Rig:
        p = Path(os.fspath(path))
        if not p.is_file():
            raise FileNotFoundError(f"rig file not found: {p}")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"rig {p}: not a JSON file ({e})") from None
        return cls.from_dict(d, source=p)

    def to_dict(self) -> dict:
        return {
            "version": VERSION,
            "model": self.model,
            "matrix": [[float(x) for x in row] for row in self.matrix],
            "ir_size": list(self.ir_size),
            "vis_size": list(self.vis_size),
            **self.meta,
        }

    def save(self, path) -> Path:
        """Write the rig as JSON, atomically (nothing half-written under ``path``)."""
        from .outputs import atomic_write

        d = self.to_dict()
        rows = ",\n  ".join(json.dumps(r) for r in d.pop("matrix"))
        head = json.dumps({k: d[k] for k in ("version", "model")})[:-1]
        tail = json.dumps({k: v for k, v in d.items() if k not in ("version", "model")}, indent=1)[1:]
        data = f'{head},\n "matrix": [\n  {rows}\n ],{tail}\n'.encode()
        return atomic_write(path, lambda f: f.write(data))

    @classmethod
    def identity(cls, size) -> Rig:
        return cls(np.eye(3), size, size, "translation")

    # --- geometry --------------------------------------------------------------------------------
    def check_sizes(self, ir_wh: tuple[int, int], vis_wh: tuple[int, int]) -> None:
        """ValueError unless the images have the sizes the rig was made for."""
        for name, got, want in (("ir", ir_wh, self.ir_size), ("vis", vis_wh, self.vis_size)):
            if tuple(got) != tuple(want):
                raise ValueError(
                    f"{name} is {got[0]}x{got[1]} but the rig{' ' + self.source if self.source else ''} is for "
                    f"{name} images of {want[0]}x{want[1]} (ir {self.ir_size[0]}x{self.ir_size[1]}, vis "
                    f"{self.vis_size[0]}x{self.vis_size[1]}); calibrate a rig for these cameras"
                )

    def warp(self, ir: np.ndarray) -> np.ndarray:
        """The infrared image (H_ir, W_ir[, C], uint8 or float32) on the visible grid (bilinear;
        outside the frame the edge is repeated, see :meth:`model_input`)."""
        cv2 = require_cv2()
        self.check_sizes((ir.shape[1], ir.shape[0]), self.vis_size)
        src = np.ascontiguousarray(ir)
        out = cv2.warpPerspective(
            src, self.matrix, self.vis_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return out.reshape(out.shape[:2] + src.shape[2:])

    def maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(inside, weight) on the visible grid: bool, the pixel sees the infrared frame; float32, the
        blend weight of the fused image (module docstring). Computed once per rig."""
        if self._maps is None:
            d = self.depth_inside()
            t = np.clip(d / np.float32(FEATHER_PX), 0.0, 1.0)
            self._maps = (d > 0, (t * t * (3.0 - 2.0 * t)).astype(np.float32), d <= 0)
        return self._maps[:2]

    def depth_inside(self) -> np.ndarray:
        """float32 (H_vis, W_vis): how far inside the infrared frame each visible pixel maps, in infrared
        pixels (<= 0: outside, or behind the infrared camera)."""
        w, h = self.vis_size
        wi, hi = self.ir_size
        inv = np.linalg.inv(self.matrix)
        xs = np.arange(w, dtype=np.float64)
        out = np.empty((h, w), np.float32)
        for y0 in range(0, h, 256):
            ys = np.arange(y0, min(h, y0 + 256), dtype=np.float64)[:, None]
            z = inv[2, 0] * xs + inv[2, 1] * ys + inv[2, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                u = (inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]) / z
                v = (inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]) / z
                d = np.minimum(np.minimum(u + 0.5, wi - 0.5 - u), np.minimum(v + 0.5, hi - 0.5 - v))
            d[~(z > 0) | ~np.isfinite(d)] = -1.0
            out[y0 : y0 + len(ys)] = d
        return out

    def model_input(self, y_ir_on_vis: np.ndarray, y_vis: np.ndarray, rows=slice(None), cols=slice(None)):
        """The infrared luminance the model sees in the window ``rows`` x ``cols`` of the visible grid:
        the warped infrared inside the frame, the visible luminance outside."""
        out = np.array(y_ir_on_vis, dtype=np.float32)  # a copy: the caller's array is left as is
        self.maps()
        np.copyto(out, y_vis, where=self._maps[2][rows, cols])
        return out

    def blend(self, fused_y: np.ndarray, y_vis: np.ndarray, rows=slice(None), cols=slice(None)) -> np.ndarray:
        """The fused luminance of a window, feathered into the visible luminance outside the frame."""
        out = np.subtract(fused_y, y_vis, dtype=np.float32)
        out *= self.maps()[1][rows, cols]
        out += y_vis
        return out

    def coverage(self) -> float:
        """Fraction of the visible frame that sees the infrared frame."""
        return float(self.maps()[0].mean())

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Rig)
            and self.model == other.model
            and self.ir_size == other.ir_size
            and self.vis_size == other.vis_size
            and np.array_equal(self.matrix, other.matrix)
        )

    __hash__ = None

    def __repr__(self) -> str:
        return (
            f"Rig({self.model}, ir {self.ir_size[0]}x{self.ir_size[1]} -> vis {self.vis_size[0]}x{self.vis_size[1]}"
            f"{', ' + self.source if self.source else ''})"
        )


def _check_matrix(matrix, model: str, ir_size, vis_size) -> np.ndarray:
    try:
        m = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("matrix must be a 3x3 array of numbers") from None
    if m.shape != (3, 3):
        raise ValueError(f"matrix must be 3x3, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("matrix has NaN or infinite entries")
    if abs(m[2, 2]) < 1e-12:
        raise ValueError("matrix[2][2] is 0 (a homography is scaled so that matrix[2][2] = 1)")
    m = m / m[2, 2]
    if model in ("translation", "affine") and np.abs(m[2, :2]).max() > _FORM_TOL:
        raise ValueError(f"a {model} matrix has last row [0, 0, 1], got {m[2].tolist()}")
    if model == "translation" and np.abs(m[:2, :2] - np.eye(2)).max() > _FORM_TOL:
        raise ValueError(f"a translation matrix is [[1, 0, tx], [0, 1, ty], [0, 0, 1]], got {m.tolist()}")
    if model != "homography":
        m[2] = (0.0, 0.0, 1.0)
    if model == "translation":
        m[:2, :2] = np.eye(2)
    n = _norm(vis_size) @ m @ np.linalg.inv(_norm(ir_size))
    sv = np.linalg.svd(n, compute_uv=False)
    if sv[-1] <= 1e-12 * sv[0]:
        raise ValueError("matrix is singular (not invertible)")
    cond = sv[0] / sv[-1]
    if cond > MAX_CONDITION:
        raise ValueError(
            f"matrix is ill-conditioned (condition number {cond:.3g} in normalised coordinates, over {MAX_CONDITION:g})"
        )
    c = corners(ir_size)
    z = c @ m[2, :2] + m[2, 2]
    if not (z > 0).all():
        raise ValueError(
            "matrix maps part of the infrared frame to infinity or behind the camera (a degenerate homography)"
        )
    q = apply(m, c)
    e = np.roll(q, -1, axis=0) - q  # edges of the mapped frame
    cross = e[:, 0] * np.roll(e, -1, axis=0)[:, 1] - e[:, 1] * np.roll(e, -1, axis=0)[:, 0]
    if not (all(x > 0 for x in cross) or all(x < 0 for x in cross)):
        raise ValueError("matrix folds the infrared frame (its corners do not map to a convex quadrilateral)")
    if math.isclose(0.0, _overlap(q, vis_size), abs_tol=1e-9):
        raise ValueError("the infrared frame maps entirely outside the visible frame")
    return m


def _overlap(q: np.ndarray, vis_size) -> float:
    """Rough overlap test: the bounding boxes of the mapped infrared frame and the visible frame."""
    w, h = vis_size
    x0, y0 = np.maximum(q.min(0), (-0.5, -0.5))
    x1, y1 = np.minimum(q.max(0), (w - 0.5, h - 0.5))
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def as_rig(x, name: str = "align") -> Rig | None:
    """A Rig from a Rig, a rig file path, or a rig dict; None stays None."""
    if x is None or isinstance(x, Rig):
        return x
    if isinstance(x, (str, os.PathLike)):
        return Rig.load(x)
    if isinstance(x, dict):
        return Rig.from_dict(x)
    raise TypeError(f"{name}: expected a Rig, a rig file path or a dict, got {type(x).__name__}")
