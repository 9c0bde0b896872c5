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


class FrameFuser:
    """Fuses successive frames (luminance float32 (H, W) in [0, 1]) with a backend under a reuse policy.

    Not thread-safe: one per stream. ``fuse`` returns (fused luminance float32 (H, W), key) where
    ``key`` tells whether the token pathway ran for this frame. Counters: ``frames``, ``key_frames``,
    ``key_reasons`` (first / size / interval / scene); seconds in ``t_tokens`` and ``t_render`` (with
    reuse) or ``t_full`` (without)."""

    def __init__(self, backend, k: int, policy: ReusePolicy):
        self.backend = backend
        self.k = int(k)
        self.policy = policy
        self.note = None
        self.use_halves = False
        if policy.enabled:
            if getattr(backend, "has_halves", False):
                self.use_halves = True
            else:
                why = getattr(backend, "halves_note", None) or f"the {backend.name} backend cannot run the halves"
                self.note = f"token reuse unavailable, every frame recomputed: {why}"
        self.frames = 0
        self.key_frames = 0
        self.key_reasons = {"first": 0, "size": 0, "interval": 0, "scene": 0}
        self.t_tokens = self.t_render = self.t_full = 0.0
        self._base_up = None
        self._size = None
        self._since_key = 0
        self._thumbs = None

    def _thumbs_of(self, y_ir, y_vis):
        s = self.policy.thumb_stride
        return y_ir[::s, ::s], y_vis[::s, ::s]

    def _key_reason(self, y_ir, y_vis):
        if self._base_up is None:
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

    def fuse(self, y_ir: np.ndarray, y_vis: np.ndarray):
        a = y_ir[None, None]
        b = y_vis[None, None]
        self.frames += 1
        if not self.use_halves:
            t0 = time.perf_counter()
            fused, _ = self.backend.run(a, b, self.k)
            self.t_full += time.perf_counter() - t0
            self.key_frames += 1
            return fused[0, 0], True
        reason = self._key_reason(y_ir, y_vis)
        if reason is not None:
            t0 = time.perf_counter()
            base, _ = self.backend.run_tokens(a, b, self.k)
            self._base_up = self.backend.upsample_base(base, y_ir.shape)
            self.t_tokens += time.perf_counter() - t0
            self._size = y_ir.shape
            self._since_key = 0
            self._thumbs = tuple(np.array(t) for t in self._thumbs_of(y_ir, y_vis))
            self.key_frames += 1
            self.key_reasons[reason] += 1
        self._since_key += 1
        t0 = time.perf_counter()
        fused = self.backend.run_render(a, b, self._base_up)
        self.t_render += time.perf_counter() - t0
        return fused[0, 0], reason is not None

    def stats(self) -> dict:
        d = {
            "frames": self.frames,
            "key_frames": self.key_frames,
            "policy": self.policy.describe(),
            "reuse": self.use_halves,
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
