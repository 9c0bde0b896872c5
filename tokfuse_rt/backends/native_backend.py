"""Native backend: the token pathway in PyTorch on the CPU, the render half (DetailNet, HeadConvs and
the head's per-pixel rule, "blend", "tone" or "layers") in the fused C++ kernel
``tokfuse_rt._C.NativeRender`` (csrc/render_*.cpp: all layers over row tiles on a thread pool, AVX-512F,
AVX2/FMA or scalar convolutions chosen at run time). Same halves as the PyTorch backend, so tiling and video
reuse run the native render too. ``Engine(ckpt, backend="native")`` selects it.

``backend="native-int8"`` (:class:`NativeInt8Backend`) runs the render half's convolutions in int8
(``NativeRender.run_int8``: AVX-512 VNNI, else scalar; see ``render_int8.py``) with the activation ranges
stored in the checkpoint (``python -m export.to_native CKPT -o OUT --calib DIR`` adds them; the bundled
default has them). With ``threads`` >= 2 on images of at least ``NativeInt8Backend.SPLIT_MIN_PIXELS`` pixels
per background thread it splits the render: the detail convolutions (about half its work, independent of the
base map) run on ``threads - 1`` threads of their own while the token pathway runs on this one, then every
thread runs the head (``NativeRender.start_int8``; the same bits as ``run_int8``).

The token pathway runs on one PyTorch thread (``token_threads``): its ops are small (S×S = 128²) and
each multi-threaded op ends in a thread barrier; with 2 threads on a busy 2-core machine those
barriers dominate (measured: 5 ms per 640×480 pair on 1 thread, 100-300 ms on 2 with a training run
beside it). With ``threads`` >= 2 the two images are tokenised at the same time instead, each on one
thread (``TokFuse.token_pathway(pool=...)``: no barriers, the same result). The render uses
``threads`` threads (csrc/thread_pool.cpp).

Outputs equal the PyTorch render up to float rounding (different accumulation order and FMA;
``tests/backends/test_native_render.py`` bounds the difference at 1e-5); token ids are PyTorch's own.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch

from .torch_backend import TorchBackend

IMPLS = ("auto", "avx512", "avx2", "scalar")
INT8_IMPLS = ("auto", "vnni", "scalar")


def _native_module():
    """tokfuse_rt._C when it has the fused render; ImportError saying how to build it otherwise."""
    try:
        from .. import _C
    except ImportError as e:
        raise ImportError(
            f"the native backend needs the compiled extension tokfuse_rt._C ({e}); build it with "
            "`python setup.py build_ext --inplace` or `pip install -e .`"
        ) from None
    if not hasattr(_C, "NativeRender"):
        raise ImportError(
            "the compiled extension tokfuse_rt._C predates the native render (no NativeRender); rebuild it with "
            "`python setup.py build_ext --inplace`"
        )
    return _C


def native_available() -> bool:
    """True when the compiled extension has the fused render (no model is checked)."""
    try:
        _native_module()
    except ImportError:
        return False
    return True


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def native_render(model):
    """``tokfuse_rt._C.NativeRender`` for the render half of a ``TokFuse`` model; ValueError naming
    what does not match when the model's render half is not one the kernel implements."""
    from ..model.fusion import DetailNet, FusionHead
    from ..model.layers import LayersRender
    from ..model.tone import ToneRender

    _C = _native_module()
    cfg = model.cfg
    kinds = {FusionHead: "blend", ToneRender: "tone", LayersRender: "layers"}
    kind = kinds.get(type(model.head))
    if kind is None or kind != cfg.head:
        raise ValueError(
            f"the native render implements the heads {sorted(set(kinds.values()))}; this model's head is "
            f"{type(model.head).__name__} (config head={cfg.head!r})"
        )
    if type(model.detail) is not DetailNet:
        raise ValueError(f"the native render implements DetailNet; this model has {type(model.detail).__name__}")
    for name, conv in (
        ("detail.conv1", model.detail.conv1),
        ("detail.conv2", model.detail.conv2),
        ("head.conv1", model.head.conv1),
    ):
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.dilation != (1, 1):
            raise ValueError(f"the native render implements 3x3 convolutions with padding 1; {name} is {conv}")
        if conv.groups != 1 or conv.bias is None or conv.padding_mode != "zeros":
            raise ValueError(f"the native render implements plain biased convolutions; {name} is {conv}")
    scalars = {}
    if kind in ("tone", "layers"):
        scalars["tau"] = float(model.head.tau.detach())
    if kind == "layers":
        scalars["gain_vis"] = float(model.head.gain_vis.detach())
        scalars["gain_ir"] = float(model.head.gain_ir.detach())
    d, h = model.detail, model.head
    return _C.NativeRender(
        kind,
        int(cfg.base_radius) if kind == "layers" else 0,
        *(_numpy(t) for t in (d.conv1.weight, d.conv1.bias, d.conv2.weight, d.conv2.bias)),
        *(_numpy(t) for t in (h.conv1.weight, h.conv1.bias, h.conv2.weight, h.conv2.bias)),
        **scalars,
    )


