"""``tokfuse_rt.Engine``: one API over the PyTorch, ONNX Runtime and TensorRT backends."""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

from .imageio import DEFAULT_MAX_PIXELS, check_depth
from .inputs import ImageInput, ImageOutput, Prepared
from .outputs import atomic_write
from .runner import Runner

if TYPE_CHECKING:
    from .video.pipeline import VideoReport
    from .video.reuse import ReusePolicy

PathLike = Union[str, os.PathLike]

DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "default.safetensors"
DEFAULT_TILE = 1024
MIN_PIXELS = 16 * 16


@dataclass
class FuseReport:
    """Outcome of ``fuse_dir``: what was written or already there, which pairs failed (and why),
    what had no partner or an ambiguous stem, warnings, and stale temporaries removed."""

    written: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (name, message)
    unpaired: list = field(default_factory=list)  # "ir/<name>" / "vis/<name>": found on one side only
    skipped: list = field(default_factory=list)  # outputs already there (resumed run)
    ambiguous: list = field(default_factory=list)  # (stem, reason): not fused
    warnings: list = field(default_factory=list)  # (name, message)
    removed_temps: list = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """The CLI's rule (``jobs.exit_code`` 0): nothing failed, no ambiguous stem, not interrupted. Files
        without a partner are listed, not an error."""
        return not self.failed and not self.ambiguous and not self.interrupted

    def summary(self) -> str:
        s = (
            f"{len(self.written)} fused, {len(self.failed)} failed, {len(self.unpaired)} unpaired, "
            f"{len(self.skipped)} already done, {len(self.ambiguous)} ambiguous"
        )
        if self.interrupted:
            s += " (interrupted)"
        lines = [s] + [f"  failed {n}: {m}" for n, m in self.failed] + [f"  ambiguous {r}" for _, r in self.ambiguous]
        lines += [f"  unpaired {n}" for n in self.unpaired] + [f"  warning {n}: {m}" for n, m in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "counts": {
                "fused": len(self.written),
                "failed": len(self.failed),
                "unpaired": len(self.unpaired),
                "already_done": len(self.skipped),
                "ambiguous": len(self.ambiguous),
            },
            "interrupted": self.interrupted,
            "written": [str(p) for p in self.written],
            "already_done": [str(p) for p in self.skipped],
            "failed": [{"name": n, "reason": m} for n, m in self.failed],
            "unpaired": list(self.unpaired),
            "ambiguous": [{"stem": s, "reason": r} for s, r in self.ambiguous],
            "warnings": [{"name": n, "message": m} for n, m in self.warnings],
            "removed_temporaries": [str(p) for p in self.removed_temps],
        }

    def write_json(self, path: PathLike, **run_info) -> Path:
        """Write the report (plus ``run_info``) as JSON, atomically."""
        d = {
            "tokfuse_rt": "fuse-dir report",
            **{k: str(v) if isinstance(v, Path) else v for k, v in run_info.items()},
            **self.to_dict(),
        }
        data = json.dumps(d, indent=1).encode()
        return atomic_write(path, lambda f: f.write(data))

    def save_json(self, path: PathLike, **run_info) -> None:
        """``write_json`` for the end of a run: a failure to write is printed, not raised (the run's
        own outcome, or the exception that interrupted it, matters more)."""
        try:
            self.write_json(path, **run_info)
        except OSError as e:
            print(f"tokfuse: could not write the JSON report {path}: {e}", file=sys.stderr)


