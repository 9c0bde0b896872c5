"""Token reuse across video frames.

Global appearance changes slowly, so the token pathway (``run_tokens``: both frames resized to S×S,
tokenised, mixed, edited by STE, decoded by π to the base map) need not run on every frame: a
:class:`FrameFuser` keeps the base map of the last *key frame* and runs only the 2D half
(``run_render``) on the frames in between. A frame becomes a key frame when

- it is the first frame, or its size differs from the key frame's;
- ``interval`` frames have passed since the last key frame;
- the scene changed: the mean absolute difference of a thumbnail (every ``thumb_stride``-th pixel
  of the luminance, in [0, 1]) between this frame and the key frame exceeds ``scene_threshold`` for
  either source.

``ReusePolicy.off()`` (``interval=1``) recomputes every frame with the backend's full ``run``, which
is exactly ``Engine.fuse``. Backends without the halves (a ``.onnx`` exported without its companion
graphs, TensorRT) fall back to that too, and :attr:`FrameFuser.note` says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReusePolicy:
    """When the token pathway is recomputed. ``interval=1`` means every frame (no reuse)."""

    interval: int = 10
    scene_threshold: float | None = 0.05
    thumb_stride: int = 8

    def __post_init__(self):
        if isinstance(self.interval, bool) or not isinstance(self.interval, (int, np.integer)) or self.interval < 1:
            raise ValueError(f"reuse interval must be an int >= 1, got {self.interval!r}")
        if self.scene_threshold is not None and not (0.0 <= float(self.scene_threshold) <= 1.0):
            raise ValueError(
                f"reuse scene threshold must be in [0, 1] (mean |Δ| of luminance), got {self.scene_threshold!r}"
            )
        if (
            isinstance(self.thumb_stride, bool)
            or not isinstance(self.thumb_stride, (int, np.integer))
            or self.thumb_stride < 1
        ):
            raise ValueError(f"reuse thumb_stride must be an int >= 1, got {self.thumb_stride!r}")

    @classmethod
    def off(cls) -> ReusePolicy:
        return cls(interval=1, scene_threshold=None)

    @property
    def enabled(self) -> bool:
        return self.interval > 1

    @classmethod
    def parse(cls, spec) -> ReusePolicy:
        """``None``/"auto"/"on" -> the default policy; "off"/"none"/"0"/"1" -> recompute every frame;
        an int N or "N" -> key frame every N frames (default scene check); "interval=N,scene=T"
        (either part optional, ``scene=off`` disables the scene check); a ReusePolicy as is."""
        if spec is None:
            return cls()
        if isinstance(spec, ReusePolicy):
            return spec
        if isinstance(spec, bool):
            return cls() if spec else cls.off()
        if isinstance(spec, (int, np.integer)):
            return cls.off() if spec <= 1 else cls(interval=int(spec))
        if not isinstance(spec, str):
            raise TypeError(f"reuse must be a ReusePolicy, an int, a string or None, got {type(spec).__name__}")
        text = spec.strip().lower()
        if text in ("", "auto", "on", "default"):
            return cls()
        if text in ("off", "none", "no", "0", "1"):
            return cls.off()
        if text.isdigit():
            return cls(interval=int(text))
        kw = {}
        for part in text.split(","):
            key, sep, val = part.partition("=")
            key, val = key.strip(), val.strip()
            try:
                if not sep:
                    raise ValueError
                if key in ("interval", "key", "every"):
                    kw["interval"] = int(val)
                elif key in ("scene", "scene_threshold"):
                    kw["scene_threshold"] = None if val in ("off", "none") else float(val)
                elif key in ("stride", "thumb_stride"):
                    kw["thumb_stride"] = int(val)
                else:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"reuse: cannot parse {spec!r}; expected auto, off, N or interval=N,scene=T (T in [0, 1] or off)"
                ) from None
        return cls(**kw)

    def describe(self) -> str:
        if not self.enabled:
            return "off (token pathway on every frame)"
        if self.scene_threshold is None:
            return f"key frame every {self.interval} frames (no scene check)"
        return f"key frame every {self.interval} frames or on scene change (threshold {self.scene_threshold:g})"


class _Lums:
    """Two luminance planes as ``tiling`` reads a pair: ``shape`` and ``luminance(rows, cols)``."""

    def __init__(self, y_ir, y_vis):
        self.y_ir, self.y_vis, self.shape = y_ir, y_vis, y_ir.shape

    def luminance(self, rows=slice(None), cols=slice(None)):
        return self.y_ir[rows, cols], self.y_vis[rows, cols]


class FrameFuser:
    """Fuses successive frames (luminance float32 (H, W) in [0, 1]) through an engine's runner
    (:class:`tokfuse_rt.runner.Runner`) under a reuse policy.

    Not thread-safe: one per stream. ``fuse`` returns (fused luminance float32 (H, W), key) where
    ``key`` tells whether the token pathway ran for this frame. Every model call goes through the
    runner, so its memory check, error wrapping and output checks are those of ``Engine.fuse``.
    ``tile``: frames of more than 2 × tile² pixels are rendered in tiles (``tokfuse_rt.tiling``: the base
    map is kept at S×S, never upsampled to the whole frame) where the backend runs the halves, tiles of
    at most ``render_tile`` (default ``tile``) on a side; None: never. Counters: ``frames``,
    ``key_frames``, ``key_reasons`` (first / size / interval / scene); seconds in ``t_tokens`` and
    ``t_render`` (halves) or ``t_full`` (whole model)."""

    def __init__(self, runner, k: int, policy: ReusePolicy, tile: int | None = None, render_tile: int | None = None):
        self.runner = runner
        self.k = int(k)
        self.policy = policy
        self.note = None
        self.use_halves = False
        self.tile = tile if tile and runner.tiles else None
        self.render_tile = min(self.tile, render_tile or self.tile) if self.tile else None
        if policy.enabled:
            if runner.has_halves:
                self.use_halves = True
            else:
                why = runner.halves_note or f"the {runner.name} backend cannot run the halves"
                self.note = f"token reuse unavailable, every frame recomputed: {why}"
        self.frames = 0
        self.tiled_frames = 0  # frames rendered in tiles
        self.key_frames = 0
        self.key_reasons = {"first": 0, "size": 0, "interval": 0, "scene": 0}
        self.t_tokens = self.t_render = self.t_full = 0.0
        self._base = None  # [1, C, S, S] of the key frame
        self._base_up = None  # the same upsampled to the frame (untiled frames only)
        self._size = None
        self._since_key = 0
        self._thumbs = None

    def _thumbs_of(self, y_ir, y_vis):
        s = self.policy.thumb_stride
        return y_ir[::s, ::s], y_vis[::s, ::s]

    def _key_reason(self, y_ir, y_vis):
        if self._base is None:
            return "first"
        if y_ir.shape != self._size:
            return "size"
        if self._since_key >= self.policy.interval:
            return "interval"
        thr = self.policy.scene_threshold
        if thr is not None:
            a, b = self._thumbs_of(y_ir, y_vis)
            d = max(float(np.mean(np.abs(a - self._thumbs[0]))), float(np.mean(np.abs(b - self._thumbs[1]))))
            if d > thr:
                return "scene"
        return None

    def _tiled(self, shape) -> bool:
        return self.tile is not None and shape[0] * shape[1] > 2 * self.tile**2

    def fuse(self, y_ir: np.ndarray, y_vis: np.ndarray):
        a = y_ir[None, None]
        b = y_vis[None, None]
        self.frames += 1
        tiled = self._tiled(y_ir.shape)
        self.tiled_frames += tiled
        if not self.use_halves and not tiled:
            t0 = time.perf_counter()
            fused, _ = self.runner.run(a, b, self.k)
            self.t_full += time.perf_counter() - t0
            self.key_frames += 1
            return fused[0, 0], True
        reason = self._key_reason(y_ir, y_vis) if self.use_halves else "first"
        if reason is not None:
            t0 = time.perf_counter()
            if tiled:
                from ..tiling import token_inputs

                base, _ = self.runner.run_tokens(*token_inputs(_Lums(y_ir, y_vis), self.runner.token_size), self.k)
            else:
                base, _ = self.runner.run_tokens(a, b, self.k)
            self._base = base
            self._base_up = None if tiled else self.runner.upsample_base(base, y_ir.shape)
            self.t_tokens += time.perf_counter() - t0
            self._size = y_ir.shape
            self._since_key = 0
            if self.use_halves:
                self._thumbs = tuple(np.array(t) for t in self._thumbs_of(y_ir, y_vis))
                self.key_frames += 1
                self.key_reasons[reason] += 1
            else:
                self.key_frames += 1
        self._since_key += 1
        t0 = time.perf_counter()
        fused = self._render_tiles(y_ir, y_vis) if tiled else self._render(a, b, self._base_up)
        self.t_render += time.perf_counter() - t0
        return fused, reason is not None

    def _render(self, a, b, base_up):
        return self.runner.render(a, b, base_up)[0, 0]

    def _render_tiles(self, y_ir, y_vis) -> np.ndarray:
        from ..tiling import tile_windows, upsample_window

        h, w = y_ir.shape
        out = np.empty((h, w), np.float32)
        halo, align = self.runner.render_halo, self.runner.render_align
        for y0, y1, x0, x1, wy0, wy1, wx0, wx1 in tile_windows(h, w, self.render_tile, halo, align):
            a = y_ir[None, None, wy0:wy1, wx0:wx1]
            b = y_vis[None, None, wy0:wy1, wx0:wx1]
            base_up = upsample_window(self._base, (h, w), wy0, wy1, wx0, wx1)
            f = self._render(np.ascontiguousarray(a), np.ascontiguousarray(b), base_up)
            out[y0:y1, x0:x1] = f[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
        return out

    def stats(self) -> dict:
        d = {
            "frames": self.frames,
            "key_frames": self.key_frames,
            "policy": self.policy.describe(),
            "reuse": self.use_halves,
            "tiled_frames": self.tiled_frames,
        }
        if self.use_halves:
            d["key_reasons"] = dict(self.key_reasons)
            d["seconds_tokens"] = round(self.t_tokens, 4)
            d["seconds_render"] = round(self.t_render, 4)
        else:
            d["seconds_full"] = round(self.t_full, 4)
        if self.note:
            d["note"] = self.note
        return d