class NativeBackend(TorchBackend):
    """A ``.safetensors`` checkpoint with the render half in C++ (CPU only). ``impl``: "auto" (the widest
    path the CPU has: AVX-512F, AVX2/FMA, else scalar), "avx512", "avx2" or "scalar".
    ``token_threads``: PyTorch threads of the token pathway (see the module docstring)."""

    name = "native"
    impls = IMPLS

    def __init__(
        self,
        path: Path,
        device: str = "auto",
        threads: int | None = None,
        kernels: str = "auto",
        impl: str = "auto",
        token_threads: int = 1,
    ):
        from ..devices import parse_device

        if parse_device(device)[0] not in ("auto", "cpu"):
            raise ValueError(f"device={device!r}: the native backend runs on the CPU only (use device='cpu')")
        if impl not in self.impls:
            raise ValueError(f"impl must be one of {self.impls} for the {self.name} backend, got {impl!r}")
        if isinstance(token_threads, bool) or not isinstance(token_threads, int) or token_threads < 1:
            raise ValueError(f"token_threads must be a positive int, got {token_threads!r}")
        _native_module()  # a missing or stale extension fails before the checkpoint loads
        self.path = Path(path)
        super().__init__(path, device="cpu", threads=threads, kernels=kernels)
        self.render_kernel = native_render(self.model)
        self.impl, self.token_threads = impl, token_threads
        self._prepare_kernel()
        self.render_threads = torch.get_num_threads()
        self._pool_pid = None  # the process that owns token_pool (a forked child makes its own)
        self._check_impl()

    def _prepare_kernel(self):
        """Anything the kernel needs beyond the float32 weights (the int8 tables)."""

    def _check_impl(self):
        """impl="avx2" on a CPU without AVX2+FMA: the kernel's ValueError now, not at the first pair."""
        one, up = np.zeros((1, 1, 1, 1), np.float32), np.zeros((1, self.render_kernel.base_channels, 1, 1), np.float32)
        self._render(one, one, up)

    def _render(self, ir, vis, base_up, tone=None, threads=1):
        return self.render_kernel.run(ir, vis, base_up, threads, self.impl, tone=tone)

    def run_tokens(self, ir: np.ndarray, vis: np.ndarray, k: int, parallel: bool = True):
        """The token pathway (PyTorch) on ``token_threads`` threads; with ``threads`` >= 2 and one token
        thread, the two images are tokenised at the same time (a one-worker pool, made in this process)
        unless ``parallel`` is False; otherwise as one batch (``TokFuse.token_pathway(together=True)``).
        The same result every way."""
        pooled = parallel and self.render_threads >= 2 and self.token_threads == 1
        if pooled and self._pool_pid != os.getpid():
            from concurrent.futures import ThreadPoolExecutor

            # after fork() an inherited executor has no worker thread left: a new one per process
            self.token_pool = ThreadPoolExecutor(1, thread_name_prefix="tokfuse-tokens")
            self._pool_pid = os.getpid()
        with self._torch_threads():
            return super().run_tokens(ir, vis, k, pooled)

    def upsample_base(self, base: np.ndarray, size) -> np.ndarray:
        """The base map's upsampling (PyTorch), also on ``token_threads`` threads: one small op whose
        thread barrier costs more than its work (0.4 ms per 640×480 frame on one thread; 8 ms on two
        with another process busy on the second core)."""
        with self._torch_threads():
            return super().upsample_base(base, size)

    @contextlib.contextmanager
    def _torch_threads(self):
        old = torch.get_num_threads()
        torch.set_num_threads(self.token_threads)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    def run(self, ir: np.ndarray, vis: np.ndarray, k: int):
        """ir, vis: float32 [B, 1, H, W] in [0, 1] -> (fused float32 [B, 1, H, W], ids int64 [B, K])."""
        base, ids = self.run_tokens(ir, vis, k)
        ir, vis = (np.ascontiguousarray(x, dtype=np.float32) for x in (ir, vis))
        return self._render(ir, vis, *self._base_up(base, ir.shape[-2:]), threads=self.render_threads), ids

    def _base_up(self, base: np.ndarray, size):
        """The token pathway's base [B, C, S, S] -> (base_up, tone) for the kernel. For the "tone"/"layers"
        heads only the base map is upsampled; the kernel takes the four tone values as constants (what
        ``upsample_base`` fills its channels 1..4 with, without writing them out)."""
        if base.shape[1] == 5:
            return self.upsample_base(base[:, :1], size), np.ascontiguousarray(base[:, 1:, 0, 0], dtype=np.float32)
        return self.upsample_base(base, size), None

    def run_render(self, ir: np.ndarray, vis: np.ndarray, base_up: np.ndarray) -> np.ndarray:
        """ir, vis [B, 1, H, W] and base_up [B, C, H, W], float32 -> fused float32 [B, 1, H, W] (C++)."""
        return self._render(
            np.ascontiguousarray(ir, dtype=np.float32),
            np.ascontiguousarray(vis, dtype=np.float32),
            np.ascontiguousarray(base_up, dtype=np.float32),
            threads=self.render_threads,
        )

    def info(self) -> dict:
        from .. import _C

        d = super().info()
        d["render"] = {
            "kernel": "native",
            "precision": "float32",
            "impl": _C.NativeRender.resolve_impl(self.impl),
            "head": self.render_kernel.head,
            "threads": self.render_threads,
            "token_threads": self.token_threads,
        }
        return d


