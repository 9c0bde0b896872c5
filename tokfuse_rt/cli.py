"""The ``tokfuse`` command line: fuse, fuse-dir, info and train here; eval, export, bench, serve and fuse-video
in their own modules (``tokfuse_rt.cli_<name>``), registered when importable."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

EPILOG = """examples:
  tokfuse fuse ir.png vis.png -o fused.png
  tokfuse fuse-dir --ir data/ir --vis data/vi -o out/
  tokfuse fuse-dir --ir data/ir --vis data/vi -o out/ --ray        # on Ray: local, or the running cluster
  tokfuse calibrate --ir ir.png --vis vis.png -o rig.json --preview check.png
  tokfuse fuse ir.png vis.png -o fused.png --align rig.json        # unregistered cameras of any sizes
  tokfuse info --model model.onnx
  tokfuse eval --engine default --set ../shared/data/test/TNO --out tno.md
  tokfuse export onnx tokfuse_rt/assets/default.safetensors -o model.onnx
  tokfuse bench --model default --model model.onnx --size 640x480
  tokfuse train --data ../shared/data/train -o model.safetensors

exit status:
  0    done (fuse-dir: every pair fused or already done)
  1    an error, reported in one line (bad argument, input or model); fuse-dir: some pairs failed or
       had an ambiguous stem (listed in the summary and the JSON report)
  2    command-line usage error
  3    export trt: TensorRT or a GPU is missing (the ONNX file and the compatibility report are written)
  130  interrupted (Ctrl-C); fuse-dir still writes its report, re-running resumes
  143  terminated (SIGTERM): the same clean-up as Ctrl-C (fuse-dir report, fuse-video temporary removed)
"""


def add_model_args(p: argparse.ArgumentParser, inputs: bool = True) -> None:
    """--model/--device/--threads of the commands that open an Engine; with ``inputs`` also the reading and
    tiling options (--depth, --max-pixels, --tile-size) that :func:`open_engine` passes on."""
    p.add_argument(
        "--model",
        "-m",
        default=None,
        help="model file: .safetensors (PyTorch), .onnx (ONNX Runtime), .plan (TensorRT); default: bundled model",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the backend (default: library default)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "pytorch", "native", "onnxruntime", "tensorrt"),
        help="auto (by model file type) | pytorch | native (.safetensors, fused C++ render on the CPU) | "
        "onnxruntime | tensorrt (default: auto)",
    )
    if not inputs:
        return
    from .engine import DEFAULT_TILE
    from .imageio import DEFAULT_MAX_PIXELS, DEPTH_MODES

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


def add_align(p: argparse.ArgumentParser) -> None:
    """--align RIG: a camera rig file (``tokfuse calibrate``) for unregistered infrared and visible cameras."""
    p.add_argument(
        "--align",
        default=None,
        metavar="RIG",
        help="camera rig JSON (tokfuse calibrate): warp the infrared image onto the visible grid first; "
        "the output has the visible size (default: the pair must be registered)",
    )


def _add_write_args(p):
    p.add_argument("--quality", type=int, default=None, help="JPEG/WebP quality 1..100 (default: 95)")


def add_k(p: argparse.ArgumentParser) -> None:
    """--k, the number of tokens STE edits."""
    p.add_argument("--k", type=int, default=None, help="tokens edited by STE, 0..K (default: the model's default)")


def _engine_options(a) -> dict:
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
    """The Engine of a command's options (:func:`add_model_args`)."""
    from .engine import Engine

    return Engine(a.model, device=a.device, threads=a.threads, backend=a.backend, **_engine_options(a))


def cmd_fuse(a) -> int:
    from .outputs import check_not_input, check_output_path, check_quality, save_image

    check_output_path(a.output)  # before any work
    check_not_input(a.output, "output", {"ir": a.ir, "vis": a.vis})
    check_quality(a.quality)
    with open_engine(a) as eng:
        img = eng.fuse(a.ir, a.vis, k=a.k)
    out = save_image(img, a.output, quality=a.quality)
    print(f"wrote {out} ({img.shape[1]}x{img.shape[0]}, {'RGB' if img.ndim == 3 else 'gray'})")
    return 0


