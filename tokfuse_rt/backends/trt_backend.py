"""TensorRT backend for ``.plan`` / ``.engine`` files built by ``python -m export.to_trt``.

TensorRT 10 API: the engine is deserialised once; IO tensors are addressed by name
(``get_tensor_name`` / ``set_input_shape`` / ``set_tensor_address``) and run with
``execute_async_v3`` on a dedicated CUDA stream owned through torch.cuda (device buffers are torch
tensors). Shapes are dynamic within the engine's optimisation profile; batches larger than the
profile's maximum are split. One execution context, guarded by a lock, so ``Engine.fuse`` may be
called from several threads. The model config comes from ``<plan>.json`` written beside the
engine by the exporter (TensorRT plans carry no metadata).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from ..devices import parse_device
from ..onnx_contract import INPUTS, OUTPUTS, sidecar_path
from . import token_counts


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ImportError(f"the TensorRT backend needs the tensorrt package and an NVIDIA GPU ({e})") from None
    return trt


def _torch_dtype(trt, dt):
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.bool: torch.bool}
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if dt not in table:
        raise ValueError(f"TensorRT tensor type {dt} is not supported by the tokfuse_rt TensorRT backend")
    return table[dt]


class TrtBackend:
    name = "tensorrt"
    has_halves = False  # an engine is built from the whole graph
    halves_note = "a TensorRT engine runs the whole model only"

    def __init__(self, path: Path, device: str = "auto", threads: int | None = None):
        trt = _import_trt()
        import torch

        self.path = Path(path)
        kind, index = parse_device(device)
        if kind == "cpu":
            raise ValueError(
                "device='cpu': TensorRT engines run on NVIDIA GPUs only; use the .onnx model "
                "(ONNX Runtime) or the .safetensors checkpoint (PyTorch) on a CPU"
            )
        if not torch.cuda.is_available():
            raise RuntimeError(f"model file {self.path}: TensorRT needs a CUDA GPU visible to torch; none found")
        self.device = torch.device(f"cuda:{index or 0}")
        self._threads = threads
        data = self.path.read_bytes()
        if not data:
            raise ValueError(f"model file {self.path}: empty file, not a TensorRT engine")
        self._logger = trt.Logger(trt.Logger.ERROR)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(self._logger)
            self.engine = self.runtime.deserialize_cuda_engine(data)
            if self.engine is None:
                raise ValueError(
                    f"model file {self.path}: TensorRT could not deserialise it (corrupt, or built with another "
                    f"TensorRT version / GPU; this is TensorRT {trt.__version__}); rebuild with python -m export.to_trt"
                )
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(device=self.device)
        self._trt = trt
        self._lock = threading.Lock()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        ins = sorted(n for n in names if modes[n] == trt.TensorIOMode.INPUT)
        outs = [n for n in names if modes[n] == trt.TensorIOMode.OUTPUT]
        if ins != sorted(INPUTS) or sorted(outs) != sorted(OUTPUTS):
            raise ValueError(
                f"model file {self.path}: engine IO {ins} -> {outs} is not a tokfuse_rt engine "
                f"(expected {list(INPUTS)} -> {list(OUTPUTS)})"
            )
        self._dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self._k_shape = tuple(self.engine.get_tensor_shape("k"))
        if any(d < 0 for d in self._k_shape):
            self._k_shape = (1,)
        self._profile = tuple(tuple(s) for s in self.engine.get_tensor_profile_shape("ir", 0))  # min, opt, max
        self._sidecar = self._read_sidecar()
        cfg = self._sidecar.get("config") or {}
        ids_shape = tuple(self.engine.get_tensor_shape("ids"))
        k_static = ids_shape[1] if len(ids_shape) == 2 and ids_shape[1] > 0 else None
        self.num_tokens, self.default_k = token_counts(
            cfg,
            k_static,
            self.path,
            f"no {self.path.name}.json beside it and the token count cannot be read from the engine",
        )
        self.cfg = cfg

    def _read_sidecar(self) -> dict:
        side = sidecar_path(self.path)
        if not side.is_file():
            return {}
        try:
            d = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return d if isinstance(d, dict) else {}

    def _check_hw(self, h: int, w: int) -> None:
        mn, _, mx = self._profile
        if not (mn[2] <= h <= mx[2] and mn[3] <= w <= mx[3]):
            raise ValueError(
                f"image size {w}x{h} is outside this TensorRT engine's profile "
                f"(H {mn[2]}..{mx[2]}, W {mn[3]}..{mx[3]}); "
                f"rebuild with python -m export.to_trt --max-shape/--min-shape, or use the .onnx model"
            )

    def run(self, ir: np.ndarray, vis: np.ndarray, k: int):
        """ir, vis: float32 [B, 1, H, W] in [0, 1] -> (fused float32 [B, 1, H, W], ids int64 [B, K])."""
        if self.engine is None:
            raise RuntimeError("this TensorRT backend has been closed")
        self._check_hw(ir.shape[2], ir.shape[3])
        bmin, bmax = self._profile[0][0], self._profile[2][0]
        if ir.shape[0] < bmin:
            raise ValueError(f"batch {ir.shape[0]} is below this engine's minimum batch {bmin}")
        fused, ids = [], []
        for s in range(0, ir.shape[0], bmax):
            f, i = self._run_chunk(ir[s : s + bmax], vis[s : s + bmax], k)
            fused.append(f)
            ids.append(i)
        if len(fused) == 1:
            return fused[0], ids[0]
        return np.concatenate(fused), np.concatenate(ids)

    def _run_chunk(self, ir, vis, k):
        import torch

        with self._lock, torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            ctx = self.context
            bufs = {
                "ir": torch.from_numpy(np.ascontiguousarray(ir, np.float32)).to(self.device, self._dtypes["ir"]),
                "vis": torch.from_numpy(np.ascontiguousarray(vis, np.float32)).to(self.device, self._dtypes["vis"]),
                "k": torch.full(self._k_shape, int(k), dtype=self._dtypes["k"], device=self.device),
            }
            for n in INPUTS:
                if not ctx.set_input_shape(n, tuple(bufs[n].shape)):
                    raise ValueError(f"TensorRT rejected input shape {tuple(bufs[n].shape)} for {n!r}")
            for n in OUTPUTS:
                shape = tuple(ctx.get_tensor_shape(n))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"TensorRT could not resolve the shape of output {n!r}: {shape}")
                bufs[n] = torch.empty(shape, dtype=self._dtypes[n], device=self.device)
            for n, t in bufs.items():
                ctx.set_tensor_address(n, t.data_ptr())
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            fused = bufs["fused"].float().cpu()
            ids = bufs["ids"].to(torch.int64).cpu()
            self.stream.synchronize()
        return fused.numpy(), ids.numpy()

    def info(self) -> dict:
        if self.engine is None:
            raise RuntimeError("this TensorRT backend has been closed")
        import torch

        mn, opt, mx = self._profile
        return {
            "backend": self.name,
            "device": str(self.device),
            "gpu": torch.cuda.get_device_name(self.device),
            "threads": self._threads,
            "tensorrt": self._trt.__version__,
            "fp16": self._sidecar.get("fp16"),
            "profile": {"min": list(mn), "opt": list(opt), "max": list(mx)},
            "config": dict(self.cfg) if self.cfg else {"num_tokens": self.num_tokens, "default_k": self.default_k},
        }

    def close(self) -> None:
        self.context = None
        self.engine = None
        self.runtime = None
