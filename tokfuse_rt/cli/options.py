"""The options the sub-commands share, one name and one meaning each: ``-m/--model``, ``-o/--output``,
``--k``, ``--device``, ``--threads``, ``--backend``, ``--align`` and the reading limits; old spellings as
hidden aliases that still work and warn (:func:`add_deprecated_alias`).

Light on purpose: importing this module imports only the standard library (the commands' modules import
it while ``tokfuse <cmd> --help`` builds their parser)."""

from __future__ import annotations

import argparse
import sys

DEFAULT_MODEL_WORD = "default"  # -m default, or -m with no value: the bundled model
MODEL_HELP = (
    "model file: .safetensors (PyTorch), .onnx (ONNX Runtime), .plan (TensorRT), or 'default' (the bundled model)"
)


def model_path(value: str | None) -> str | None:
    """The path an Engine opens for a ``--model`` value: None (the bundled model) for no value or 'default'."""
    if value is None or str(value).strip().lower() == DEFAULT_MODEL_WORD:
        return None
    return value


def add_model(p, *, multiple: bool = False, help: str | None = None, default=None) -> argparse.Action:
    """``-m/--model PATH|default`` (``-m`` alone = default); ``multiple``: repeatable, a list."""
    return p.add_argument(
        "-m",
        "--model",
        nargs="?",
        const=DEFAULT_MODEL_WORD,
        default=default,
        action="append" if multiple else "store",
        metavar="PATH|default",
        help=help or f"{MODEL_HELP} (default: the bundled model)",
    )


def add_output(p, *, required: bool = False, default=None, help: str = "output file") -> argparse.Action:
    """``-o/--output``."""
    return p.add_argument("-o", "--output", required=required, default=default, help=help)


def add_k(p) -> argparse.Action:
    """``--k``, the number of tokens STE edits."""
    return p.add_argument(
        "--k", type=int, default=None, help="tokens edited by STE, 0..K (default: the model's default)"
    )


def add_device(p) -> argparse.Action:
    return p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")


def add_threads(p, *, default=None, help: str | None = None) -> argparse.Action:
    return p.add_argument(
        "--threads",
        type=int,
        default=default,
        help=help or "CPU threads for the backend (default: library default)",
    )


def add_align(p) -> argparse.Action:
    """``--align RIG``: a camera rig file (``tokfuse calibrate``) for unregistered infrared and visible cameras."""
    return p.add_argument(
        "--align",
        default=None,
        metavar="RIG",
        help="camera rig JSON (tokfuse calibrate): warp the infrared image onto the visible grid first; "
        "the output has the visible size (default: the pair must be registered)",
    )


def add_quality(p) -> argparse.Action:
    return p.add_argument("--quality", type=int, default=None, help="JPEG/WebP quality 1..100 (default: 95)")


def add_engine_args(p, inputs: bool = True) -> None:
    """--model/--device/--threads/--backend of the commands that open an Engine; with ``inputs`` also the
    reading and tiling options (--depth, --max-pixels, --tile-size) that :func:`open_engine` passes on."""
    add_model(p)
    add_device(p)
    add_threads(p)
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "pytorch", "native", "native-int8", "onnxruntime", "tensorrt"),
        help="auto (by model file type) | pytorch | native (.safetensors, fused C++ render on the CPU) | "
        "native-int8 (the same with int8 convolutions; needs int8 ranges in the checkpoint) | "
        "onnxruntime | tensorrt (default: auto)",
    )
    if not inputs:
        return
    from ..engine import DEFAULT_TILE
    from ..imageio import DEFAULT_MAX_PIXELS, DEPTH_MODES

    g = p.add_argument_group("inputs and limits")
    g.add_argument(
        "--depth",
        default="auto",
        choices=DEPTH_MODES,
        help="files with more than 8 bits per sample: auto (detect 10/12/14/16 bits), range (min..max), "
        "full (the container's range) (default: auto)",
    )
    g.add_argument(
        "--max-pixels",
        type=float,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more pixels, checked before decoding (default: {DEFAULT_MAX_PIXELS:.0e})",
    )
    g.add_argument(
        "--tile-size",
        type=int,
        default=DEFAULT_TILE,
        help=f"fuse images over 2 x tile-size^2 pixels in tiles of this size (default: {DEFAULT_TILE}; 0: never)",
    )


def engine_options(a) -> dict:
    """The reading and tiling options of the command (those added with ``inputs=True``)."""
    if not hasattr(a, "depth"):
        return {}
    return {
        "depth": a.depth,
        "max_pixels": int(a.max_pixels) if a.max_pixels else None,
        "tile_size": a.tile_size or None,
        **({"align": a.align} if getattr(a, "align", None) else {}),
    }


def open_engine(a: argparse.Namespace):
    """The Engine of a command's options (:func:`add_engine_args`)."""
    from ..engine import Engine

    return Engine(model_path(a.model), device=a.device, threads=a.threads, backend=a.backend, **engine_options(a))


class _DeprecatedAlias(argparse.Action):
    """An old spelling: stores into the new option's destination and warns once on stderr."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"{parser.prog}: warning: {option_string} is deprecated and goes in the next release; use {self.new}",
            file=sys.stderr,
        )
        if values is None:  # nargs="?" given without a value
            values = self.const
        setattr(namespace, self.dest, values)


def add_deprecated_alias(p, old: str, new: argparse.Action) -> argparse.Action:
    """``old`` (e.g. ``--out``) as a hidden alias of the option ``new``: same value, a deprecation warning."""
    return p.add_argument(
        old,
        dest=new.dest,
        action=_DeprecatedAlias,
        new="/".join(new.option_strings),
        nargs=new.nargs,
        const=new.const,
        type=new.type,
        choices=new.choices,
        metavar=new.metavar,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
