"""Export pipeline: checkpoint -> ONNX -> TensorRT (python -m export.to_onnx / export.to_trt)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def exporter_parser(
    prog: str,
    description: str,
    ckpt_help: str,
    output_help: str,
    opset_help: str,
    add_options: Callable[[argparse.ArgumentParser], object],
) -> argparse.ArgumentParser:
    """The command line of one exporter: CKPT, -o/--output and --opset, then the exporter's own options
    (``add_options(parser)``, which ``tokfuse export`` registers too)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("ckpt", help=ckpt_help)
    p.add_argument("-o", "--output", default=None, help=output_help)
    p.add_argument("--opset", type=int, default=None, help=opset_help)
    add_options(p)
    return p
