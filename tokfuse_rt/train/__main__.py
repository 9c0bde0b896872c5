"""CLI entry: python -m tokfuse_rt.train (also ``tokfuse train``)."""

from __future__ import annotations

import argparse
import dataclasses

from .loop import PRESETS, TrainArgs, train

_HELP = {
    "tokenizer": "official TiTok tokenizer: a folder with config.json + model.safetensors, or a weights file "
    "(.safetensors/.bin). Stage I is skipped; stage II trains the fusion part with it frozen",
    "tokenizer_config": "config.json or preset (L-32, B-64, S-128) for a --tokenizer weights file without "
    "config.json beside it (default: recognised from its shapes)",
}


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(
        prog="python -m tokfuse_rt.train",
        description="Train a TokFuse model (stage I tokenizer, stage II fusion with STE; with --tokenizer, "
        "stage II only on an official TiTok tokenizer).",
    )
    p.add_argument("--data", required=True, help="training root with <set>/ir and <set>/vi folders (never test/)")
    from ..cli.options import add_deprecated_alias

    out = p.add_argument(
        "-o", "--output", dest="out", metavar="OUTPUT", default=None, help="output checkpoint (.safetensors); required"
    )
    add_deprecated_alias(p, "--out", out)
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=argparse.SUPPRESS,
        help="a named recipe other than the default (the bundled model's): "
        + "; ".join(f"{k}: {v['about']}" for k, v in sorted(PRESETS.items()))
        + ". Options given explicitly override it",
    )
    defaults = TrainArgs(data="", out="")
    for f in dataclasses.fields(TrainArgs):
        if f.name in ("data", "out"):
            continue
        val = getattr(defaults, f.name)
        # SUPPRESS: only what is given lands in the namespace, so a --preset can fill the rest (train_args)
        if isinstance(val, bool):
            p.add_argument(
                f"--{f.name.replace('_', '-')}", action="store_true", default=argparse.SUPPRESS, help=f"(default {val})"
            )
        else:
            p.add_argument(
                f"--{f.name.replace('_', '-')}",
                type=type(val),
                default=argparse.SUPPRESS,
                help=_HELP.get(f.name, f"(default {val})"),
            )
    return p


def train_args(a: argparse.Namespace) -> TrainArgs:
    """TrainArgs from parsed arguments: the defaults (the bundled model's recipe), then the fields of
    ``--preset``, then every option given explicitly. Attributes of ``a`` that are no TrainArgs field
    (a sub-command's) are ignored."""
    if getattr(a, "out", None) is None:
        raise ValueError("-o/--output is required: the checkpoint file to write (.safetensors)")
    names = {f.name for f in dataclasses.fields(TrainArgs)}
    given = {k: v for k, v in vars(a).items() if k in names}
    preset = {k: v for k, v in PRESETS.get(getattr(a, "preset", None), {}).items() if k != "about"}
    return TrainArgs(**(preset | given))


def run(a: argparse.Namespace) -> int:
    """Train from parsed arguments (see :func:`train_args`)."""
    train(train_args(a))
    return 0


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
