"""Helpers for the video tests: decode with PyAV, write test videos with PyAV/FFmpeg at test time."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

M3SVD = ("video", "M3SVD")


def clip_dir(shared_data: Path, seq: str = "0111_1716") -> Path:
    return shared_data.joinpath(*M3SVD, seq)


def decode(path, fmt: str = "rgb24"):
    """(frames as numpy, info) of the first video stream; frames converted by PyAV to ``fmt``."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames, pts = [], []
        for f in c.decode(s):
            frames.append(f.to_ndarray(format=fmt))
            pts.append(f.pts)
        info = {
            "frames": s.frames,
            "rate": s.average_rate,
            "time_base": s.time_base,
            "width": s.width,
            "height": s.height,
            "pix_fmt": s.codec_context.pix_fmt,
            "codec": s.codec_context.name,
            "duration": float(s.duration * s.time_base) if s.duration else None,
            "pts": pts,
        }
    return frames, info


def decode_planes(path):
    """[(y, u, v)] uint8 planes of a yuv420p stream (no conversion)."""
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            assert f.format.name == "yuv420p", f.format.name
            out.append(
                tuple(
                    np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width].copy() for p in f.planes
                )
            )
    return out


def write_video(
    path,
    frames,
    fps=30,
    codec="libx264",
    pix_fmt="yuv420p",
    fmt=None,
    rotation=None,
    options=None,
    container_options=None,
    pts_offset=0,
    in_fmt="rgb24",
):
    """Encode numpy frames (H, W, 3) rgb24 or (H, W) gray into ``path`` with FFmpeg (via PyAV); with
    ``in_fmt="yuv420p"`` each frame is its three planes stacked (3H/2, W), encoded without conversion."""
    import av

    path = Path(path)
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        h, w = frames[0].shape[:2]
        if in_fmt == "yuv420p":  # Y (h rows), then U and V (h/4 rows of w each)
            h = h * 2 // 3
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if options:
            s.options = dict(options)
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, a in enumerate(frames):
            a_fmt = "gray" if a.ndim == 2 and in_fmt != "yuv420p" else in_fmt
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format=a_fmt)
            f.pts = i + pts_offset
            f.time_base = s.codec_context.time_base or Fraction(1, fps)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def encode_planes(path, planes, fps=30, crf=18, preset="veryfast"):
    """Encode [(y, u, v)] uint8 yuv420p planes into ``path`` with libx264 (no colour conversion on the way)."""
    w = planes[0][0].shape[1]
    frames = [np.concatenate([y, u.reshape(-1, w), v.reshape(-1, w)]) for y, u, v in planes]
    return write_video(path, frames, fps=fps, options={"crf": str(crf), "preset": preset}, in_fmt="yuv420p")


def small_frames(shared_data: Path, name: str, n: int = 20, size=(64, 48), seq: str = "0111_1716"):
    """The first ``n`` frames of a real clip, resized (PIL bilinear) to ``size`` = (w, h)."""
    from PIL import Image

    frames, _ = decode(clip_dir(shared_data, seq) / name, "rgb24")
    return [np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames[:n]]


def psnr(a, b) -> float:
    d = a.astype(np.float64) - b.astype(np.float64)
    mse = float((d * d).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
