"""The one way the model runs: every path (``Engine.fuse`` / ``fuse_batch`` / ``fuse_dir``, tiles, ``stream``,
``fuse_video``, token reuse, the Ray actors and the HTTP service, which all hold an Engine) calls a
:class:`Runner`, which

- reads inputs under the engine's limits (``max_pixels``, ``depth``, the camera rig, the colour rule of
  :class:`tokfuse_rt.inputs.Prepared`),
- refuses an untiled call whose working memory would exceed the memory available,
- turns a backend failure into a ``BackendError`` naming the model file and the input size, and
- checks every backend output (``backends.OutputGuard``: shape, finite values, token ids in range),

whether the model runs whole (``run``) or in halves (``run_tokens`` then ``render``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Working memory of an untiled backend call per input pixel (ONNX Runtime CPU measured ~280 B/px on
# the default model, 1.3 -> 3 MP; PyTorch similar). Calls estimated above the memory available are
# refused before they start, instead of being killed by the kernel's OOM killer mid-batch.
UNTILED_BYTES_PER_PIXEL = 320


def one_line(e: BaseException) -> str:
    """An exception as one line: its message (first line), prefixed by its type unless it is an input error."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, MemoryError):
        return f"out of memory (MemoryError{': ' + msg if msg != 'MemoryError' else ''})"
    if not isinstance(e, (ValueError, TypeError, FileNotFoundError)):
        return f"{type(e).__name__}: {msg}"
    return msg


class Runner:
    """Runs ``backend`` (see :class:`tokfuse_rt.backends.Backend`) for the model file ``path`` with the checks
    above. ``max_pixels``, ``depth``, ``tile_size`` and ``align`` are the engine's settings (attributes,
    read at each call)."""

    def __init__(self, backend, path, guard, max_pixels=None, depth="auto", tile_size=None, align=None):
        self.backend, self.path, self.guard = backend, Path(path), guard
        self.max_pixels, self.depth, self.tile_size, self.align = max_pixels, depth, tile_size, align

    # --- what the backend can do ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def num_tokens(self) -> int:
        return int(self.backend.num_tokens)

    @property
    def token_size(self) -> int:
        return int(self.backend.token_size)

    @property
    def render_halo(self) -> int:
        return int(self.backend.render_halo)

    @property
    def render_align(self) -> int:
        return int(self.backend.render_align)

    @property
    def has_halves(self) -> bool:
        return bool(getattr(self.backend, "has_halves", False))

    @property
    def halves_note(self) -> str | None:
        return getattr(self.backend, "halves_note", None)

    @property
    def tiles(self) -> bool:
        """True when the backend runs the halves and knows its token size, halo and alignment."""
        from .tiling import supports_tiles

        return supports_tiles(self.backend)

    def tiled(self, shape, tile: int | None = None) -> bool:
        """Whether an H×W ``shape`` is fused in tiles of ``tile`` (default: the engine's ``tile_size``)."""
        tile = self.tile_size if tile is None else tile
        return tile is not None and shape[0] * shape[1] > 2 * tile**2 and self.tiles

    # --- inputs -----------------------------------------------------------------------------------
    def prepare(self, ir, vis, align=None):
        """A ``Prepared`` pair read under the engine's limits; ``align``: a rig for this pair (None: the engine's)."""
        from .inputs import Prepared
        from .rig import as_rig

        rig = as_rig(align) if align is not None else self.align
        return Prepared(ir, vis, max_pixels=self.max_pixels, depth=self.depth, align=rig)

    # --- the model ----------------------------------------------------------------------------------
    def _call(self, fn, shape, *args):
        """Run a backend step; failures other than input errors become BackendError naming the model."""
        from .backends import BackendError, ModelOutputError

        try:
            return fn(*args)
        except (ValueError, TypeError, MemoryError, ModelOutputError):
            raise
        except Exception as e:
            raise BackendError(
                f"model file {self.path}: the {self.backend.name} backend failed on a "
                f"{shape[-1]}x{shape[-2]} input: {one_line(e)}"
            ) from e

    def check_memory(self, shape) -> None:
        """Refuse an untiled call on a [B, 1, H, W] ``shape`` whose working memory would exceed the memory
        available (ImageTooLargeError)."""
        need = UNTILED_BYTES_PER_PIXEL * int(np.prod(shape))
        if need < 2**30:
            return
        avail = mem_available()
        if avail is not None and need > avail:
            from .imageio import ImageTooLargeError

            why = (
                "tiles are off (tile_size=None)"
                if self.tiles
                else f"the {self.backend.name} backend of {self.path.name} cannot run in tiles; use a smaller image "
                "or a model that tiles (.safetensors)"
            )
            raise ImageTooLargeError(
                f"a {shape[-1]}x{shape[-2]} input (batch {shape[0]}) needs about {need / 2**30:.1f} GiB untiled, "
                f"{avail / 2**30:.1f} GiB are available, and {why}"
            )

    def run(self, a: np.ndarray, b: np.ndarray, k: int):
        """The whole model on float32 [B, 1, H, W] luminance batches -> (fused [B, 1, H, W], ids [B, K])."""
        self.check_memory(a.shape)
        fused, ids = self._call(self.backend.run, a.shape, a, b, k)
        self.guard.fused(fused, a.shape)
        self.guard.ids(ids, a.shape[0])
        return fused, ids

    def run_tokens(self, a: np.ndarray, b: np.ndarray, k: int):
        """The token pathway -> (base map [B, C, S, S], ids [B, K])."""
        base, ids = self._call(self.backend.run_tokens, a.shape, a, b, k)
        self.guard.base(base)
        self.guard.ids(ids, a.shape[0])
        return base, ids

    def upsample_base(self, base: np.ndarray, size) -> np.ndarray:
        """The base map upsampled to ``size`` = (H, W), as the model does."""
        return self.backend.upsample_base(base, size)

    def render(self, a: np.ndarray, b: np.ndarray, base_up: np.ndarray) -> np.ndarray:
        """The 2D render half on [B, 1, h, w] windows and the matching window of the upsampled base map."""
        self.check_memory(a.shape)
        fused = self._call(self.backend.run_render, a.shape, a, b, base_up)
        self.guard.fused(fused, a.shape)
        return fused

    def fuse(self, p, k: int):
        """Fuse one ``Prepared`` pair, in tiles when it is large. Returns (result in the kind of ``vis``, ids [K])."""
        if self.tiled(p.shape):
            from .tiling import fuse_tiled

            return fuse_tiled(self, p, k, self.tile_size)
        y_ir, y_vis = p.luminance()
        fused, ids = self.run(y_ir[None, None], y_vis[None, None], k)
        return p.finish(fused[0, 0]), ids[0]


def mem_available() -> int | None:
    """Bytes of memory available: MemAvailable of /proc/meminfo, or less under a cgroup v2 memory
    limit (containers). None where unknown."""
    vals = []
    try:
        with open("/proc/meminfo") as f:
            vals.append(next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:")))
    except (OSError, StopIteration, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            vals.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(vals) if vals else None
