"""``tokfuse eval`` for videos: per-frame fusion metrics and the temporal metric BiSWE.

    tokfuse eval --fused fused.mp4 --ir ir.mp4 --vis vis.mp4 [-o report.md] [--stride N]
    tokfuse eval --model PATH|default --ir ir.mp4 --vis vis.mp4 [--keep fused.mp4] [--k K] [--reuse R]

Frames pair by presentation time: each fused frame with the visible frame of the same time and the
infrared frame nearest to it (as ``Engine.fuse_video`` paired them). The image metrics are computed on
every ``--stride``-th frame (luminance, the chosen convention) and reported per frame with a
``mean ± std`` row; BiSWE (:mod:`tokfuse_rt.metrics.temporal`, lower = more stable) is computed on
all paired frames for the fused video and, on the same occlusion masks, for both sources.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from .eval_report import mean_lines, write_report
from .options import model_path

VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".nut"}


def add_video_args(parser) -> None:
    vid = parser.add_argument_group("videos (when --fused/--ir/--vis are video files; adds the temporal metric BiSWE)")
    vid.add_argument("--stride", type=int, default=1, help="per-frame metrics on every N-th frame (default 1)")
    vid.add_argument(
        "--reuse",
        default=None,
        help="with --model: token reuse policy of fuse-video (auto, off, N, interval=N,scene=T)",
    )


def is_video_args(a) -> bool:
    """True when the eval arguments name video files (then this module handles the run)."""
    return any(
        p is not None and Path(p).suffix.lower() in VIDEO_EXTS and not Path(p).is_dir() for p in (a.fused, a.ir, a.vis)
    )


def _decode_rgb(source):
    """[(t, rgb uint8 (H, W, 3))] of a VideoSource, upright."""
    import numpy as np

    out = []
    for f in source.frames():
        y = f.y.astype(np.float32) - 16.0
        u = np.repeat(np.repeat(f.u, 2, 0), 2, 1)[: f.y.shape[0], : f.y.shape[1]].astype(np.float32) - 128.0
        v = np.repeat(np.repeat(f.v, 2, 0), 2, 1)[: f.y.shape[0], : f.y.shape[1]].astype(np.float32) - 128.0
        # BT.601 limited range -> full-range RGB (the inverse of what the encoder tags)
        yy = y * (255.0 / 219.0)
        cb, cr = u * (255.0 / 224.0), v * (255.0 / 224.0)
        rgb = np.stack([yy + 1.402 * cr, yy - 0.344136 * cb - 0.714136 * cr, yy + 1.772 * cb], axis=-1)
        out.append((f.t, np.clip(np.round(rgb), 0, 255).astype(np.uint8)))
    if source.error:
        raise ValueError(f"{source.name}: {source.path}: {source.error}")
    return out


class _T:
    __slots__ = ("t", "img")

    def __init__(self, t, img):
        self.t, self.img = t, img


def pair_video_frames(fused_path, ir_path, vis_path):
    """(fused, ir, vis) lists of RGB frames paired by time (see the module docstring)."""
    from ..video.avio import VideoSource
    from ..video.sync import pair_by_time

    frames = {}
    srcs = {}
    try:
        for name, p in (("fused", fused_path), ("ir", ir_path), ("vis", vis_path)):
            srcs[name] = VideoSource(p, name)
            frames[name] = [_T(t, img) for t, img in _decode_rgb(srcs[name])]
    finally:
        for s in srcs.values():
            s.close()
    vis_by_t = {round(f.t, 6): f for f in frames["vis"]}
    fused = [f for f in frames["fused"] if round(f.t, 6) in vis_by_t]
    if not fused:
        raise ValueError(
            f"the fused video {fused_path} shares no frame time with the visible video {vis_path} "
            "(was it fused from it?)"
        )
    period = srcs["ir"].frame_period or srcs["vis"].frame_period or 1 / 30
    pairs = list(pair_by_time(fused, frames["ir"], 0.5 * period))
    if not pairs:
        raise ValueError("the fused and infrared videos do not overlap in time")
    F = [f.img for f, _ in pairs]
    A = [i.img for _, i in pairs]
    B = [vis_by_t[round(f.t, 6)].img for f, _ in pairs]
    if F[0].shape != B[0].shape or A[0].shape != B[0].shape:
        raise ValueError(
            f"frame sizes differ: fused {F[0].shape[1]}x{F[0].shape[0]}, ir "
            f"{A[0].shape[1]}x{A[0].shape[0]}, vis {B[0].shape[1]}x{B[0].shape[0]}"
        )
    skipped = len(frames["fused"]) - len(F)
    return F, A, B, skipped


def evaluate_videos(
    fused_path, ir_path, vis_path, convention="cddfuse", metrics=None, stride: int = 1, progress: bool = True
):
    """(rows, temporal, info): per-frame metric rows, {"fused", "ir", "vis"} BiSWE, and counts."""
    from ..metrics import BiSWE, evaluate

    if stride < 1:
        raise ValueError(f"--stride must be >= 1, got {stride}")
    F, A, B, skipped = pair_video_frames(fused_path, ir_path, vis_path)
    from ..progress import progress_bar

    rows = []
    for i in progress_bar(range(0, len(F), stride), enabled=progress, desc="metrics", unit="frame"):
        r = {"name": f"frame {i:04d}"}
        r.update(evaluate(F[i], A[i], B[i], convention=convention, metrics=metrics))
        rows.append(r)
    temporal = None
    if len(F) >= 3:
        m = BiSWE(A, B)
        temporal = {"fused": m(F), **m.sources()}
    info = {"frames": len(F), "evaluated": len(rows), "unpaired_fused_frames": skipped}
    return rows, temporal, info


def cmd_eval_video(a, conv, metrics, report: Path, figure) -> int:
    from ..metrics.report import write_figure

    info = {}
    stride = getattr(a, "stride", 1) or 1
    if a.model is None:
        missing = [o for o, v in (("--fused", a.fused), ("--ir", a.ir), ("--vis", a.vis)) if v is None]
        if missing:
            raise ValueError(
                f"missing {' '.join(missing)} (video mode: give --fused --ir --vis video files, "
                "or --model with --ir and --vis)"
            )
        rows, temporal, counts = evaluate_videos(a.fused, a.ir, a.vis, conv, metrics, stride, not a.quiet)
        info["fused"] = str(a.fused)
    else:
        if a.fused is not None or a.set_dir is not None:
            raise ValueError("video mode with --model takes --ir and --vis video files (not --fused or --set)")
        if a.ir is None or a.vis is None:
            raise ValueError("video mode with --model needs both --ir and --vis")
        from ..engine import Engine

        with tempfile.TemporaryDirectory(prefix="tokfuse_eval_") as tmp:
            out = Path(tmp) / "fused.mp4"
            with Engine(model_path(a.model), device=a.device, threads=a.threads) as eng:
                t0 = time.perf_counter()
                rep = eng.fuse_video(a.ir, a.vis, out, k=a.k, reuse=getattr(a, "reuse", None), progress=not a.quiet)
                dt = time.perf_counter() - t0
                desc = f"{eng.path.name} ({eng.info().get('backend', '?')})"
            print(f"fused {rep.frames} frames with {desc} in {dt:.1f} s ({rep.fps:.1f} fps)")
            for w in rep.warnings:
                print(f"warning: {w}")
            rows, temporal, counts = evaluate_videos(out, a.ir, a.vis, conv, metrics, stride, not a.quiet)
            if a.keep is not None:
                keep = Path(a.keep)
                keep.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(out, keep)
                print(f"fused video in {keep.resolve()}")
        info["engine"] = f"{a.model} -> {desc}, token reuse: {rep.reuse.get('policy')}"
        info["fused"] = str(a.keep) if a.keep is not None else "(temporary file, deleted)"
    info = {
        "ir": str(a.ir),
        "vis": str(a.vis),
        **info,
        "convention": conv.name,
        "evaluated": f"{counts['evaluated']} of {counts['frames']} paired frames (stride {stride})",
    }
    write_report(rows, [], report, info)
    text = report.read_text(encoding="utf-8").rstrip("\n")
    if temporal is not None:
        text += (
            "\n\n## Temporal stability\n\nBiSWE (VF-Bench bi-directional self-warping error, 8-bit grey "
            "levels, Farneback flow; lower = more stable), over all paired frames:\n\n"
            "| video | BiSWE |\n| --- | ---: |\n" + "".join(f"| {k} | {v:.4f} |\n" for k, v in temporal.items())
        )
    report.write_text(text + "\n", encoding="utf-8")
    print(f"evaluated {counts['evaluated']} frames of {counts['frames']} (convention {conv.name})")
    print(mean_lines(rows))
    if temporal is not None:
        print("BiSWE (lower = more stable): " + ", ".join(f"{k} {v:.4f}" for k, v in temporal.items()))
    print(f"report: {report.resolve()}")
    if figure is not None:
        write_figure(rows, figure, title=f"tokfuse eval video ({conv.name}, n={len(rows)})")
        print(f"figure: {figure.resolve()}")
    return 0
