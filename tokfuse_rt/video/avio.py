"""Video decoding and encoding with FFmpeg through PyAV (the optional extra ``tokfuse_rt[video]``).

Frames travel as :class:`YuvFrame`: 8-bit BT.601 limited-range ("tv") 4:2:0 planes, the colour
space of the H.264 output. Every decoded frame is brought there by FFmpeg's swscale (a no-op for
the usual yuv420p input; other pixel formats, full-range or BT.709 streams are converted) and turned
upright by the stream's display matrix (rotations by multiples of 90°). The luma plane maps to the
BT.601 luminance that ``Engine.fuse`` computes from RGB by ``(Y - 16) / 219``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# limited-range luma code value -> luminance in [0, 1] (BT.601: black 16, white 235)
LUMA_LUT = np.clip((np.arange(256, dtype=np.float32) - 16.0) / 219.0, 0.0, 1.0).astype(np.float32)
CHROMA_NEUTRAL = 128
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
#: Frames with more pixels are decoded with slice threads only and encoded without x264's lookahead and
#: B-frames (``VideoSink.low_memory``): frame threads and x264's queues would hold ~1 GB at 4096x3072.
LOW_MEMORY_PIXELS = 1 << 23


def require_av():
    try:
        import av
    except ImportError as e:
        raise ImportError(
            f"video support needs PyAV (FFmpeg): pip install 'tokfuse_rt[video]' (or make, which installs it) [{e}]"
        ) from None
    return av


def luma_to_float(y: np.ndarray) -> np.ndarray:
    """uint8 limited-range luma (H, W) -> float32 luminance in [0, 1]."""
    return LUMA_LUT[y]


def float_to_luma(f: np.ndarray) -> np.ndarray:
    """float luminance in [0, 1] -> uint8 limited-range luma, rounded to nearest."""
    return (np.clip(f, 0.0, 1.0) * np.float32(219.0) + np.float32(16.5)).astype(np.uint8)


@dataclass
class YuvFrame:
    t: float  # presentation time (s)
    pts: int | None  # presentation time in the source stream's time base
    y: np.ndarray  # uint8 (H, W) luma, limited range
    u: np.ndarray  # uint8 (ceil(H/2), ceil(W/2)) Cb
    v: np.ndarray  # uint8 (ceil(H/2), ceil(W/2)) Cr

    @property
    def size(self) -> tuple:
        """(width, height)"""
        return self.y.shape[1], self.y.shape[0]

    def colourful(self, tol: int = 1) -> bool:
        """True when some chroma sample departs from neutral (128) by more than ``tol`` code values
        (a gray camera's stream has neutral chroma, up to coding noise)."""
        lo, hi = CHROMA_NEUTRAL - tol, CHROMA_NEUTRAL + tol
        return bool(self.u.min() < lo or self.u.max() > hi or self.v.min() < lo or self.v.max() > hi)


def _plane(p) -> np.ndarray:
    return np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width]


