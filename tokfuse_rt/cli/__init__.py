"""The ``tokfuse`` command line: :data:`COMMANDS` names each sub-command's module, imported only when that
sub-command runs (or shows its help), so ``tokfuse --help`` imports neither torch nor the trainer. The
options the commands share live in :mod:`tokfuse_rt.cli.options`."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

EPILOG = """examples:
  tokfuse fuse ir.png vis.png -o fused.png
  tokfuse fuse-dir --ir data/ir --vis data/vi -o out/
  tokfuse fuse-dir --ir data/ir --vis data/vi -o out/ --ray        # on Ray: local, or the running cluster
  tokfuse calibrate --ir ir.png --vis vis.png -o rig.json --preview check.png
  tokfuse fuse ir.png vis.png -o fused.png --align rig.json        # unregistered cameras of any sizes
  tokfuse info --model model.onnx
  tokfuse eval --model default --set ../shared/data/test/TNO -o tno.md
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


# name -> (module under tokfuse_rt.cli, one-line help); the module's register(sub, help) adds the parser
COMMANDS: dict[str, tuple[str, str]] = {
    "fuse": ("fuse", "fuse one pair of images"),
    "fuse-dir": ("fuse_dir", "fuse every pair of two folders"),
    "fuse-video": ("fuse_video", "fuse an infrared and a visible video into one H.264 MP4"),
    "calibrate": ("calibrate", "estimate a camera rig (infrared -> visible) for unregistered cameras"),
    "info": ("info", "show the model, backend and device"),
    "eval": ("eval", "fusion metrics (Markdown table + PNG figure) for fused images or an engine run"),
    "bench": ("bench", "time Engine.fuse on one pair for one or more models"),
    "export": ("export", "export a checkpoint to ONNX or a TensorRT engine"),
    "serve": ("serve", "HTTP fusion service on Ray Serve"),
    "train": ("train", "train a model (= python -m tokfuse_rt.train)"),
}


def _command_in(argv: list[str]) -> str | None:
    """The sub-command named on the command line (the first word that is not an option), if any."""
    return next((w for w in argv if not w.startswith("-")), None)


def build_parser(*load: str) -> argparse.ArgumentParser:
    """The ``tokfuse`` parser. The sub-commands in ``load`` get their full parsers (their modules are
    imported); the others are listed with their one-line help only."""
    from .. import __version__

    p = argparse.ArgumentParser(
        prog="tokfuse",
        description="Fuse infrared+visible or medical image pairs with a 1D-token fusion model (TokFuse).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tokfuse_rt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    unknown = sorted(set(load) - set(COMMANDS))
    if unknown:
        raise ValueError(f"unknown sub-command(s) {', '.join(unknown)}; known: {', '.join(COMMANDS)}")
    for name, (module, help) in COMMANDS.items():
        if name in load:
            importlib.import_module(f"{__name__}.{module}").register(sub, help)
        else:
            sub.add_parser(name, help=help, add_help=False)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(argv)
    p = build_parser(*([command] if command in COMMANDS else []))
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
        from ..runner import one_line

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
