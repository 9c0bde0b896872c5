"""Temporal stability of a fused video: BiSWE, the Bi-directional Self-Warping Error of VF-Bench.

Source: Z. Zhao, H. Bai, B. Ke, Y. Cui, L. Deng, Y. Zhang, K. Zhang, K. Schindler, "A Unified
Solution to Video Fusion: From Multi-Frame Learning to Benchmarking", NeurIPS 2025
(arXiv:2505.19858); definition as in the VF-Bench evaluation code (``BiSWE_Evaluator``,
``src/util/metric.py``, and its ``flow_warp``).

Formula. Frames are 8-bit values (x·255 rounded) F_0 .. F_{T-1} of the fused video; A and B are the
two source videos (infrared, visible) of the same length and size. For every interior frame
t = 1 .. T-2 and each neighbour s in {t-1, t+1}:

    E_{t,s} = Σ_x M_{t,s}(x) · |F_t(x) - F_s(x + u_{t→s}(x))|  /  (Σ_x M_{t,s}(x) + 1e-10)
    BiSWE_t = E_{t,t-1} + E_{t,t+1}
    BiSWE   = mean over t of BiSWE_t                                (lower = more stable; 0 if static)

- u_{t→s}: optical flow from F_t to F_s computed on the fused video itself ("self-warping"), in
  pixels (x, y), with the convention F_t(x) ≈ F_s(x + u(x)).
- F_s(x + u): bilinear sampling at real-valued pixel coordinates, coordinates clamped to the image
  (PyTorch ``grid_sample(align_corners=True, padding_mode="border")`` in VF-Bench).
- |·|: absolute difference averaged over the colour channels (one channel for gray frames).
- M_{t,s} = M^A_{t,s} · M^B_{t,s}: pixels visible in both sources. For a source V,
  M^V_{t,s}(x) = 1 when ‖v_{t→s}(x) + v_{s→t}(x + v_{t→s}(x))‖₂ < 1 px (forward-backward
  consistency of V's own flow, the backward flow sampled as above), else 0. The masks come from the
  sources, so fused videos and the sources themselves are scored on the same pixels.

Conventions of this implementation (differences from VF-Bench said plainly):

- Optical flow: OpenCV's Farneback method (``cv2.calcOpticalFlowFarneback`` with pyr_scale 0.5,
  levels 3, winsize 15, iterations 3, poly_n 5, poly_sigma 1.2; opencv-python-headless, part of
  ``tokfuse_rt[video]``) on the 8-bit BT.601 luminance of each frame, instead of VF-Bench's learned
  SEA-RAFT, whose weights are not fetched here. Absolute values therefore differ from VF-Bench's
  tables; comparisons made with this function (fused vs sources, token reuse vs per-frame fusion)
  are like for like. Any flow function with the same convention can be passed as ``flow``.
- Units: 8-bit grey levels (0..255), as VF-Bench.
- A video is a sequence of frames: uint8 (0..255) or float (0..1) arrays (H, W) or (H, W, 3), or an
  array (T, H, W[, 3]). Sources are scored as a fused video would be (``BiSWE.sources()``).
"""

from __future__ import annotations

import numpy as np

FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
OCCLUSION_THRESHOLD = 1.0  # px, VF-Bench's occ_threshold


def farneback_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense optical flow (H, W, 2) float32 (x, y) from 8-bit gray ``a`` to ``b``: a(x) ≈ b(x + flow(x))."""
    try:
        import cv2
    except ImportError as e:
        raise ImportError(
            f"BiSWE's optical flow needs OpenCV: pip install 'tokfuse_rt[video]' (opencv-python-headless) [{e}]"
        ) from None
    return cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK)


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``img`` (H, W) or (H, W, C) at x + flow(x), bilinearly, coordinates clamped to the image
    (``grid_sample(align_corners=True, padding_mode="border")``). Returns float64."""
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    x = np.clip(xs + flow[..., 0].astype(np.float64), 0.0, w - 1.0)
    y = np.clip(ys + flow[..., 1].astype(np.float64), 0.0, h - 1.0)
    x0 = np.floor(x).astype(np.intp)
    y0 = np.floor(y).astype(np.intp)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    wx = x - x0
    wy = y - y0
    src = img.astype(np.float64, copy=False)
    if src.ndim == 3:
        wx, wy = wx[..., None], wy[..., None]
    top = src[y0, x0] * (1 - wx) + src[y0, x1] * wx
    bot = src[y1, x0] * (1 - wx) + src[y1, x1] * wx
    return top * (1 - wy) + bot * wy