class VideoSource:
    """A video file (or FFmpeg URL) opened for decoding, validated once, loudly.

    ``name`` ("ir", "vis") prefixes every error. ``resize_to`` = (width, height) rescales every frame
    to that upright size. ``frames()`` yields :class:`YuvFrame` in presentation order; a decoding
    error after at least one good frame ends the stream and is kept in ``error`` (a truncated or
    corrupt file: the caller reports it), before the first frame it raises ValueError."""

    def __init__(self, path, name: str, resize_to: tuple | None = None):
        av = require_av()
        self.name = name
        if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{name}: expected a video file path, got {type(path).__name__}")
        text = os.fspath(path)
        self.path = text
        url = text
        if "://" not in text or os.path.lexists(text):
            from ..imageio import check_input_file

            check_input_file(text, name, "a video")
            # a local file is opened as a file: FFmpeg's file protocol on the absolute path, so a name with
            # ':' ("cam1:12:00.mp4", "file:x.mp4") is never taken for a protocol or URL
            url = "file:" + os.path.abspath(text)
        try:
            self.container = av.open(url, "r")
        except av.FFmpegError as e:
            raise ValueError(
                f"{name}: not a readable video file (truncated, corrupt or not a video?): {text}: "
                f"{getattr(e, 'strerror', None) or e}"
            ) from None
        streams = self.container.streams
        if not streams.video:
            kinds = sorted({s.type for s in streams}) or ["none"]
            self.container.close()
            raise ValueError(f"{name}: {text} has no video stream (streams: {', '.join(kinds)})")
        self.stream = streams.video[0]
        cc = self.stream.codec_context
        if not cc.width or not cc.height:
            self.container.close()
            raise ValueError(f"{name}: {text}: the video stream has no frame size (corrupt header?)")
        # frame threads each hold frames in flight; large frames are decoded with slice threads (bounded memory)
        self.stream.thread_type = "SLICE" if cc.width * cc.height > LOW_MEMORY_PIXELS else "AUTO"
        self.codec = cc.name
        self.pix_fmt = cc.pix_fmt
        self.time_base = self.stream.time_base or Fraction(1, 90000)
        self.rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        self.frames_declared = int(self.stream.frames or 0)
        d = self.stream.duration
        self.duration = float(d * self.time_base) if d else None
        self.resize_to = resize_to
        self.rotation = None  # from the first decoded frame
        self.error = None
        self.decoded = 0
        self._gen = None
        self._first = None

    @property
    def frame_period(self) -> float | None:
        return float(1 / self.rate) if self.rate else None

    def first(self) -> YuvFrame:
        """Decode the first frame (kept for ``frames()``); ValueError when the stream has none."""
        if self._first is None:
            self._gen = self._decode()
            self._first = next(self._gen, None)
            if self._first is None:
                if self.error:
                    raise ValueError(f"{self.name}: {self.path}: no frame could be decoded ({self.error})")
                raise ValueError(f"{self.name}: {self.path}: the video stream has no frames")
        return self._first

    def frames(self):
        first = self.first()
        yield first
        yield from self._gen

    def _decode(self):
        av = require_av()
        from av.video.reformatter import ColorRange, Colorspace, Interpolation

        it = self.container.decode(self.stream)
        while True:
            try:
                f = next(it)
            except StopIteration:
                return
            except av.FFmpegError as e:
                self.error = (
                    f"decoding stopped after {self.decoded} frames: "
                    f"{getattr(e, 'strerror', None) or e} (truncated or corrupt file)"
                )
                return
            rot = int(getattr(f, "rotation", 0) or 0)
            if rot % 90:
                raise ValueError(
                    f"{self.name}: {self.path}: display rotation of {rot} degrees is not supported "
                    "(multiples of 90 only)"
                )
            quarter = (rot // 90) % 4
            if self.rotation is None:
                self.rotation = rot
            w = h = None
            if self.resize_to is not None:
                w, h = self.resize_to if quarter % 2 == 0 else self.resize_to[::-1]
                if (w, h) == (f.width, f.height):
                    w = h = None
            cs = int(f.colorspace)
            plain = f.format.name == "yuv420p" and cs in (2, 5, 6) and int(f.color_range) in (0, 1) and w is None
            if not plain:
                interp = Interpolation.AREA if w is not None and w * h < f.width * f.height else Interpolation.BICUBIC
                f = f.reformat(
                    width=w,
                    height=h,
                    format="yuv420p",
                    dst_colorspace=Colorspace.ITU601,
                    src_color_range=int(f.color_range) or None,
                    dst_color_range=ColorRange.MPEG,
                    interpolation=interp,
                )
            y, u, v = (_plane(p) for p in f.planes)
            if quarter:
                y, u, v = (np.rot90(a, quarter) for a in (y, u, v))
            t = (
                float(f.pts * f.time_base)
                if f.pts is not None and f.time_base
                else (self.decoded * self.frame_period if self.frame_period else float(self.decoded))
            )
            self.decoded += 1
            yield YuvFrame(t, f.pts, y, u, v)

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None
            self._gen = None

    def describe(self) -> dict:
        return {
            "path": self.path,
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "rate": float(self.rate) if self.rate else None,
            "frames_declared": self.frames_declared,
            "frames_decoded": self.decoded,
            "duration_s": self.duration,
            "rotation": self.rotation,
            "error": self.error,
        }


class VideoSink:
    """H.264 (libx264, yuv420p, BT.601 limited range tags) into a temporary file beside ``path``;
    ``commit()`` moves it into place, ``abort()`` deletes it. Odd frame sizes are padded to even
    (4:2:0 needs even sizes) by repeating the last row / column: ``padded`` tells. Frames over
    LOW_MEMORY_PIXELS are encoded without lookahead and B-frames (bounded memory; ``low_memory``)."""

    def __init__(
        self, path, width: int, height: int, rate, time_base, crf: int = 18, preset: str = "veryfast", threads: int = 0
    ):
        av = require_av()
        self.path = Path(os.fspath(path))
        fmt = OUTPUT_FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ValueError(
                f"output {self.path}: unsupported extension {self.path.suffix!r}; "
                f"use one of {', '.join(sorted(OUTPUT_FORMATS))} (H.264 video)"
            )
        if self.path.is_dir():
            raise ValueError(f"output {self.path} is a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        from ..outputs import open_temp

        self.width, self.height = int(width), int(height)
        self.padded = (self.width + self.width % 2, self.height + self.height % 2)
        self.low_memory = self.width * self.height > LOW_MEMORY_PIXELS
        self.time_base = time_base
        self.frames = 0
        self.container = None
        # an exclusive temporary (no link followed, removed by outputs.remove_stale_temps after a kill),
        # handed to FFmpeg as an open file: the output name is never parsed as a URL
        self.file, self.tmp = open_temp(self.path)
        try:
            self.container = av.open(self.file, "w", format=fmt)
            s = self.container.add_stream("libx264", rate=rate)
            s.width, s.height = self.padded
            s.pix_fmt = "yuv420p"
            s.codec_context.time_base = time_base
            s.time_base = time_base
            cc = s.codec_context
            cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = 6, 1, 6, 6  # smpte170m, tv
            if threads:
                cc.thread_count = int(threads)
            s.options = {"crf": str(int(crf)), "preset": str(preset)}
            if self.low_memory:  # x264's lookahead and B-frame queues hold ~40 frames: ~0.8 GB at 4096x3072
                s.options["x264-params"] = "rc-lookahead=0:sync-lookahead=0:bframes=0"
            self.stream = s
        except Exception:
            self.abort()
            raise

    def write(self, pts: int, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        av = require_av()
        pw, ph = self.padded
        if (pw, ph) != (self.width, self.height):
            y = np.pad(y, ((0, ph - self.height), (0, pw - self.width)), mode="edge")
        f = av.VideoFrame(pw, ph, "yuv420p")
        for plane, data in zip(f.planes, (y, u, v)):
            _plane(plane)[...] = data
        f.pts = int(pts)
        f.time_base = self.time_base
        for pkt in self.stream.encode(f):
            self.container.mux(pkt)
        self.frames += 1

    def commit(self) -> Path:
        from ..outputs import commit_temp

        try:
            for pkt in self.stream.encode():
                self.container.mux(pkt)
            self.container.close()
            self.container = None
            commit_temp(self.file, self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - closing a broken container must not hide the error being reported
                pass
            self.container = None
        from ..outputs import discard_temp

        discard_temp(self.file, self.tmp)