class Engine:
    """Fuse registered image pairs.

    >>> eng = Engine()                        # bundled default model, PyTorch backend
    >>> fused = eng.fuse("ir.png", "vis.png")  # uint8 numpy (H, W) or (H, W, 3)

    ``path``: ``.safetensors`` (PyTorch), ``.onnx`` (ONNX Runtime), ``.plan``/``.engine`` (TensorRT),
    or None for the bundled default. ``device``: "auto", "cpu", "cuda", "cuda:N". ``threads``:
    intra-op threads (None leaves the library default). ``kernels`` (PyTorch backend only): "auto",
    "torch", "ext" (C++ nn_search) or "triton". ``batch_size``: pairs per backend call in fuse_batch.
    ``max_pixels``: inputs with more pixels are refused (files: from the header, before decoding;
    None: no limit). ``depth``: how files with more than 8 bits per sample are scaled to [0, 1]
    ("auto", "range", "full"; see ``tokfuse_rt.imageio.scale_to_unit``). ``tile_size``: images of
    more than 2 × tile_size² pixels are fused in tiles of about tile_size² (bounded memory) where
    the backend runs the model's halves (see ``tokfuse_rt.tiling``); None: never tile. ``align``: a
    camera rig (a rig file path or a ``tokfuse_rt.rig.Rig``) for unregistered cameras: the infrared
    image is warped onto the visible grid and the result has the visible image's size (see
    ``tokfuse_rt.rig``); every fuse call uses it unless the call passes its own.
    ``backend``: "auto" (by file suffix: PyTorch for .safetensors, ONNX Runtime for .onnx, TensorRT for
    .plan/.engine) or one of "pytorch", "native" (.safetensors: token pathway in PyTorch, render half
    in the fused C++ kernel, CPU only; see ``tokfuse_rt.backends.native_backend``), "native-int8" (the
    same with the render's convolutions in int8, from the checkpoint's int8 ranges), "onnxruntime",
    "tensorrt".
    """

    def __init__(
        self,
        path: PathLike | None = None,
        device: str = "auto",
        threads: int | None = None,
        kernels: str = "auto",
        batch_size: int = 4,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        depth: str = "auto",
        tile_size: int | None = DEFAULT_TILE,
        align=None,
        backend: str = "auto",
    ) -> None:
        from .backends import OutputGuard, backend_class
        from .devices import parse_device
        from .rig import as_rig

        rig = as_rig(align)  # before the model loads: a bad rig file fails fast

        if path is None:
            path = DEFAULT_MODEL
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"model path must be a str or os.PathLike, got {type(path).__name__}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"model file not found: {path}")
        parse_device(device)  # a bad device string fails before the model loads
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        for nm, v, lo in (("max_pixels", max_pixels, MIN_PIXELS), ("tile_size", tile_size, 16)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo):
                raise ValueError(f"{nm} must be an int >= {lo} or None, got {v!r}")
        depth = check_depth(depth)
        cls = backend_class(path, backend)
        kwargs = {"device": device, "threads": threads}
        if kernels != "auto":
            if cls.name not in ("pytorch", "native", "native-int8"):
                raise ValueError(f"kernels={kernels!r} applies to the PyTorch and native backends only, not {cls.name}")
            kwargs["kernels"] = kernels
        self.path = path
        self.batch_size = batch_size
        self._backend = cls(path, **kwargs)
        cfg = getattr(self._backend, "cfg", None)
        cb = cfg.get("codebook_size") if isinstance(cfg, dict) else getattr(cfg, "codebook_size", None)
        self._guard = OutputGuard(path, self._backend.num_tokens, cb)
        # the one way the model runs (limits, memory check, error wrapping, output checks): every path uses it
        self._runner = Runner(self._backend, path, self._guard, max_pixels, depth, tile_size, rig)

    # the engine's settings live in its runner, so that every path reads the same values
    max_pixels = property(lambda self: self._runner.max_pixels, lambda self, v: setattr(self._runner, "max_pixels", v))
    depth = property(lambda self: self._runner.depth, lambda self, v: setattr(self._runner, "depth", check_depth(v)))
    tile_size = property(lambda self: self._runner.tile_size, lambda self, v: setattr(self._runner, "tile_size", v))
    align = property(lambda self: self._runner.align, lambda self, v: setattr(self._runner, "align", _as_rig(v)))

    # --- API -----------------------------------------------------------------------------------
    def resolve_k(self, k: int | None) -> int:
        """The number of tokens STE edits for ``k`` as ``fuse`` takes it: None -> the model's default;
        TypeError / ValueError unless an int in [0, K]."""
        self._require_open()
        if k is None:
            return self._backend.default_k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int in [0, {self._backend.num_tokens}], got {type(k).__name__}")
        if not 0 <= int(k) <= self._backend.num_tokens:
            raise ValueError(f"k must be in [0, {self._backend.num_tokens}], got {k}")
        return int(k)

    @property
    def backend(self):
        """The backend object that runs the model (see :mod:`tokfuse_rt.backends`)."""
        self._require_open()
        return self._backend

    def _require_open(self):
        if self._backend is None:
            raise RuntimeError("this Engine has been closed")

    def _tiled(self, shape) -> bool:
        return self._runner.tiled(shape)

    def fuse(self, ir: ImageInput, vis: ImageInput, k: int | None = None, align=None) -> ImageOutput:
        """Fuse one pair. Returns the same kind as ``vis`` (uint8 numpy for file paths). ``align``: a
        camera rig for this call (path or Rig; None: the engine's)."""
        return self.fuse_with_tokens(ir, vis, k, align)[0]

    def fuse_with_tokens(
        self, ir: ImageInput, vis: ImageInput, k: int | None = None, align=None
    ) -> tuple[ImageOutput, np.ndarray]:
        """Like ``fuse`` but also returns the K shared token ids (int64 numpy [K]) after STE."""
        self._require_open()
        k = self.resolve_k(k)
        return self._runner.fuse(self._runner.prepare(ir, vis, align), k)

    def prepare(self, ir: ImageInput, vis: ImageInput, align=None) -> Prepared:
        """Read and check one pair as ``fuse`` does before the model runs (decoding, limits, sizes,
        colour decision). ``fuse_batch`` takes the result in place of an (ir, vis) pair, so a caller
        can read pairs one by one (to attribute errors and warnings) and still fuse them together."""
        self._require_open()
        return self._runner.prepare(ir, vis, align)

    def fuse_batch(
        self, pairs: Iterable[tuple[ImageInput, ImageInput] | Prepared], k: int | None = None, align=None
    ) -> list[ImageOutput]:
        """Fuse a sequence of (ir, vis) pairs (or ``prepare`` results); same-size pairs share backend
        calls. Returns a list. ``align``: a camera rig for the (ir, vis) pairs (None: the engine's)."""
        self._require_open()
        k = self.resolve_k(k)
        prepared = []
        for i, pair in enumerate(pairs):
            if isinstance(pair, Prepared):
                prepared.append(pair)
                continue
            try:
                ir, vis = pair
            except (TypeError, ValueError):
                raise TypeError(f"pairs[{i}]: expected an (ir, vis) pair") from None
            try:
                prepared.append(self._runner.prepare(ir, vis, align))
            except (ValueError, TypeError, FileNotFoundError) as e:
                raise type(e)(f"pairs[{i}]: {e}") from None
        out = [None] * len(prepared)
        groups: dict = {}
        for i, p in enumerate(prepared):
            if self._tiled(p.shape):
                out[i] = self._runner.fuse(p, k)[0]
            else:
                groups.setdefault(p.shape, []).append(i)
        for idx in groups.values():
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s : s + self.batch_size]
                lums = [prepared[i].luminance() for i in chunk]
                a = np.stack([y[0] for y in lums])[:, None]
                b = np.stack([y[1] for y in lums])[:, None]
                fused, _ = self._runner.run(a, b, k)
                for j, i in enumerate(chunk):
                    out[i] = prepared[i].finish(fused[j, 0])
        return out

    def fuse_dir(
        self,
        ir_dir: PathLike,
        vis_dir: PathLike,
        out_dir: PathLike,
        k: int | None = None,
        progress: bool = True,
        ext: str = ".png",
        overwrite: bool = False,
        quality: int | None = None,
        report_path: PathLike | Literal[False] | None = None,
        recursive: bool = False,
    ) -> FuseReport:
        """Fuse every pair of ``ir_dir`` and ``vis_dir`` (paired by ``tokfuse_rt.pairing``: exact file
        name, then stem; ambiguous stems are reported and not fused) into ``out_dir/<stem><ext>``;
        ``recursive``: the folder trees, sub-folders mirrored (as ``fuse_dir_ray`` does on Ray).

        Never stops on a pair: any failure (decoding, size limit, backend error, out of memory,
        writing) is reported in the returned FuseReport and the run goes on. Pairs go to the backend
        ``batch_size`` at a time (same-size pairs share a call; a failed call is retried pair by pair).
        Outputs are written atomically; a pair whose output already exists and decodes is skipped (a
        re-run resumes) unless ``overwrite``; stale temporaries of killed runs are removed. ``out_dir``
        must not be, or lie inside, an input folder. The report is also written as JSON to
        ``report_path`` (default ``out_dir/tokfuse-report.json``; False: not written), even when
        interrupted. The job's steps are those of :mod:`tokfuse_rt.jobs`.
        """
        from . import jobs

        self._require_open()
        k = self.resolve_k(k)
        job = jobs.plan(
            ir_dir,
            vis_dir,
            out_dir,
            ext=ext,
            quality=quality,
            overwrite=overwrite,
            report_path=report_path,
            recursive=recursive,
        )
        return self.fuse_job(job, k, progress)

    def fuse_job(self, job, k: int | None = None, progress: bool = True) -> FuseReport:
        """Run a fuse-dir job already planned by ``tokfuse_rt.jobs.plan`` (``fuse_dir`` = plan + this): its
        folders are created, its pairs fused and written, its report returned and written."""
        from . import jobs
        from .progress import progress_bar

        self._require_open()
        k = self.resolve_k(k)
        job.start()
        report = FuseReport(unpaired=list(job.unpaired), ambiguous=list(job.ambiguous))
        started = _dt.datetime.now().isoformat(timespec="seconds")
        bar = progress_bar(enabled=progress, desc="fusing", unit="pair", total=len(job.pairs))

        def done(name, st):
            jobs.record(report, job, name, st)
            for w in st[2]:
                bar.write(f"warning {name}: {w}", file=sys.stderr)
            if st[0] == jobs.FAILED:
                bar.write(f"skipped {name}: {st[1]}", file=sys.stderr)
            bar.update(1)

        try:
            for s in range(0, len(job.pairs), self.batch_size):
                rows = job.rows(job.pairs[s : s + self.batch_size])
                jobs.fuse_and_write(self, rows, k, overwrite=job.overwrite, quality=job.quality, on_done=done)
        except BaseException:
            report.interrupted = True
            raise
        finally:
            bar.close()
            jobs.finish(
                job,
                report,
                model=self.path,
                backend=self._backend.name,
                k=k,
                started=started,
                finished=_dt.datetime.now().isoformat(timespec="seconds"),
            )
        return report

    # --- video and live streams ----------------------------------------------------------
    def stream(
        self,
        frames: Iterable[tuple[ImageInput, ImageInput]],
        k: int | None = None,
        reuse: ReusePolicy | str | int | None = None,
    ) -> Iterator[ImageOutput]:
        """Fuse an iterable of (ir, vis) frame pairs lazily; returns an iterator of fused frames.

        Each pair is read only when its fused frame is asked for (live sources); frames take every
        input kind of ``fuse`` and come back as the kind of their ``vis``. ``reuse`` (see
        :class:`tokfuse_rt.video.ReusePolicy`: None/"auto" the default policy, "off" recompute every
        frame, an int N, or "interval=N,scene=T") lets later frames reuse the token pathway of a key
        frame; with ``reuse="off"`` every frame equals ``fuse`` of its pair. The iterator's
        ``stats()`` counts frames and key frames. The engine's ``max_pixels``, ``depth``, ``tile_size`` and
        output checks apply to every frame as to ``fuse``."""
        self._require_open()
        from .video.reuse import ReusePolicy
        from .video.stream import FrameStream

        return FrameStream(self._runner, frames, self.resolve_k(k), ReusePolicy.parse(reuse))

    def fuse_video(
        self,
        ir: PathLike,
        vis: PathLike,
        out: PathLike,
        k: int | None = None,
        reuse: ReusePolicy | str | int | None = None,
        resize: bool = False,
        progress: bool = True,
        crf: int = 18,
        preset: str = "veryfast",
    ) -> VideoReport:
        """Fuse an infrared and a visible video file into ``out`` (H.264, yuv420p, .mp4/.m4v/.mov).

        The visible stream sets the output's frame rate and timeline; each visible frame is paired
        with the infrared frame nearest in presentation time; colour comes from the visible stream;
        audio is dropped. Streams of different lengths are fused over their overlap (reported);
        frames of different sizes are an error unless ``resize`` scales the infrared frames to the
        visible size, or the engine has a camera rig (``align``: the infrared frames are warped onto
        the visible grid). ``reuse`` as in ``stream``. ``crf``/``preset``: libx264 quality and speed.
        The output is written to a temporary file and moved into place only when complete. Needs
        PyAV (``pip install 'tokfuse_rt[video]'``). Returns a ``VideoReport`` (frames, sync, time
        per stage, fps, warnings). The engine's ``max_pixels`` (from the stream headers), ``tile_size``
        (bounded memory for large frames) and output checks apply to every frame."""
        self._require_open()
        from .video.pipeline import fuse_video

        return fuse_video(
            self._runner,
            ir,
            vis,
            out,
            self.resolve_k(k),
            reuse=reuse,
            resize=resize,
            progress=progress,
            crf=crf,
            preset=preset,
        )

    def info(self) -> dict:
        """What runs: backend, device, model path, config and training summary."""
        self._require_open()
        d = {"model": str(self.path)}
        d.update(self._backend.info())
        d["limits"] = {
            "max_pixels": self.max_pixels,
            "depth": self.depth,
            "tile_size": self.tile_size,
            "tiles": self._runner.tiles,
        }
        if self.align is not None:
            rig = self.align.to_dict()
            d["align"] = {k: rig[k] for k in ("model", "matrix", "ir_size", "vis_size")}
        return d

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        if self._backend is None:
            return "Engine(closed)"
        return f"Engine({str(self.path)!r}, backend={self._backend.name})"


def _as_rig(v):
    from .rig import as_rig

    return as_rig(v)
