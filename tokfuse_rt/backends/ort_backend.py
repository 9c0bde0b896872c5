"""ONNX Runtime backend for ``.onnx`` models written by ``python -m export.to_onnx``.

CUDA execution provider when onnxruntime has it (onnxruntime-gpu) and the device allows, else the
CPU execution provider. One ``InferenceSession`` per backend: ``InferenceSession.run`` is
thread-safe, so ``Engine.fuse`` may be called from several threads.

The model's halves (``run_tokens`` / ``run_render``, see :mod:`tokfuse_rt.backends`) come from the
companion graphs ``MODEL.tokens.onnx`` and ``MODEL.render.onnx`` that ``python -m export.to_onnx``
writes beside ``MODEL.onnx``. They are opened on first use and only when their
``tokfuse_rt.checkpoint_sha256`` matches the main model's; otherwise ``has_halves`` is False and
``halves_note`` says why.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import weakref
from pathlib import Path

import numpy as np

from ..devices import parse_device
from ..onnx_contract import GRAPHS, HALVES, INPUTS, OUTPUTS, half_paths, read_config, read_meta
from . import token_counts


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - registry already reports this
        raise ImportError(f"the ONNX Runtime backend needs onnxruntime (pip install onnxruntime): {e}") from None
    return ort


def default_threads() -> int:
    """What ONNX Runtime picks for intra_op_num_threads=0: one thread per usable core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def pick_providers(device: str, available: list[str]) -> tuple[list, str]:
    """(providers for InferenceSession, requested device string) for ``device``
    (:func:`tokfuse_rt.devices.parse_device`); "auto": the CUDA provider when onnxruntime has it."""
    kind, index = parse_device(device)
    has_cuda = "CUDAExecutionProvider" in available
    if kind == "cpu" or (kind == "auto" and not has_cuda):
        return ["CPUExecutionProvider"], "cpu"
    if kind == "cuda" and not has_cuda:
        raise ValueError(
            f"device={device!r}: this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu or use device='cpu'"
        )
    index = index or 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}"


# Backends whose sessions are still open. At interpreter exit they are closed by an atexit hook, before
# the interpreter finalises its modules: an InferenceSession still alive while ONNX Runtime's static
# environment (and its thread pools) is destroyed is a use-after-free at exit.
_LIVE: weakref.WeakSet = weakref.WeakSet()


def close_live_sessions() -> int:
    """Close every OrtBackend still open (run at interpreter exit). Returns how many were open."""
    live = list(_LIVE)
    for b in live:
        b.close()
    return len(live)