def _frames(video, name: str) -> list:
    """A video -> list of 8-bit-valued float64 frames (H, W) or (H, W, 3)."""
    if isinstance(video, np.ndarray):
        if video.ndim not in (3, 4):
            raise ValueError(f"{name}: a video array must be (T, H, W) or (T, H, W, 3), got shape {video.shape}")
        video = list(video)
    try:
        frames = list(video)
    except TypeError:
        raise TypeError(f"{name}: expected a sequence of frames, got {type(video).__name__}") from None
    out = []
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.ndim == 3 and f.shape[2] == 1:
            f = f[..., 0]
        if f.ndim not in (2, 3) or (f.ndim == 3 and f.shape[2] != 3):
            raise ValueError(f"{name}[{i}]: expected a frame (H, W) or (H, W, 3), got shape {f.shape}")
        if f.dtype == np.uint8:
            g = f.astype(np.float64)
        elif np.issubdtype(f.dtype, np.floating):
            if not np.isfinite(f).all():
                raise ValueError(f"{name}[{i}]: NaN or inf in the frame")
            g = np.round(np.clip(f.astype(np.float64), 0.0, 1.0) * 255.0)
        else:
            raise TypeError(f"{name}[{i}]: dtype {f.dtype} not supported (uint8 or float in [0, 1])")
        if out and g.shape[:2] != out[0].shape[:2]:
            raise ValueError(
                f"{name}[{i}]: frame size {g.shape[1]}x{g.shape[0]} differs from frame 0 "
                f"({out[0].shape[1]}x{out[0].shape[0]})"
            )
        out.append(g)
    return out


def _gray8(f: np.ndarray) -> np.ndarray:
    if f.ndim == 2:
        return f.astype(np.uint8)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def _pair_flows(frames, flow):
    """[(u_{i→i+1}, u_{i+1→i}) for each adjacent pair] of a list of frames."""
    g = [_gray8(f) for f in frames]
    return [(flow(g[i], g[i + 1]), flow(g[i + 1], g[i])) for i in range(len(g) - 1)]


def _masks(pairs, thr: float):
    """Forward-backward consistency masks {(t, s): bool (H, W)} of one source for interior t."""
    out = {}
    for t in range(1, len(pairs)):
        for s, fwd, bwd in ((t - 1, pairs[t - 1][1], pairs[t - 1][0]), (t + 1, pairs[t][0], pairs[t][1])):
            d = fwd + warp(bwd, fwd)
            out[(t, s)] = np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2) < thr
    return out


class BiSWE:
    """BiSWE of videos against one pair of source videos (the occlusion masks are computed once).

    >>> m = BiSWE(ir_frames, vis_frames)
    >>> m(fused_frames)          # float, 8-bit grey levels, lower = more stable
    >>> m.sources()              # {"ir": ..., "vis": ...}: the sources' own BiSWE on the same masks
    """

    def __init__(self, ir, vis, flow=None, occlusion_threshold: float = OCCLUSION_THRESHOLD):
        self.flow = farneback_flow if flow is None else flow
        self.ir = _frames(ir, "ir")
        self.vis = _frames(vis, "vis")
        if len(self.ir) != len(self.vis):
            raise ValueError(f"ir and vis have different lengths: {len(self.ir)} and {len(self.vis)} frames")
        if len(self.ir) < 3:
            raise ValueError(f"BiSWE needs at least 3 frames (a frame and both neighbours), got {len(self.ir)}")
        if self.ir[0].shape[:2] != self.vis[0].shape[:2]:
            raise ValueError(
                f"ir and vis frame sizes differ: {self.ir[0].shape[1]}x{self.ir[0].shape[0]} and "
                f"{self.vis[0].shape[1]}x{self.vis[0].shape[0]}"
            )
        self._flows = {"ir": _pair_flows(self.ir, self.flow), "vis": _pair_flows(self.vis, self.flow)}
        mi = _masks(self._flows["ir"], occlusion_threshold)
        mv = _masks(self._flows["vis"], occlusion_threshold)
        self.masks = {key: mi[key] & mv[key] for key in mi}

    def per_frame(self, video) -> np.ndarray:
        """BiSWE_t for t = 1 .. T-2 (float64 [T-2])."""
        frames = _frames(video, "video")
        if len(frames) != len(self.ir) or frames[0].shape[:2] != self.ir[0].shape[:2]:
            raise ValueError(
                f"video has {len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]}, the "
                f"sources {len(self.ir)} of {self.ir[0].shape[1]}x{self.ir[0].shape[0]}"
            )
        return self._score(frames, _pair_flows(frames, self.flow))

    def _score(self, frames, pairs) -> np.ndarray:
        out = np.zeros(len(frames) - 2)
        for t in range(1, len(frames) - 1):
            for s, u in ((t - 1, pairs[t - 1][1]), (t + 1, pairs[t][0])):
                diff = np.abs(frames[t] - warp(frames[s], u))
                if diff.ndim == 3:
                    diff = diff.mean(axis=2)
                m = self.masks[(t, s)]
                out[t - 1] += float((diff * m).sum() / (m.sum() + 1e-10))
        return out

    def __call__(self, video) -> float:
        return float(self.per_frame(video).mean())

    def sources(self) -> dict:
        """The sources' own BiSWE (same masks, their already computed flows)."""
        return {
            "ir": float(self._score(self.ir, self._flows["ir"]).mean()),
            "vis": float(self._score(self.vis, self._flows["vis"]).mean()),
        }


def biswe(fused, ir, vis, flow=None, occlusion_threshold: float = OCCLUSION_THRESHOLD) -> float:
    """BiSWE of the fused video ``fused`` with sources ``ir`` and ``vis`` (see the module docstring)."""
    return BiSWE(ir, vis, flow=flow, occlusion_threshold=occlusion_threshold)(fused)
