"""``Engine.fuse_video``: two video files -> one fused H.264 MP4.

Four stages overlap in threads, linked by bounded queues: decode infrared, decode visible (FFmpeg
through PyAV), pair by time + fuse (this thread; the backend releases the GIL), encode (libx264).
Fusion works on the streams' own 4:2:0 planes: the luma planes are the two luminance inputs
(``(Y - 16) / 219``), the fused luminance becomes the output luma and the chroma planes are passed
through from the visible frame (from the infrared frame when the visible one is gray, as
``Engine.fuse`` does; neutral when both are gray). The output goes to a temporary file beside
``out`` and is moved into place only when every frame has been written.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..progress import progress_bar
from .avio import CHROMA_NEUTRAL, VideoSink, VideoSource, float_to_luma, luma_to_float
from .reuse import FrameFuser, ReusePolicy
from .sync import SyncStats, pair_by_time

_END = object()
QUEUE_BYTES = 32 * 2**20  # frames held by each queue between the stages, at most (large frames: fewer)
VIDEO_TILE = 512  # largest tile side for frames (beside two decoders and the encoder: ~1.3 GiB at 4096x3072)


@dataclass
class VideoReport:
    """What ``fuse_video`` did: frames, synchronisation, timings (seconds) and anything to know."""

    output: str = ""
    ir: dict = field(default_factory=dict)
    vis: dict = field(default_factory=dict)
    width: int = 0
    height: int = 0
    output_size: tuple = ()  # (width, height) encoded (odd sizes padded to even)
    rate: float | None = None  # output frame rate (the visible stream's)
    duration_s: float | None = None  # output duration: last fused frame - first + one visible frame
    frames: int = 0  # frames fused and written
    sync: dict = field(default_factory=dict)
    reuse: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)  # busy time per stage + wall
    fps: float = 0.0  # frames / wall time
    warnings: list = field(default_factory=list)
    removed_temps: list = field(default_factory=list)  # temporaries of killed runs removed beside the output

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    def summary(self) -> str:
        s, sec = self.sync, self.seconds
        n = max(self.frames, 1)
        rate = f"{self.rate:g} fps" if self.rate else "unknown rate"
        dur = f"{self.duration_s:.3f} s" if self.duration_s is not None else "unknown duration"
        lines = [
            f"fused {self.frames} frames {self.width}x{self.height} at {rate} ({dur}) -> {self.output}",
            f"  sync: visible {s.get('vis_frames')} read, infrared {s.get('ir_frames')} read; "
            f"infrared frames dropped {s.get('ir_dropped')}, duplicated {s.get('ir_duplicated')}",
            f"  speed: {self.fps:.1f} fps end to end ({sec.get('wall', 0):.2f} s wall); per frame: "
            + ", ".join(f"{k} {1e3 * v / n:.1f} ms" for k, v in sec.items() if k != "wall"),
            f"  token reuse: {self.reuse.get('policy')}; token pathway ran on {self.reuse.get('key_frames')} "
            f"of {self.reuse.get('frames')} frames",
        ]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


class _Stage(threading.Thread):
    """Runs ``work(stop)`` in a daemon thread; keeps its exception and its busy seconds."""

    def __init__(self, name, work):
        super().__init__(name=f"tokfuse-{name}", daemon=True)
        self.work = work
        self.error = None
        self.busy = 0.0
        self.stop = threading.Event()

    def run(self):
        try:
            self.work(self)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self.error = e


def _put(q, item, stage):
    while not stage.stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _decoder(source: VideoSource, q):
    def work(stage):
        gen = source.frames()
        while True:
            t0 = time.perf_counter()
            f = next(gen, _END)
            stage.busy += time.perf_counter() - t0
            if not _put(q, f, stage) or f is _END:
                return

    return work


def _drain(q, stage):
    """Iterate a decoder's queue until its end marker; re-raise the decoder's error."""
    while True:
        try:
            f = q.get(timeout=0.1)
        except queue.Empty:
            if stage.error is not None:
                raise stage.error from None  # the stage's own error, not the empty queue
            if not stage.is_alive() and q.empty():
                if stage.error is not None:
                    raise stage.error from None
                return
            continue
        if f is _END:
            return
        yield f


def _encoder(sink: VideoSink, q):
    def work(stage):
        while True:
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                if stage.stop.is_set():
                    return
                continue
            if item is _END:
                return
            t0 = time.perf_counter()
            sink.write(*item)
            stage.busy += time.perf_counter() - t0

    return work


def fuse_video(
    runner,
    ir,
    vis,
    out,
    k: int,
    reuse=None,
    resize: bool = False,
    progress: bool = True,
    crf: int = 18,
    preset: str = "veryfast",
    queue_size: int = 8,
) -> VideoReport:
    """See ``Engine.fuse_video``. ``runner``: the engine's (:class:`tokfuse_rt.runner.Runner`): every model
    call checked as in ``Engine.fuse``; its camera rig (``align``: the infrared frames are warped onto the
    visible grid, ``Rig.model_input`` / ``Rig.blend``), its pixel limit (from the stream headers, before
    decoding) and its ``tile_size`` (frames over 2 × tile² pixels rendered in tiles of at most VIDEO_TILE²
    pixels) apply. The queues between the stages hold at most QUEUE_BYTES of frames each (at least 2 frames)."""
    from ..imageio import check_pixels

    t_start = time.perf_counter()
    rig, max_pixels, tile = runner.align, runner.max_pixels, runner.tile_size
    policy = ReusePolicy.parse(reuse)
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be an int in [0, 51] (x264 quality, lower is better), got {crf!r}")
    if isinstance(out, (bytes, bytearray)) or not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out: expected an output file path, got {type(out).__name__}")
    from ..outputs import check_not_input, remove_stale_temps

    out = check_not_input(out, "output", {"ir": ir, "vis": vis})
    report = VideoReport(output=str(out))
    if out.parent.is_dir():
        report.removed_temps = [str(p) for p in remove_stale_temps(out.parent)]  # left by killed runs
    src_vis = VideoSource(vis, "vis")
    src_ir = None
    stages = []
    sink = None
    try:
        src_ir = VideoSource(ir, "ir")
        for src in (src_vis, src_ir):
            cc = src.stream.codec_context
            check_pixels(cc.width, cc.height, f"{src.name} video {src.path}", max_pixels)
        fv = src_vis.first()
        fi = src_ir.first()
        if rig is not None:
            if resize:
                raise ValueError("resize=True (--resize) and a camera rig (--align) exclude each other")
            rig.check_sizes(fi.size, fv.size)
            report.warnings.append(f"infrared frames aligned onto the visible grid with {rig}")
        elif fv.size != fi.size:
            if not resize:
                raise ValueError(
                    f"ir and vis frame sizes differ: ir is {fi.size[0]}x{fi.size[1]}, vis is "
                    f"{fv.size[0]}x{fv.size[1]} (upright); register the streams, or pass resize=True "
                    "(--resize) to scale the infrared frames to the visible size, or pass a camera rig (--align RIG)"
                )
            src_ir.close()
            src_ir = VideoSource(ir, "ir", resize_to=fv.size)
            fi = src_ir.first()
            report.warnings.append(f"infrared frames resized to {fv.size[0]}x{fv.size[1]} to match the visible stream")
        width, height = fv.size
        report.width, report.height = width, height
        if min(width, height) < 16:
            raise ValueError(f"frames of {width}x{height} are too small: the model needs at least 16x16")
        sink = VideoSink(out, width, height, src_vis.rate or 30, src_vis.time_base, crf=crf, preset=preset)
        report.output_size = sink.padded
        if sink.low_memory:
            report.warnings.append(
                f"frames of {width}x{height}: encoded without x264 lookahead and B-frames (bounded memory)"
            )
        if sink.padded != (width, height):
            report.warnings.append(
                f"odd frame size {width}x{height} padded to {sink.padded[0]}x{sink.padded[1]} "
                "(H.264 4:2:0 needs even sizes; the extra row/column repeats the edge)"
            )
        frame_bytes = 3 * width * height // 2  # one yuv420p frame
        queue_size = max(2, min(queue_size, QUEUE_BYTES // max(frame_bytes, 1)))
        q_ir, q_vis, q_out = (queue.Queue(maxsize=queue_size) for _ in range(3))
        d_ir = _Stage("decode-ir", _decoder(src_ir, q_ir))
        d_vis = _Stage("decode-vis", _decoder(src_vis, q_vis))
        enc = _Stage("encode", _encoder(sink, q_out))
        stages = [d_ir, d_vis, enc]
        for s in stages:
            s.start()
        fuser = FrameFuser(runner, k, policy, tile=tile, render_tile=VIDEO_TILE)
        period = src_ir.frame_period or src_vis.frame_period or 1 / 30
        stats = SyncStats()
        bar = progress_bar(enabled=progress, total=src_vis.frames_declared or None, desc="fusing video", unit="frame")
        t_fuse = t_pack = 0.0
        t_vis0, t_ir0 = fv.t, fi.t
        try:
            for fv, fi in pair_by_time(_drain(q_vis, d_vis), _drain(q_ir, d_ir), 0.5 * period, stats):
                if enc.error is not None:
                    raise enc.error
                t0 = time.perf_counter()
                y_ir, y_vis = luma_to_float(fi.y), luma_to_float(fv.y)
                if rig is not None:
                    y_ir = rig.model_input(rig.warp(y_ir), y_vis)
                fused, _ = fuser.fuse(y_ir, y_vis)
                if rig is not None:
                    fused = rig.blend(fused, y_vis)
                t1 = time.perf_counter()
                src = fv if fv.colourful() else (fi if fi.colourful() and rig is None else None)
                if src is not None:
                    u, v = src.u, src.v
                else:
                    u = np.full(fv.u.shape, CHROMA_NEUTRAL, np.uint8)
                    v = u
                pts = fv.pts if fv.pts is not None else stats.fused - 1  # the visible timeline, as is
                item = (pts, float_to_luma(fused), u, v)
                t2 = time.perf_counter()
                t_fuse += t1 - t0
                t_pack += t2 - t1
                if not _put(q_out, item, enc):
                    break
                bar.update(1)
        finally:
            bar.close()
        _put(q_out, _END, enc)
        enc.join()
        if enc.error is not None:
            raise enc.error
        for s in (d_ir, d_vis):
            s.join()
            if s.error is not None:
                raise s.error
        if stats.fused == 0:
            raise ValueError(
                f"ir and vis do not overlap in time: the visible stream starts at {t_vis0:.3f} s, the "
                f"infrared at {t_ir0:.3f} s ({stats.vis_frames} and {stats.ir_frames} frames); nothing to fuse"
            )
        sink.commit()
        wall = time.perf_counter() - t_start
        report.frames = sink.frames
        report.rate = float(src_vis.rate) if src_vis.rate else None
        vp = src_vis.frame_period or period
        report.duration_s = round(stats.t_last - stats.t_first + vp, 6)
        report.sync = stats.as_dict()
        report.reuse = fuser.stats()
        report.seconds = {
            "decode_ir": round(d_ir.busy, 4),
            "decode_vis": round(d_vis.busy, 4),
            "fuse": round(t_fuse, 4),
            "colour": round(t_pack, 4),
            "encode": round(enc.busy, 4),
            "wall": round(wall, 4),
        }
        report.fps = round(report.frames / wall, 2) if wall > 0 else 0.0
        report.ir, report.vis = src_ir.describe(), src_vis.describe()
        _sync_warnings(report, stats, src_ir, src_vis, fuser)
        return report
    except BaseException:
        for s in stages:
            s.stop.set()
        if sink is not None:
            sink.abort()
        raise
    finally:
        for s in stages:
            s.stop.set()
        for s in stages:
            s.join(timeout=5)
        for src in (src_ir, src_vis):
            if src is not None:
                src.close()


def _sync_warnings(report: VideoReport, st: SyncStats, src_ir: VideoSource, src_vis: VideoSource, fuser) -> None:
    w = report.warnings
    for src in (src_vis, src_ir):
        if src.error:
            w.append(f"{src.name}: {src.error}; fused the frames decoded before it")
        elif src.frames_declared and src.decoded < src.frames_declared:
            w.append(
                f"{src.name}: the container declares {src.frames_declared} frames but {src.decoded} were "
                "decoded (truncated file?)"
            )
    if st.vis_before or st.vis_after or st.ir_before or st.ir_after:
        w.append(
            f"streams of different lengths: fused the overlap {st.t_first:.3f}-{st.t_last:.3f} s "
            f"(visible frames not fused: {st.vis_before} before, {st.vis_after} after the infrared stream; "
            f"infrared frames not used: {st.ir_before} before, {st.ir_after} after)"
        )
    if st.ir_dropped or st.ir_duplicated:
        w.append(
            f"to keep sync, {st.ir_dropped} infrared frames were dropped and {st.ir_duplicated} duplicated "
            "(different frame rates or missing frames)"
        )
    if fuser.note:
        w.append(fuser.note)
