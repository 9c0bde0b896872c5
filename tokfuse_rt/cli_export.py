"""``tokfuse export``: checkpoint -> ONNX (ONNX Runtime) or TensorRT engine.

    tokfuse export onnx CKPT -o model.onnx [--opset 18]
    tokfuse export trt  CKPT -o model.plan [--fp16] [--min-shape 1x16x16 --opt-shape 1x480x640 --max-shape 4x2048x2048]
    tokfuse export CKPT -o model.onnx|model.plan     (format from the output suffix)

Thin wrapper over ``python -m export.to_onnx`` and ``python -m export.to_trt`` (same options and
exit codes; ``export trt`` without TensorRT/GPU writes the ONNX + compatibility report and exits 3).
"""
from __future__ import annotations

import argparse

FORMATS = {"onnx": "onnx", "trt": "trt", "tensorrt": "trt"}
SUFFIXES = {".onnx": "onnx", ".plan": "trt", ".engine": "trt"}

EPILOG = """examples:
  tokfuse export onnx model.safetensors -o model.onnx
  tokfuse export trt model.safetensors -o model.plan --fp16 --opt-shape 1x480x640 --max-shape 1x1080x1920
  tokfuse export model.safetensors -o model.onnx
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX or a TensorRT engine",
        usage="tokfuse export [onnx|trt] CKPT -o OUTPUT [options]",
        description="Export a TokFuse checkpoint to ONNX (for ONNX Runtime) or build a TensorRT engine.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", metavar="[FORMAT] CKPT", nargs="+",
                   help="optional format (onnx | trt), then the checkpoint (.safetensors); without FORMAT the "
                        "suffix of -o decides")
    p.add_argument("-o", "--output", default=None, help="output file: .onnx, .plan or .engine")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (>= 17)")
    p.add_argument("--no-verify", action="store_true", help="onnx: skip the ONNX Runtime vs PyTorch self-check")
    g = p.add_argument_group("TensorRT")
    g.add_argument("--fp16", action="store_true", help="allow FP16 convolutions")
    g.add_argument("--min-shape", default=None, help="smallest BxHxW of the profile")
    g.add_argument("--opt-shape", default=None, help="BxHxW TensorRT tunes for")
    g.add_argument("--max-shape", default=None, help="largest BxHxW of the profile")
    g.add_argument("--workspace", type=float, default=None, help="builder workspace, GiB")
    g.add_argument("--onnx", default=None, help="where the intermediate ONNX goes")
    g.add_argument("--report", default=None, help="where the TensorRT compatibility report goes")
    g.add_argument("--verbose", action="store_true", help="print TensorRT's log")
    p.set_defaults(func=cmd_export)


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
            raise ValueError("cannot tell the export format: give it (tokfuse export onnx|trt CKPT -o OUT) or use "
                             "an output ending in .onnx, .plan or .engine")
        return SUFFIXES[suffix], what[0]
    raise ValueError(f"expected [onnx|trt] CKPT, got {' '.join(what)}")


def cmd_export(a) -> int:
    fmt, ckpt = resolve(a.what, a.output)
    try:
        if fmt == "onnx":
            from export import to_onnx as mod
        else:
            from export import to_trt as mod
    except ModuleNotFoundError as e:
        raise ImportError(f"the export package is not importable ({e}); "
                          "install tokfuse_rt with its export package") from None
    argv = [ckpt]
    if a.output:
        argv += ["-o", a.output]
    if a.opset is not None:
        argv += ["--opset", str(a.opset)]
    if fmt == "onnx":
        trt_only = [n for n in ("fp16", "min_shape", "opt_shape", "max_shape", "workspace", "onnx", "report")
                    if getattr(a, n) not in (None, False)]
        if trt_only:
            raise ValueError(f"--{trt_only[0].replace('_', '-')} applies to TensorRT export only")
        if a.no_verify:
            argv.append("--no-verify")
    else:
        for name in ("min_shape", "opt_shape", "max_shape", "workspace", "onnx", "report"):
            v = getattr(a, name)
            if v is not None:
                argv += [f"--{name.replace('_', '-')}", str(v)]
        if a.fp16:
            argv.append("--fp16")
        if a.verbose:
            argv.append("--verbose")
    return mod.main(argv)
