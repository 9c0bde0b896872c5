"""``Engine.stream``: fuse an iterable of (ir, vis) frame pairs lazily (live sources)."""

from __future__ import annotations

from .reuse import FrameFuser, ReusePolicy


class FrameStream:
    """Iterator over fused frames of an iterable of (ir, vis) pairs.

    Each pair is taken only when the next fused frame is asked for (nothing is read ahead), accepts
    every input kind of ``Engine.fuse`` and gives the same kind back as its ``vis``. The token
    pathway is reused across frames under ``policy`` (see :mod:`tokfuse_rt.video.reuse`); with
    ``ReusePolicy.off()`` every frame equals ``Engine.fuse`` of its pair. ``stats()`` reports frames,
    key frames and time spent so far. A bad pair raises ValueError/TypeError naming its index. ``guard``,
    ``max_pixels``, ``depth`` and ``tile`` are the engine's (output checks, pixel limit, bit depth, tiles).
    """

    def __init__(
        self,
        backend,
        frames,
        k: int,
        policy: ReusePolicy,
        guard=None,
        max_pixels: int | None = None,
        depth: str = "auto",
        tile: int | None = None,
    ):
        try:
            self._it = iter(frames)
        except TypeError:
            raise TypeError(f"frames must be an iterable of (ir, vis) pairs, got {type(frames).__name__}") from None
        self.fuser = FrameFuser(backend, k, policy, guard=guard, tile=tile)
        self.max_pixels, self.depth = max_pixels, depth
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self):
        from ..inputs import Prepared

        pair = next(self._it)
        i = self.index
        try:
            ir, vis = pair
        except (TypeError, ValueError):
            raise TypeError(f"frames[{i}]: expected an (ir, vis) pair, got {type(pair).__name__}") from None
        try:
            p = Prepared(ir, vis, max_pixels=self.max_pixels, depth=self.depth)
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise type(e)(f"frames[{i}]: {e}") from None
        fused, _ = self.fuser.fuse(*p.luminance())
        self.index += 1
        return p.finish(fused)

    def stats(self) -> dict:
        return self.fuser.stats()
