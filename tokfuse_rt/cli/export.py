"""``tokfuse export``: checkpoint -> ONNX (ONNX Runtime) or TensorRT engine, or a checkpoint with int8
ranges for the native backend.

    tokfuse export onnx CKPT -o model.onnx [--opset 18]
    tokfuse export trt  CKPT -o model.plan [--fp16] [--min-shape 1x16x16 --opt-shape 1x480x640 --max-shape 4x2048x2048]
    tokfuse export native CKPT -o model.int8.safetensors --calib DIR    (export.to_native)
    tokfuse export CKPT -o model.onnx|model.plan     (format from the output suffix)

The options are the exporters' own (``export.to_onnx.add_options``, ``export.to_trt.add_options``) and
the command runs their ``run`` functions: the same behaviour and exit codes as ``python -m
export.to_onnx`` / ``python -m export.to_trt`` (``export trt`` without TensorRT/GPU writes the ONNX +
compatibility report and exits 3). An option of the other format is an error.
"""

from __future__ import annotations

import argparse

from .options import add_output

FORMATS = {"onnx": "onnx", "trt": "trt", "tensorrt": "trt", "native": "native"}
# ONNX options that the other formats read too: native export the calibration, TensorRT --int8 as well
SHARED = {"native": {"calib", "calib_pairs"}, "trt": {"int8", "calib", "calib_pairs"}}
SUFFIXES = {".onnx": "onnx", ".plan": "trt", ".engine": "trt"}

EPILOG = """examples:
  tokfuse export onnx model.safetensors -o model.onnx
  tokfuse export trt model.safetensors -o model.plan --fp16 --opt-shape 1x480x640 --max-shape 1x1080x1920
  tokfuse export native model.safetensors -o model.int8.safetensors --calib data/train
  tokfuse export model.safetensors -o model.onnx
"""


def _exporters():
    try:
        from export import to_native, to_onnx, to_trt
    except ModuleNotFoundError as e:
        raise ImportError(
            f"the export package is not importable ({e}); install tokfuse_rt with its export package"
        ) from None
    return {"onnx": to_onnx, "trt": to_trt, "native": to_native}


def register(subparsers, help: str) -> None:
    p = subparsers.add_parser(
        "export",
        help=help,
        usage="tokfuse export [onnx|trt] CKPT -o OUTPUT [options]",
        description="Export a TokFuse checkpoint to ONNX (for ONNX Runtime) or build a TensorRT engine.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "what",
        metavar="[FORMAT] CKPT",
        nargs="+",
        help="optional format (onnx | trt | native), then the checkpoint (.safetensors; trt: or an .onnx file); "
        "without FORMAT the suffix of -o decides",
    )
    add_output(p, help="output file: .onnx, .plan or .engine")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (>= 17)")
    try:
        exporters = _exporters()
    except ImportError as e:  # reported when the command runs, not on every `tokfuse`
        p.set_defaults(func=_unavailable(e))
        return
    own = {}
    for fmt, mod in exporters.items():
        if fmt == "native":  # --calib, --calib-pairs: the ONNX group's
            continue
        g = p.add_argument_group("ONNX" if fmt == "onnx" else "TensorRT")
        own[fmt] = mod.add_options(g)
    p.set_defaults(func=cmd_export, export_options=own)


def _unavailable(err: ImportError):
    def fail(a):
        raise err

    return fail


def resolve(what: list, output) -> tuple[str, str]:
    """(format, ckpt) from the positional arguments and the output suffix."""
    from pathlib import Path

    if len(what) == 2 and what[0].lower() in FORMATS:
        return FORMATS[what[0].lower()], what[1]
    if len(what) == 1:
        if what[0].lower() in FORMATS:
            raise ValueError(f"export {what[0]}: missing the checkpoint (tokfuse export {what[0]} CKPT -o OUT)")
        suffix = Path(output).suffix.lower() if output else ""
        if suffix not in SUFFIXES:
            raise ValueError(
                "cannot tell the export format: give it (tokfuse export onnx|trt CKPT -o OUT) or use "
                "an output ending in .onnx, .plan or .engine"
            )
        return SUFFIXES[suffix], what[0]
    raise ValueError(f"expected [onnx|trt|native] CKPT, got {' '.join(what)}")


def cmd_export(a) -> int:
    fmt, a.ckpt = resolve(a.what, a.output)
    for other, actions in a.export_options.items():
        for act in actions:
            if act.dest in SHARED.get(fmt, ()):
                continue
            if other != fmt and getattr(a, act.dest) != act.default:
                what = "ONNX" if other == "onnx" else "TensorRT"
                raise ValueError(f"{act.option_strings[-1]} applies to {what} export only")
    return _exporters()[fmt].run(a, prog=f"tokfuse export {fmt}")
