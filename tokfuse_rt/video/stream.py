"""``Engine.stream``: fuse an iterable of (ir, vis) frame pairs lazily (live sources)."""

from __future__ import annotations

from .reuse import FrameFuser, ReusePolicy


class FrameStream:
    """Iterator over fused frames of an iterable of (ir, vis) pairs.

    Each pair is taken only when the next fused frame is asked for (nothing is read ahead), accepts
    every input kind of ``Engine.fuse`` and gives the same kind back as its ``vis``. The token
    pathway is reused across frames under ``policy`` (see :mod:`tokfuse_rt.video.reuse`); with
    ``ReusePolicy.off()`` every frame equals ``Engine.fuse`` of its pair. ``stats()`` reports frames,
    key frames and time spent so far. A bad pair raises ValueError/TypeError naming its index. ``runner``
    is the engine's (:class:`tokfuse_rt.runner.Runner`): each pair is read under its pixel limit, bit
    depth, camera rig and colour rule, large frames go in its tiles, every output is checked.
    """

    def __init__(self, runner, frames, k: int, policy: ReusePolicy):
        try:
            self._it = iter(frames)
        except TypeError:
            raise TypeError(f"frames must be an iterable of (ir, vis) pairs, got {type(frames).__name__}") from None
        self.runner = runner
        self.fuser = FrameFuser(runner, k, policy, tile=runner.tile_size)
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self):
        pair = next(self._it)
        i = self.index
        try:
            ir, vis = pair
        except (TypeError, ValueError):
            raise TypeError(f"frames[{i}]: expected an (ir, vis) pair, got {type(pair).__name__}") from None
        try:
            p = self.runner.prepare(ir, vis)
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise type(e)(f"frames[{i}]: {e}") from None
        fused, _ = self.fuser.fuse(*p.luminance())
        self.index += 1
        return p.finish(fused)

    def stats(self) -> dict:
        return self.fuser.stats()