atexit.register(close_live_sessions)


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, device: str = "auto", threads: int | None = None):
        ort = _ort()
        self.path = Path(path)
        providers, want = pick_providers(device, ort.get_available_providers())
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # errors only; no provider-fallback chatter
        if threads is not None:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        self._threads = int(threads) if threads is not None else default_threads()
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=providers)
        except Exception as e:  # noqa: BLE001 - InvalidProtobuf, InvalidGraph, Fail, NoSuchFile, ...
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"model file {self.path}: cannot load it as an ONNX model (corrupt, truncated or "
                f"not a tokfuse_rt export?): {msg}"
            ) from None
        used = self.session.get_providers()
        self._so = so
        # the halves run large images tile by tile (and video frames): without the CPU arena, their working
        # memory goes back after each call instead of staying reserved (~230 MB less at 8000x6000)
        self._so_halves = ort.SessionOptions()
        for attr in ("graph_optimization_level", "execution_mode", "log_severity_level"):
            setattr(self._so_halves, attr, getattr(so, attr))
        if threads is not None:
            self._so_halves.intra_op_num_threads, self._so_halves.inter_op_num_threads = int(threads), 1
        self._so_halves.enable_cpu_mem_arena = False
        self._halves = None  # {"tokens": session, "render": session} once opened
        self.halves_note = None  # why the halves are unavailable (None: not checked yet / ok)
        self._halves_lock = threading.Lock()
        if want.startswith("cuda") and "CUDAExecutionProvider" not in used:
            if device != "auto":
                raise ValueError(
                    f"device={device!r}: the CUDA execution provider failed to start (session providers: {used})"
                )
            want = "cpu"
        self.device = want
        self._check_io()
        self._meta = read_meta(self.session.get_modelmeta().custom_metadata_map)
        self.cfg = read_config(self._meta)
        k_out = self.session.get_outputs()[1].shape
        k_static = k_out[1] if len(k_out) == 2 and isinstance(k_out[1], int) else None
        self.num_tokens, self.default_k = token_counts(
            self.cfg,
            k_static,
            self.path,
            "no tokfuse_rt config in the ONNX metadata and the token count cannot be inferred from the graph",
        )
        _LIVE.add(self)

    def _check_io(self) -> None:
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = [o.name for o in self.session.get_outputs()]
        if sorted(ins) != sorted(INPUTS) or outs[:2] != list(OUTPUTS):
            raise ValueError(
                f"model file {self.path}: graph inputs {sorted(ins)} / outputs {outs} do not match a tokfuse_rt "
                f"export (inputs {list(INPUTS)}, outputs {list(OUTPUTS)}); export with python -m export.to_onnx"
            )
        for n in ("ir", "vis"):
            if ins[n].type != "tensor(float)" or len(ins[n].shape) != 4:
                raise ValueError(
                    f"model file {self.path}: input {n} is {ins[n].type} {ins[n].shape}, expected float32 [B, 1, H, W]"
                )
        kin = ins["k"]
        if kin.type not in ("tensor(int64)", "tensor(int32)"):
            raise ValueError(f"model file {self.path}: input k is {kin.type}, expected int64")
        self._k_dtype = np.int64 if kin.type == "tensor(int64)" else np.int32
        self._k_shape = () if len(kin.shape) == 0 else (1,)
        b = ins["ir"].shape[0]
        self._static_batch = b if isinstance(b, int) else None

    def run(self, ir: np.ndarray, vis: np.ndarray, k: int):
        """ir, vis: float32 [B, 1, H, W] in [0, 1] -> (fused float32 [B, 1, H, W], ids int64 [B, K])."""
        if self.session is None:
            raise RuntimeError("this ONNX Runtime backend has been closed")
        ir = np.ascontiguousarray(ir, dtype=np.float32)
        vis = np.ascontiguousarray(vis, dtype=np.float32)
        kk = np.full(self._k_shape, int(k), dtype=self._k_dtype)
        if self._static_batch is not None and ir.shape[0] != self._static_batch:
            if self._static_batch != 1:
                raise ValueError(f"model file {self.path} has a fixed batch of {self._static_batch}, got {ir.shape[0]}")
            outs = [
                self.session.run(OUTPUTS, {"ir": ir[i : i + 1], "vis": vis[i : i + 1], "k": kk})
                for i in range(ir.shape[0])
            ]
            return (np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]).astype(np.int64))
        fused, ids = self.session.run(OUTPUTS, {"ir": ir, "vis": vis, "k": kk})
        return fused, ids.astype(np.int64, copy=False)

    # --- the model's two halves --------------------------------------------------------------------
    @property
    def token_size(self) -> int | None:
        """S of the token pathway (from the exported config; None for a foreign model)."""
        return int(self.cfg["image_size"]) if self.cfg and self.cfg.get("image_size") else None

    @property
    def render_halo(self) -> int | None:
        v = self._meta.get("render_halo")
        return int(v) if v else None

    @property
    def render_align(self) -> int | None:
        v = self._meta.get("render_align")
        return int(v) if v else None

    @property
    def has_halves(self) -> bool:
        """True when the companion token/render graphs of this model are present and match it."""
        return self._open_halves() is not None

    def _open_halves(self):
        if self.session is None:
            raise RuntimeError("this ONNX Runtime backend has been closed")
        with self._halves_lock:
            if self._halves is not None or self.halves_note is not None:
                return self._halves
            ort = _ort()
            want_sha = self._meta.get("checkpoint_sha256")
            paths = half_paths(self.path)
            missing = [p.name for p in paths.values() if not p.is_file()]
            if missing:
                self.halves_note = (
                    f"no companion graphs {', '.join(missing)} beside {self.path.name} "
                    "(re-export with python -m export.to_onnx to get them)"
                )
                return None
            if not want_sha:
                self.halves_note = (
                    f"{self.path.name} carries no tokfuse_rt.checkpoint_sha256, so its companion "
                    "graphs cannot be matched to it (re-export with python -m export.to_onnx)"
                )
                return None
            sessions = {}
            for part in HALVES:
                p = paths[part]
                try:
                    sess = ort.InferenceSession(
                        str(p), sess_options=self._so_halves, providers=self.session.get_providers()
                    )
                except Exception as e:  # noqa: BLE001 - any load failure makes the halves unavailable, with the reason
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    self.halves_note = f"companion graph {p.name} cannot be loaded ({msg})"
                    return None
                meta = read_meta(sess.get_modelmeta().custom_metadata_map)
                ins = [i.name for i in sess.get_inputs()]
                outs = [o.name for o in sess.get_outputs()]
                if meta.get("part") != part or (tuple(ins), tuple(outs)) != GRAPHS[part]:
                    self.halves_note = f"companion graph {p.name} is not a tokfuse_rt {part} half (IO {ins} -> {outs})"
                    return None
                if meta.get("checkpoint_sha256") != want_sha:
                    self.halves_note = (
                        f"companion graph {p.name} was exported from another checkpoint than "
                        f"{self.path.name} (stale file; re-export with python -m export.to_onnx)"
                    )
                    return None
                sessions[part] = sess
            self._halves = sessions
            return sessions

    def _need_halves(self):
        h = self._open_halves()
        if h is None:
            raise RuntimeError(f"model file {self.path}: the token/render halves are not available: {self.halves_note}")
        return h

    def run_tokens(self, ir: np.ndarray, vis: np.ndarray, k: int):
        """ir, vis: float32 [B, 1, H, W] -> (base float32 [B, C, S, S], ids int64 [B, K]) (MODEL.tokens.onnx)."""
        sess = self._need_halves()["tokens"]
        ir = np.ascontiguousarray(ir, dtype=np.float32)
        vis = np.ascontiguousarray(vis, dtype=np.float32)
        base, ids = sess.run(None, {"ir": ir, "vis": vis, "k": np.array(int(k), dtype=np.int64)})
        return base, ids.astype(np.int64, copy=False)

    def upsample_base(self, base: np.ndarray, size) -> np.ndarray:
        """base [B, C, S, S] -> base_up float32 [B, C, H, W] for ``size`` = (H, W) (``TokFuse.upsample_base``)."""
        from . import upsample_base

        return upsample_base(base, size)

    def run_render(self, ir: np.ndarray, vis: np.ndarray, base_up: np.ndarray) -> np.ndarray:
        """ir, vis [B, 1, H, W] and base_up [B, C, H, W], float32 -> fused float32 [B, 1, H, W] (MODEL.render.onnx)."""
        sess = self._need_halves()["render"]
        feed = {
            "ir": np.ascontiguousarray(ir, dtype=np.float32),
            "vis": np.ascontiguousarray(vis, dtype=np.float32),
            "base_up": np.ascontiguousarray(base_up, dtype=np.float32),
        }
        return sess.run(None, feed)[0]

    @property
    def precision(self) -> str:
        """ "int8" for graphs written by ``export.to_onnx --int8`` (``tokfuse_rt.quant`` metadata), else "float32"."""
        from ..onnx_contract import read_precision

        return read_precision(self._meta)

    def info(self) -> dict:
        if self.session is None:
            raise RuntimeError("this ONNX Runtime backend has been closed")
        ort = _ort()
        opset = None
        try:
            import onnx

            m = onnx.load(str(self.path), load_external_data=False)
            opset = next((i.version for i in m.opset_import if i.domain in ("", "ai.onnx")), None)
        except Exception:  # noqa: BLE001 - the opset is optional information
            pass
        train = self._meta.get("train") or None
        try:
            train = json.loads(train) if train else None
        except json.JSONDecodeError:
            pass
        return {
            "backend": self.name,
            "device": self.device,
            "threads": self._threads,
            "providers": self.session.get_providers(),
            "onnxruntime": ort.__version__,
            "opset": opset,
            "exporter": self._meta.get("exporter"),
            "precision": self.precision,
            "config": dict(self.cfg) if self.cfg else {"num_tokens": self.num_tokens, "default_k": self.default_k},
            "train": train,
            "halves": "tokens+render" if self.has_halves else f"unavailable: {self.halves_note}",
        }

    def close(self) -> None:
        self.session = None
        self._halves = None
        _LIVE.discard(self)
