"""Video and live streams: ``Engine.fuse_video`` (two video files -> one fused H.264 MP4)
and ``Engine.stream`` (an iterable of frame pairs, fused lazily), with token reuse across frames.

Decoding and encoding use FFmpeg through PyAV, the optional extra ``tokfuse_rt[video]``; it is
imported only when a video file is opened (``Engine.stream`` needs numpy and torch only).
"""

from __future__ import annotations

from .pipeline import VideoReport
from .reuse import FrameFuser, ReusePolicy
from .sync import SyncStats, pair_by_time

__all__ = ["FrameFuser", "ReusePolicy", "SyncStats", "VideoReport", "pair_by_time"]