class NativeInt8Backend(NativeBackend):
    """The native backend with the render half's convolutions in int8 (``NativeRender.run_int8``), from the
    activation ranges in the checkpoint's metadata; ``impl``: "auto" (AVX-512 VNNI when the CPU has it, else
    scalar), "vnni" or "scalar". The token pathway, the head's rule and the base layers stay float32."""

    name = "native-int8"
    impls = INT8_IMPLS

    def _prepare_kernel(self):
        from .render_int8 import RANGES_KEY, check_ranges, quant_tables, ranges_from_meta

        ranges = ranges_from_meta(self.meta)
        if ranges is None:
            raise ValueError(
                f"checkpoint {self.path} has no int8 ranges ({RANGES_KEY} in its metadata) for the native-int8 "
                "backend; add them with `python -m export.to_native CKPT -o OUT.safetensors --calib TRAIN_DIR`"
            )
        self.ranges = check_ranges(ranges, self.cfg.detail_channels, f"checkpoint {self.path}")
        t = quant_tables(self.model, self.ranges)
        self.render_kernel.quantize(t["conv1"], t["conv2"], t["conv3"], t["base_inv"], t["base_zero"])

    def _render(self, ir, vis, base_up, tone=None, threads=1):
        return self.render_kernel.run_int8(ir, vis, base_up, threads, self.impl, tone=tone)

    # Pixels per call (B x H x W) per background thread from which the render is split: below, the token
    # pathway (with the two images tokenised on two threads when not split) is the longer part. Measured on
    # 2 cores (one background thread; docs/fast_path.md): the same time at 480x360, split faster at 640x480
    # and above. With more threads the detail convolutions finish sooner, so the split needs more pixels.
    SPLIT_MIN_PIXELS = 200_000

    def run(self, ir: np.ndarray, vis: np.ndarray, k: int):
        """As NativeBackend.run. With ``threads`` >= 2 and at least ``SPLIT_MIN_PIXELS`` pixels per background
        thread, the render's detail convolutions (most of its work; they do not need the base map) run on
        ``threads - 1`` threads of their own while this thread runs the token pathway, then every thread runs
        the head (``NativeRender.start_int8``: the same bits as ``run_int8``)."""
        background = self.render_threads - 1
        if background < 1 or ir.shape[0] * ir.shape[-2] * ir.shape[-1] < self.SPLIT_MIN_PIXELS * background:
            return super().run(ir, vis, k)
        ir, vis = (np.ascontiguousarray(x, dtype=np.float32) for x in (ir, vis))
        job = self.render_kernel.start_int8(ir, vis, self.impl, background=background)
        base, ids = self.run_tokens(ir, vis, k, parallel=False)
        base_up, tone = self._base_up(base, ir.shape[-2:])
        return job.finish(base_up, self.render_threads, tone=tone), ids

    def info(self) -> dict:
        from .. import _C

        d = super().info()
        d["render"]["precision"] = "int8"
        d["render"]["impl"] = _C.NativeRender.resolve_int8_impl(self.impl)
        d["render"]["calibration"] = self.ranges.get("calibration")
        return d
