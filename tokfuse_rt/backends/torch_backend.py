"""PyTorch backend: the reference model; Triton kernels on CUDA, the C++ extension on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..devices import parse_device
from ..model import load_checkpoint
from ..model.quant import kernel_backend, resolve_backend


def pick_device(device: str) -> torch.device:
    """The torch device for ``device`` (:func:`tokfuse_rt.devices.parse_device`); "auto": CUDA when
    torch sees one, else the CPU."""
    kind, index = parse_device(device)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available to torch on this machine")
    return torch.device(kind if index is None else f"{kind}:{index}")


class TorchBackend:
    name = "pytorch"

    def __init__(self, path: Path, device: str = "auto", threads: int | None = None, kernels: str = "auto"):
        self.device = pick_device(device)
        self.model, self.meta = load_checkpoint(path, map_location="cpu")
        self.model.to(self.device)
        self.cfg = self.model.cfg
        self.kernels = kernels
        if threads is not None:
            torch.set_num_threads(int(threads))
        with kernel_backend(kernels):
            self._kernel_name = resolve_backend(self.device)

    @property
    def num_tokens(self) -> int:
        return self.cfg.num_tokens

    @property
    def default_k(self) -> int:
        return self.cfg.default_k

    def _tensors(self, *arrays: np.ndarray) -> list[torch.Tensor]:
        """float32 numpy arrays -> tensors on the model's device."""
        return [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device) for x in arrays]

    def run(self, ir: np.ndarray, vis: np.ndarray, k: int):
        """ir, vis: float32 [B, 1, H, W] in [0, 1] -> (fused float32 [B, 1, H, W], ids int64 [B, K])."""
        with torch.inference_mode(), kernel_backend(self.kernels):
            fused, ids, _ = self.model(*self._tensors(ir, vis), k=k)
            return fused.float().cpu().numpy(), ids.cpu().numpy()

    # --- the model's two halves (token reuse across video frames, tiles of one image) ------------
    has_halves = True

    @property
    def token_size(self) -> int:
        return self.cfg.image_size

    @property
    def render_halo(self) -> int:
        return self.model.render_halo

    @property
    def render_align(self) -> int:
        return self.model.render_align

    def run_tokens(self, ir: np.ndarray, vis: np.ndarray, k: int, parallel: bool = True):
        """ir, vis: float32 [B, 1, H, W] -> (base float32 [B, C, S, S], ids int64 [B, K]): the token pathway.
        ``parallel=False``: on this thread only, the two images as one batch, even where ``token_pool`` is set."""
        with torch.inference_mode(), kernel_backend(self.kernels):
            pool = self.token_pool if parallel else None
            base, ids = self.model.token_pathway(*self._tensors(ir, vis), k, pool=pool, together=not parallel)
            return base.float().cpu().numpy(), ids.cpu().numpy()

    token_pool = None  # an executor for TokFuse.token_pathway (NativeBackend sets one)

    def upsample_base(self, base: np.ndarray, size) -> np.ndarray:
        """base [B, C, S, S] -> base_up float32 [B, C, H, W] for ``size`` = (H, W) (``TokFuse.upsample_base``)."""
        from . import upsample_base

        return upsample_base(base, size)

    def run_render(self, ir: np.ndarray, vis: np.ndarray, base_up: np.ndarray) -> np.ndarray:
        """ir, vis [B, 1, H, W] and base_up [B, C, H, W], float32 -> fused float32 [B, 1, H, W]: the 2D half."""
        with torch.inference_mode():
            return self.model.render(*self._tensors(ir, vis, base_up)).float().cpu().numpy()

    def info(self) -> dict:
        return {
            "backend": self.name,
            "device": str(self.device),
            "kernels": self._kernel_name,
            "threads": torch.get_num_threads(),
            "config": self.cfg.__dict__ | {},
            "train": self.meta.get("extra", {}).get("train"),
        }

    def close(self) -> None:
        self.model = None
        if self.token_pool is not None:
            self.token_pool.shutdown(wait=False)
            self.token_pool = None
