"""The ``tokfuse`` command line: fuse, fuse-dir, info, train (eval, export and bench join with their issues)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EPILOG = """examples:
  tokfuse fuse ir.png vis.png -o fused.png
  tokfuse fuse-dir --ir data/ir --vis data/vi -o out/
  tokfuse info --model model.onnx
  tokfuse train --data ../shared/data/train -o model.safetensors
"""


def _add_model_args(p):
    p.add_argument("--model", "-m", default=None,
                   help="model file: .safetensors (PyTorch), .onnx (ONNX Runtime), .plan (TensorRT); default: bundled model")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the backend (default: library default)")


def _add_k(p):
    p.add_argument("--k", type=int, default=None, help="tokens edited by STE, 0..K (default: the model's default)")


def _engine(a):
    from .engine import Engine

    return Engine(a.model, device=a.device, threads=a.threads)


def cmd_fuse(a) -> int:
    from .imageio import save_image

    with _engine(a) as eng:
        img = eng.fuse(a.ir, a.vis, k=a.k)
    out = save_image(img, a.output)
    print(f"wrote {out} ({img.shape[1]}x{img.shape[0]}, {'RGB' if img.ndim == 3 else 'gray'})")
    return 0


def cmd_fuse_dir(a) -> int:
    with _engine(a) as eng:
        rep = eng.fuse_dir(a.ir, a.vis, a.output, k=a.k, progress=not a.quiet, ext=a.ext)
    print(rep.summary())
    print(f"outputs in {Path(a.output).resolve()}")
    return 0 if not rep.failed else 1


def cmd_info(a) -> int:
    with _engine(a) as eng:
        info = eng.info()
    if a.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        for key, val in info.items():
            if isinstance(val, dict):
                val = ", ".join(f"{k2}={v2}" for k2, v2 in val.items())
            print(f"{key:>9}: {val}")
    return 0


def cmd_train(a) -> int:
    from .train.__main__ import main as train_main

    return train_main(a.train_args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tokfuse",
        description="Fuse infrared+visible or medical image pairs with a 1D-token fusion model (TokFuse).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__

    p.add_argument("--version", action="version", version=f"tokfuse_rt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    f = sub.add_parser("fuse", help="fuse one pair of images", description="Fuse one registered pair of images.")
    f.add_argument("ir", help="infrared (or MRI) image file")
    f.add_argument("vis", help="visible (or CT/PET/SPECT) image file; a colour image gives the output its colour")
    f.add_argument("-o", "--output", required=True, help="output image file (PNG recommended)")
    _add_k(f)
    _add_model_args(f)
    f.set_defaults(func=cmd_fuse)

    d = sub.add_parser("fuse-dir", help="fuse every pair of two folders",
                       description="Fuse pairs with the same file name in two folders; bad pairs are reported and skipped.")
    d.add_argument("--ir", required=True, help="folder of infrared (or MRI) images")
    d.add_argument("--vis", required=True, help="folder of visible (or second-modality) images")
    d.add_argument("-o", "--output", required=True, help="output folder")
    d.add_argument("--ext", default=".png", help="output file extension (default .png)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_k(d)
    _add_model_args(d)
    d.set_defaults(func=cmd_fuse_dir)

    i = sub.add_parser("info", help="show the model, backend and device", description="Show what an engine runs.")
    i.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(i)
    i.set_defaults(func=cmd_info)

    t = sub.add_parser("train", help="train a model (python -m tokfuse_rt.train)", add_help=False,
                       description="Train a TokFuse model; all arguments go to python -m tokfuse_rt.train.")
    t.add_argument("train_args", nargs=argparse.REMAINDER)
    t.set_defaults(func=cmd_train)

    for extra in ("eval", "export", "bench", "video"):
        _register_optional(sub, extra)
    return p


def _register_optional(sub, name: str) -> None:
    """Sub-commands living in their own modules (``tokfuse_rt.cli_<name>``) register when present."""
    import importlib

    try:
        mod = importlib.import_module(f"tokfuse_rt.cli_{name}")
    except ModuleNotFoundError:
        return
    mod.register(sub)


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if not getattr(a, "func", None):
        p.print_help()
        return 2
    try:
        return a.func(a)
    except (ValueError, TypeError, FileNotFoundError, ImportError, RuntimeError) as e:
        print(f"tokfuse {a.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
