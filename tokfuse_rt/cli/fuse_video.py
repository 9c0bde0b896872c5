"""``tokfuse fuse-video``: fuse an infrared and a visible video into one H.264 MP4.

    tokfuse fuse-video IR VIS -o OUT.mp4 [--k K] [--model M] [--reuse auto|off|N|interval=N,scene=T]
                      [--resize] [--crf 18] [--preset veryfast] [--report report.json] [-q]

Prints the report (frames, sync, fps, time per stage, warnings); ``--report`` also writes it as JSON.
Exit status 0 when the output was written, 1 on an error (nothing is written then).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import add_align, add_engine_args, add_k, add_output, open_engine

EPILOG = """examples:
  tokfuse fuse-video ir.mp4 vis.mp4 -o fused.mp4
  tokfuse fuse-video ir.mp4 vis.mp4 -o fused.mp4 --model model.onnx --threads 2 --reuse interval=10,scene=0.05
  tokfuse fuse-video ir.mp4 vis.mp4 -o fused.mp4 --reuse off --resize --crf 12
  tokfuse fuse-video ir.mp4 vis.mp4 -o fused.mp4 --align rig.json      # unregistered cameras (tokfuse calibrate)
"""


def register(subparsers, help: str) -> None:
    v = subparsers.add_parser(
        "fuse-video",
        help=help,
        description="Fuse two video files frame by frame: the visible stream sets the output's frame rate and "
        "timeline, each visible frame takes the infrared frame nearest in time, colour comes from "
        "the visible stream, audio is dropped. The token pathway is reused across frames "
        "(--reuse). Needs PyAV (pip install 'tokfuse_rt[video]').",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("ir", help="infrared video file")
    v.add_argument("vis", help="visible video file (sets the timeline and the colour)")
    add_output(v, required=True, help="output video (.mp4, .m4v or .mov)")
    v.add_argument(
        "--reuse",
        default="auto",
        help="token reuse: auto (default policy), off (token pathway on every frame), N (key frame every "
        "N frames) or interval=N,scene=T (T: mean |Δ| of luminance in [0, 1] that forces a key frame)",
    )
    v.add_argument(
        "--resize",
        action="store_true",
        help="scale the infrared frames to the visible size when the sizes differ (default: error)",
    )
    v.add_argument("--crf", type=int, default=18, help="x264 quality, 0 (lossless) .. 51 (default 18)")
    v.add_argument("--preset", default="veryfast", help="x264 speed preset (default veryfast)")
    v.add_argument("--report", default=None, metavar="JSON", help="also write the report as JSON")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_k(v)
    add_align(v)
    add_engine_args(v)
    v.set_defaults(func=cmd_fuse_video)


def cmd_fuse_video(a) -> int:
    from ..outputs import atomic_write, check_not_input

    if a.report:
        check_not_input(a.report, "report", {"ir": a.ir, "vis": a.vis, "output": a.output})
    with open_engine(a) as eng:
        rep = eng.fuse_video(
            a.ir,
            a.vis,
            a.output,
            k=a.k,
            reuse=a.reuse,
            resize=a.resize,
            progress=not a.quiet,
            crf=a.crf,
            preset=a.preset,
        )
        backend = eng.info().get("backend")
    print(rep.summary())
    print(f"  backend: {backend}")
    if a.report:
        p = Path(a.report)
        data = (json.dumps(rep.as_dict(), indent=2, default=str) + "\n").encode("utf-8")
        atomic_write(p, lambda f: f.write(data))
        print(f"report: {p.resolve()}")
    return 0
