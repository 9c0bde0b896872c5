"""``tokfuse_rt.Engine``: one API over the PyTorch, ONNX Runtime and TensorRT backends (§4)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .imageio import IMAGE_EXTS, is_colour, luminance, rgb_to_ycbcr, save_image, to_uint8, ycbcr_to_rgb
from .inputs import make_output, to_array

DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "default.safetensors"


@dataclass
class FuseReport:
    """Outcome of ``fuse_dir``: what was written, which pairs failed (and why), what had no partner."""

    written: list = field(default_factory=list)
    failed: list = field(default_factory=list)       # (name, message)
    unpaired: list = field(default_factory=list)     # file names found on one side only

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unpaired

    def summary(self) -> str:
        s = f"{len(self.written)} fused, {len(self.failed)} failed, {len(self.unpaired)} unpaired"
        lines = [s] + [f"  failed {n}: {m}" for n, m in self.failed] + [f"  unpaired {n}" for n in self.unpaired]
        return "\n".join(lines)


class _Prepared:
    __slots__ = ("y_ir", "y_vis", "chroma", "spec")

    def __init__(self, ir, vis):
        a, _ = to_array(ir, "ir")
        b, spec = to_array(vis, "vis")
        if a.shape[:2] != b.shape[:2]:
            raise ValueError(
                f"ir and vis sizes differ: ir is {a.shape[1]}x{a.shape[0]}, vis is {b.shape[1]}x{b.shape[0]} "
                "(the pair must be registered and of the same size)"
            )
        self.chroma = b if is_colour(b) else (a if is_colour(a) else None)
        self.y_ir, self.y_vis, self.spec = luminance(a), luminance(b), spec

    def finish(self, fused_y: np.ndarray):
        if self.chroma is not None:
            ycc = rgb_to_ycbcr(self.chroma)
            ycc[..., 0] = fused_y
            out_f = ycbcr_to_rgb(ycc)
        else:
            out_f = np.clip(fused_y, 0.0, 1.0).astype(np.float32)
        return make_output(to_uint8(out_f), out_f, self.spec)


class Engine:
    """Fuse registered image pairs.

    >>> eng = Engine()                        # bundled default model, PyTorch backend
    >>> fused = eng.fuse("ir.png", "vis.png")  # uint8 numpy (H, W) or (H, W, 3)

    ``path``: ``.safetensors`` (PyTorch), ``.onnx`` (ONNX Runtime), ``.plan``/``.engine`` (TensorRT),
    or None for the bundled default. ``device``: "auto", "cpu", "cuda", "cuda:N". ``threads``:
    intra-op threads (None leaves the library default). ``kernels`` (PyTorch backend only): "auto",
    "torch", "ext" (C++ nn_search) or "triton". ``batch_size``: pairs per backend call in fuse_batch.
    """

    def __init__(self, path=None, device: str = "auto", threads: int | None = None, kernels: str = "auto",
                 batch_size: int = 4):
        from .backends import backend_class

        if path is None:
            path = DEFAULT_MODEL
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"model path must be a str or os.PathLike, got {type(path).__name__}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"model file not found: {path}")
        if not isinstance(device, str):
            raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        cls = backend_class(path)
        kwargs = {"device": device, "threads": threads}
        if kernels != "auto":
            if cls.name != "pytorch":
                raise ValueError(f"kernels={kernels!r} applies to the PyTorch backend only, not {cls.name}")
            kwargs["kernels"] = kernels
        self.path = path
        self.batch_size = batch_size
        self._backend = cls(path, **kwargs)

    # --- API -----------------------------------------------------------------------------------
    def _k(self, k) -> int:
        if k is None:
            return self._backend.default_k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int in [0, {self._backend.num_tokens}], got {type(k).__name__}")
        if not 0 <= int(k) <= self._backend.num_tokens:
            raise ValueError(f"k must be in [0, {self._backend.num_tokens}], got {k}")
        return int(k)

    def _require_open(self):
        if self._backend is None:
            raise RuntimeError("this Engine has been closed")

    def fuse(self, ir, vis, k: int | None = None):
        """Fuse one pair. Returns the same kind as ``vis`` (uint8 numpy for file paths)."""
        return self.fuse_with_tokens(ir, vis, k)[0]

    def fuse_with_tokens(self, ir, vis, k: int | None = None):
        """Like ``fuse`` but also returns the K shared token ids (int64 numpy [K]) after STE."""
        self._require_open()
        k = self._k(k)
        p = _Prepared(ir, vis)
        fused, ids = self._backend.run(p.y_ir[None, None], p.y_vis[None, None], k)
        return p.finish(fused[0, 0]), ids[0]

    def fuse_batch(self, pairs, k: int | None = None) -> list:
        """Fuse a sequence of (ir, vis) pairs; same-size pairs share backend calls. Returns a list."""
        self._require_open()
        k = self._k(k)
        prepared = []
        for i, pair in enumerate(pairs):
            try:
                ir, vis = pair
            except (TypeError, ValueError):
                raise TypeError(f"pairs[{i}]: expected an (ir, vis) pair") from None
            try:
                prepared.append(_Prepared(ir, vis))
            except (ValueError, TypeError, FileNotFoundError) as e:
                raise type(e)(f"pairs[{i}]: {e}") from None
        out = [None] * len(prepared)
        groups: dict = {}
        for i, p in enumerate(prepared):
            groups.setdefault(p.y_ir.shape, []).append(i)
        for idx in groups.values():
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s:s + self.batch_size]
                a = np.stack([prepared[i].y_ir for i in chunk])[:, None]
                b = np.stack([prepared[i].y_vis for i in chunk])[:, None]
                fused, _ = self._backend.run(a, b, k)
                for j, i in enumerate(chunk):
                    out[i] = prepared[i].finish(fused[j, 0])
        return out

    def fuse_dir(self, ir_dir, vis_dir, out_dir, k: int | None = None, progress: bool = True,
                 ext: str = ".png") -> FuseReport:
        """Fuse every pair with the same file name (or stem) in ``ir_dir`` and ``vis_dir``.

        Writes ``out_dir/<stem><ext>``. A bad pair is reported in the returned FuseReport and
        skipped; the rest carry on and files already written stay.
        """
        self._require_open()
        k = self._k(k)
        pairs, unpaired = pair_files(ir_dir, vis_dir)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report = FuseReport(unpaired=unpaired)
        bar = _progress(pairs, progress, "fusing")
        for name, a, b in bar:
            try:
                img = self.fuse(a, b, k)
                report.written.append(save_image(img, out_dir / (Path(name).stem + ext)))
            except (ValueError, TypeError, FileNotFoundError, OSError) as e:
                report.failed.append((name, str(e)))
                if progress:
                    bar.write(f"skipped {name}: {e}", file=sys.stderr)
        return report

    # --- video and live streams (SPEC §8) ----------------------------------------------------------
    def stream(self, frames, k: int | None = None, reuse=None):
        """Fuse an iterable of (ir, vis) frame pairs lazily; returns an iterator of fused frames.

        Each pair is read only when its fused frame is asked for (live sources); frames take every
        input kind of ``fuse`` and come back as the kind of their ``vis``. ``reuse`` (see
        :class:`tokfuse_rt.video.ReusePolicy`: None/"auto" the default policy, "off" recompute every
        frame, an int N, or "interval=N,scene=T") lets later frames reuse the token pathway of a key
        frame; with ``reuse="off"`` every frame equals ``fuse`` of its pair. The iterator's
        ``stats()`` counts frames and key frames."""
        self._require_open()
        from .video.reuse import ReusePolicy
        from .video.stream import FrameStream

        return FrameStream(self._backend, frames, self._k(k), ReusePolicy.parse(reuse))

    def fuse_video(self, ir, vis, out, k: int | None = None, reuse=None, resize: bool = False,
                   progress: bool = True, crf: int = 18, preset: str = "veryfast"):
        """Fuse an infrared and a visible video file into ``out`` (H.264, yuv420p, .mp4/.m4v/.mov).

        The visible stream sets the output's frame rate and timeline; each visible frame is paired
        with the infrared frame nearest in presentation time; colour comes from the visible stream;
        audio is dropped. Streams of different lengths are fused over their overlap (reported);
        frames of different sizes are an error unless ``resize`` scales the infrared frames to the
        visible size. ``reuse`` as in ``stream``. ``crf``/``preset``: libx264 quality and speed.
        The output is written to a temporary file and moved into place only when complete. Needs
        PyAV (``pip install 'tokfuse_rt[video]'``). Returns a ``VideoReport`` (frames, sync, time
        per stage, fps, warnings)."""
        self._require_open()
        from .video.pipeline import fuse_video

        return fuse_video(self._backend, ir, vis, out, self._k(k), reuse=reuse, resize=resize,
                          progress=progress, crf=crf, preset=preset)

    def info(self) -> dict:
        """What runs: backend, device, model path, config and training summary."""
        self._require_open()
        d = {"model": str(self.path)}
        d.update(self._backend.info())
        return d

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        if self._backend is None:
            return "Engine(closed)"
        return f"Engine({str(self.path)!r}, backend={self._backend.name})"


def pair_files(ir_dir, vis_dir):
    """[(name, ir_path, vis_path)], [unpaired names]; pairs by file name, else by stem."""
    dirs = {}
    for label, d in (("ir", ir_dir), ("vis", vis_dir)):
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"{label} directory not found: {d}")
        dirs[label] = {p.stem: p for p in sorted(d.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTS}
    a, b = dirs["ir"], dirs["vis"]
    pairs = [(a[s].name, a[s], b[s]) for s in sorted(set(a) & set(b))]
    unpaired = [f"ir/{a[s].name}" for s in sorted(set(a) - set(b))] + [f"vis/{b[s].name}" for s in sorted(set(b) - set(a))]
    return pairs, unpaired


class _NoBar(list):
    def write(self, msg, file=None):
        pass


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return _NoBar(items)
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="pair", file=sys.stderr)