def cmd_fuse_dir(a) -> int:
    from .engine import REPORT_NAME
    from .outputs import check_output_dir, check_output_ext, check_quality, check_report_path
    from .pairing import image_files

    check_output_ext(a.ext)  # everything the user got wrong, before the model loads
    check_quality(a.quality)
    image_files(a.ir, "ir"), image_files(a.vis, "vis")
    check_output_dir(a.output, a.ir, a.vis)
    report = Path(a.report) if a.report else Path(a.output) / REPORT_NAME
    check_report_path(report, a.ir, a.vis)
    if a.ray is not None:
        from .distributed.cli import fuse_dir_ray_args

        rep = fuse_dir_ray_args(a, report, _engine_options(a))
    else:
        with open_engine(a) as eng:
            rep = eng.fuse_dir(
                a.ir,
                a.vis,
                a.output,
                k=a.k,
                progress=not a.quiet,
                ext=a.ext,
                overwrite=a.overwrite,
                quality=a.quality,
                report_path=report,
            )
    print(rep.summary())
    print(f"outputs in {Path(a.output).resolve()}")
    print(f"report: {report.resolve()}")
    return 0 if not (rep.failed or rep.ambiguous) else 1


def cmd_info(a) -> int:
    with open_engine(a) as eng:
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
    from .train.__main__ import run

    return run(a)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tokfuse",
        description="Fuse infrared+visible or medical image pairs with a 1D-token fusion model (TokFuse).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"tokfuse_rt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    f = sub.add_parser("fuse", help="fuse one pair of images", description="Fuse one registered pair of images.")
    f.add_argument("ir", help="infrared (or MRI) image file")
    f.add_argument("vis", help="visible (or CT/PET/SPECT) image file; a colour image gives the output its colour")
    f.add_argument(
        "-o", "--output", required=True, help="output image file: .png, .jpg, .webp, .tif or .bmp (PNG recommended)"
    )
    add_k(f)
    _add_write_args(f)
    add_align(f)
    add_model_args(f)
    f.set_defaults(func=cmd_fuse)

    d = sub.add_parser(
        "fuse-dir",
        help="fuse every pair of two folders",
        description="Fuse the pairs of two folders (same file name, else same stem; ambiguous stems are reported "
        "and not fused). Bad pairs are reported and skipped; outputs are written atomically; a re-run "
        "skips pairs whose output exists and decodes. A summary is printed and a JSON report written.",
    )
    d.add_argument("--ir", required=True, help="folder of infrared (or MRI) images")
    d.add_argument("--vis", required=True, help="folder of visible (or second-modality) images")
    d.add_argument("-o", "--output", required=True, help="output folder (not inside an input folder)")
    d.add_argument("--ext", default=".png", help="output file extension: .png, .jpg, .webp, .tif, .bmp (default .png)")
    d.add_argument("--overwrite", action="store_true", help="fuse again pairs whose output already exists")
    d.add_argument("--report", default=None, help="JSON report path (default: OUTPUT/tokfuse-report.json)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_k(d)
    _add_write_args(d)
    add_align(d)
    add_model_args(d)
    from .distributed.cli import add_ray_args

    add_ray_args(d)
    d.set_defaults(func=cmd_fuse_dir)

    i = sub.add_parser("info", help="show the model, backend and device", description="Show what an engine runs.")
    i.add_argument("--json", action="store_true", help="print JSON")
    add_model_args(i, inputs=False)
    i.set_defaults(func=cmd_info)

    from .train.__main__ import build_parser as train_parser

    t = sub.add_parser(
        "train",
        help="train a model (= python -m tokfuse_rt.train)",
        description="Train a TokFuse model (stage I tokenizer, stage II fusion with STE); the same "
        "options as python -m tokfuse_rt.train.",
    )
    train_parser(t)
    t.set_defaults(func=cmd_train)

    for extra in ("eval", "export", "bench", "serve", "video", "calibrate"):
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
    a = p.parse_args(argv)  # ``train`` has the trainer's own options on its sub-parser
    if not getattr(a, "func", None):
        p.print_help()
        return 2

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"tokfuse {a.command}: warning: {message}", file=file or sys.stderr)

    shown, warnings.showwarning = warnings.showwarning, one_line_warning
    old_term = _on_sigterm()
    try:
        return a.func(a)
    except Terminated:
        print(f"tokfuse {a.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"tokfuse {a.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, RuntimeError, MemoryError) as e:
        from .engine import one_line

        print(
            f"tokfuse {a.command}: error: {one_line(e) if not isinstance(e, OSError) else _os_error(e)}",
            file=sys.stderr,
        )
        return 1
    finally:
        warnings.showwarning = shown
        if old_term is not None:
            import signal

            signal.signal(signal.SIGTERM, old_term)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so every command cleans up the same way (fuse-dir
    writes its report, fuse-video removes its temporary); the command exits with 143."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _on_sigterm():
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only); returns the old
    handler (None when not installed)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _os_error(e: OSError) -> str:
    """FileNotFoundError keeps its message (it names the input); other OS errors say what failed where."""
    if isinstance(e, FileNotFoundError) and not e.filename:
        return str(e)
    return f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}"


if __name__ == "__main__":
    raise SystemExit(main())
