"""Build a TensorRT engine (``.plan``) from a TokFuse checkpoint.

    python -m export.to_trt CKPT -o model.plan [--fp16] [--int8 --calib DIR [--calib-pairs N]]
                            [--min-shape 1x16x16] [--opt-shape 1x480x640] [--max-shape 4x2048x2048]
                            [--workspace 4]

Steps: checkpoint -> ONNX (``export.to_onnx``; or pass an ``.onnx`` file as CKPT) -> a TensorRT
compatibility report (every op of the graph against TensorRT's ONNX operator list,
``export.trt_support``) -> the TensorRT builder (Python API, imported lazily) with one
optimisation profile over ``ir``/``vis`` [B, 1, H, W]; ``k`` (0-d int64, the STE token count) is an
ordinary execution input independent of the image shapes. Writes ``model.plan`` and
``model.plan.json`` (the model config the runtime needs: TensorRT plans carry no metadata).

Without TensorRT or a CUDA GPU it still writes the ONNX file and the compatibility report, then
exits with status 3 and one line on stderr saying so.

``--int8 --calib DIR``: explicit quantization. The ONNX step is ``export.to_onnx --int8`` (the render
half's convolutions as QDQ int8, scales calibrated on the pairs under DIR: the same pairs and ranges as
the ONNX Runtime int8 model; the token pathway float32), and the builder gets the INT8 flag, so TensorRT
runs those convolutions in int8 with the graph's own scales. No calibration cache is needed or written:
the scales travel in the graph (TensorRT 10 deprecates implicit, calibrator-based quantization). An
``.onnx`` CKPT must then be such an int8 graph. ``--fp16`` may be combined (the float parts in FP16).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Union

from tokfuse_rt.onnx_contract import INPUTS, MIN_SIDE, read_config, read_meta, read_precision, sidecar_path

DEFAULT_MIN, DEFAULT_OPT, DEFAULT_MAX = f"1x{MIN_SIDE}x{MIN_SIDE}", "1x480x640", "4x2048x2048"
EXIT_NO_TRT = 3
PathLike = Union[str, os.PathLike]
Shape = tuple[int, int, int, int]  # (B, 1, H, W)


class TrtBuildError(RuntimeError):
    """The ONNX parser or the TensorRT builder failed; the message carries every error reported."""


class TrtUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing on this machine."""


def parse_shape(text: str, what: str = "shape") -> tuple[int, int, int, int]:
    """'BxHxW' or 'Bx1xHxW' -> (B, 1, H, W)."""
    parts = re.split(r"[x,× ]+", str(text).strip().lower())
    try:
        nums = [int(p) for p in parts if p]
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected BxHxW, e.g. 1x480x640") from None
    if len(nums) == 4 and nums[1] == 1:
        nums = [nums[0], nums[2], nums[3]]
    if len(nums) != 3 or min(nums) < 1:
        raise ValueError(f"{what} {text!r}: expected BxHxW (or Bx1xHxW) with positive sizes, e.g. 1x480x640")
    b, h, w = nums
    return (b, 1, h, w)


def check_profile(mn: Shape, opt: Shape, mx: Shape, min_side: int = MIN_SIDE) -> None:
    for i, name in ((0, "batch"), (2, "height"), (3, "width")):
        if not mn[i] <= opt[i] <= mx[i]:
            raise ValueError(f"shape profile: {name} must satisfy min <= opt <= max, got {mn[i]}, {opt[i]}, {mx[i]}")
    if min(mn[2], mn[3]) < min_side:
        raise ValueError(f"shape profile: min height/width must be >= {min_side} (the model's smallest input)")


def tensorrt_available() -> tuple[bool, str]:
    """(True, version) when TensorRT imports and a CUDA GPU is visible, else (False, why)."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "TensorRT is not installed (pip install tensorrt; it needs an NVIDIA GPU)"
    except Exception as e:  # noqa: BLE001 - a broken install (missing libnvinfer, ...)
        return False, f"TensorRT failed to import ({type(e).__name__}: {e})"
    if not _cuda_available():
        return False, f"TensorRT {trt.__version__} is installed but no CUDA GPU is visible"
    return True, trt.__version__


def _cuda_available() -> bool:
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    try:
        from cuda import cudart  # cuda-python

        err, n = cudart.cudaGetDeviceCount()
        return int(err) == 0 and n > 0
    except Exception:  # noqa: BLE001 - no cuda-python or no driver: no GPU
        return False


def build_engine(
    onnx_path: PathLike,
    plan_path: PathLike,
    min_shape: Shape,
    opt_shape: Shape,
    max_shape: Shape,
    fp16: bool = False,
    workspace_gib: float = 4.0,
    verbose: bool = False,
    config: dict | None = None,
    int8: bool = False,
) -> dict:
    """Parse ``onnx_path`` and build ``plan_path``. Raises TrtUnavailable / TrtBuildError."""
    ok, why = tensorrt_available()
    if not ok:
        raise TrtUnavailable(why)
    import tensorrt as trt

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity, msg):
            level = int(severity)  # INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
            if level <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            if verbose or level <= int(trt.ILogger.Severity.WARNING):
                print(f"[TensorRT {getattr(severity, 'name', level)}] {msg}", file=sys.stderr)

    logger = _Logger()
    try:
        builder = trt.Builder(logger)
    except Exception as e:  # noqa: BLE001 - no driver / no device: pybind returns nullptr -> TypeError/RuntimeError
        raise TrtUnavailable(
            f"TensorRT could not create a builder ({type(e).__name__}: {e}) " + " | ".join(logger.errors)
        ) from None
    if builder is None:
        raise TrtUnavailable(
            "TensorRT could not create a builder (CUDA initialisation failed): " + " | ".join(logger.errors)
        )
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        msgs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TrtBuildError(
            f"TensorRT's ONNX parser rejected {onnx_path} ({len(msgs)} error(s)): "
            + " | ".join(msgs or logger.errors or ["no message"])
        )
    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise TrtBuildError(f"--fp16: TensorRT {trt.__version__} has no BuilderFlag.FP16; build without --fp16")
        if not getattr(builder, "platform_has_fast_fp16", True):
            print("[export.to_trt] warning: this GPU has no fast FP16; building anyway", file=sys.stderr)
        cfg.set_flag(trt.BuilderFlag.FP16)
        # keep the token pathway (attention, VQ argmax over the codebook, STE ranking) in FP32 so token
        # ids match the FP32 runtimes; FP16 only for the full-resolution convolutions that dominate.
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type != trt.LayerType.CONVOLUTION:
                try:
                    if layer.num_outputs and layer.get_output_type(0) in (trt.float32, trt.float16):
                        layer.precision = trt.float32
                except Exception:  # noqa: BLE001 - a layer without a settable precision keeps the builder's choice
                    pass
        if hasattr(trt.BuilderFlag, "PREFER_PRECISION_CONSTRAINTS"):
            cfg.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    if int8:  # explicit quantization: the QDQ nodes of the graph carry the scales
        if not hasattr(trt.BuilderFlag, "INT8"):
            raise TrtBuildError(f"--int8: TensorRT {trt.__version__} has no BuilderFlag.INT8")
        cfg.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    names = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        names.append(t.name)
        if t.name in ("ir", "vis"):  # the image inputs; k is a scalar execution input
            profile.set_shape(t.name, min_shape, opt_shape, max_shape)
        elif t.is_shape_tensor:  # k exported as a shape tensor: give it its value range
            k_max = int((config or {}).get("num_tokens", 64))
            k_def = int((config or {}).get("default_k", 4))
            n = max(1, len(t.shape))
            profile.set_shape_input(t.name, [0] * n, [k_def] * n, [k_max] * n)
    if not set(INPUTS) <= set(names):
        raise TrtBuildError(f"{onnx_path}: network inputs {names} are not {INPUTS}; export with export.to_onnx")
    cfg.add_optimization_profile(profile)
    t0 = time.perf_counter()
    blob = builder.build_serialized_network(network, cfg)
    if blob is None:
        raise TrtBuildError("TensorRT failed to build the engine: " + " | ".join(logger.errors or ["no message"]))
    plan_path = Path(plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    from tokfuse_rt.outputs import atomic_write

    data = bytes(blob)
    atomic_write(plan_path, lambda f: f.write(data))  # exclusive temporary, no link followed
    side = sidecar_path(plan_path)
    _write_text(
        side,
        json.dumps(
            {
                "format": "tokfuse_rt.trt",
                "tensorrt": trt.__version__,
                "fp16": bool(fp16),
                "int8": bool(int8),
                "profile": {"min": list(min_shape), "opt": list(opt_shape), "max": list(max_shape)},
                "onnx": str(onnx_path),
                "config": config or {},
            },
            indent=2,
        ),
    )
    return {
        "plan": str(plan_path),
        "sidecar": str(side),
        "tensorrt": trt.__version__,
        "build_s": round(time.perf_counter() - t0, 1),
        "bytes": plan_path.stat().st_size,
    }


def add_options(p) -> list[argparse.Action]:
    """The options of TensorRT export beyond CKPT, -o and --opset, added to parser or group ``p`` (also by
    ``tokfuse export``); returns their argparse actions."""
    return [
        p.add_argument("--onnx", default=None, help="where to write the intermediate ONNX (default OUTPUT with .onnx)"),
        p.add_argument(
            "--report",
            default=None,
            help="TensorRT compatibility report (default OUTPUT with .trt_report.md, and .json beside it)",
        ),
        p.add_argument("--fp16", action="store_true", help="allow FP16 kernels for the convolutions"),
        p.add_argument("--min-shape", default=None, help=f"smallest BxHxW of the profile (default {DEFAULT_MIN})"),
        p.add_argument(
            "--opt-shape",
            default=None,
            help=f"BxHxW TensorRT tunes for (default {DEFAULT_OPT}, clamped into the profile)",
        ),
        p.add_argument("--max-shape", default=None, help=f"largest BxHxW of the profile (default {DEFAULT_MAX})"),
        p.add_argument("--workspace", type=float, default=4.0, help="builder workspace in GiB (default 4)"),
        p.add_argument("--verbose", action="store_true", help="print TensorRT's log"),
    ]


def build_parser() -> argparse.ArgumentParser:
    from . import exporter_parser

    p = exporter_parser(
        "python -m export.to_trt",
        "Build a TensorRT engine from a TokFuse checkpoint (via ONNX).",
        "TokFuse checkpoint (.safetensors) or an ONNX file from export.to_onnx",
        "engine file (.plan or .engine; default CKPT with .plan)",
        "ONNX opset (default: export.to_onnx's)",
        add_options,
    )
    # ONNX export's int8 options (``tokfuse export`` has them from its ONNX group)
    p.add_argument(
        "--int8",
        action="store_true",
        help="int8 convolutions of the render half (explicit QDQ quantization; needs --calib unless CKPT is an "
        "int8 .onnx)",
    )
    p.add_argument("--calib", metavar="DIR", default=None, help="--int8: calibration pairs, a train/ folder of sets")
    p.add_argument("--calib-pairs", metavar="N", type=int, default=None, help="--int8: calibration pairs (default 24)")
    return p


def run(a: argparse.Namespace, prog: str = "export.to_trt") -> int:
    """Build as the parsed options ``a`` say (``ckpt``, ``output``, ``opset`` and those of
    :func:`add_options`): ONNX, the compatibility report, the engine; the exit status (EXIT_NO_TRT
    without TensorRT or a GPU)."""
    from .to_onnx import DEFAULT_OPSET, ExportError, export_onnx
    from .trt_support import check_model, write_report

    src = Path(a.ckpt)
    out = Path(a.output) if a.output else src.with_suffix(".plan")
    if out.suffix.lower() not in (".plan", ".engine"):
        print(f"{prog}: error: output {out} must end in .plan or .engine", file=sys.stderr)
        return 2
    try:
        mn = parse_shape(a.min_shape or DEFAULT_MIN, "--min-shape")
        mx = parse_shape(a.max_shape or DEFAULT_MAX, "--max-shape")
        if a.opt_shape:
            opt = parse_shape(a.opt_shape, "--opt-shape")
        else:  # the default optimum, kept inside the profile the user gave
            opt = tuple(min(max(d, lo), hi) for d, lo, hi in zip(parse_shape(DEFAULT_OPT), mn, mx))
        shapes = [mn, opt, mx]
        check_profile(*shapes)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    report_path = Path(a.report) if a.report else out.with_name(out.stem + ".trt_report.md")
    # 1. ONNX
    config = {}
    exported = False
    int8 = bool(getattr(a, "int8", False))
    calib, calib_pairs = getattr(a, "calib", None), getattr(a, "calib_pairs", None)
    try:
        if src.suffix.lower() == ".onnx":
            onnx_path = src
            if not src.is_file():
                raise FileNotFoundError(f"ONNX file not found: {src}")
            if int8 and onnx_precision(onnx_path) != "int8":
                raise ValueError(
                    f"--int8: {src} is not an int8 graph; export it with export.to_onnx --int8 --calib DIR"
                )
        else:
            if int8 and calib is None:
                raise ValueError("--int8 needs --calib DIR: a folder of train/ pairs to calibrate the int8 ranges on")
            onnx_path = Path(a.onnx) if a.onnx else out.with_suffix(".onnx")
            s = export_onnx(
                src,
                onnx_path,
                opset=a.opset or DEFAULT_OPSET,
                verify=False,
                halves=False,
                int8=int8,
                calib=calib if int8 else None,
                calib_pairs=calib_pairs if int8 else None,
                int8_tensorrt=int8,
            )
            exported = True
            print(f"wrote {onnx_path} (opset {s['opset']}, {len(s['op_types'])} op types)")
        config = onnx_config(onnx_path)
    except (ExportError, ValueError, FileNotFoundError, ImportError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    # 2. compatibility report (always)
    rep = check_model(onnx_path)
    md, js = write_report(rep, report_path)
    print(f"wrote {md} and {js.name}: {rep.summary()}")
    # 3. TensorRT
    try:
        info = build_engine(
            onnx_path,
            out,
            *shapes,
            fp16=a.fp16,
            workspace_gib=a.workspace,
            verbose=a.verbose,
            config=config,
            int8=int8,
        )
    except TrtUnavailable as e:
        compat = "graph compatible" if rep.ok else "graph NOT compatible: " + ", ".join(o.op for o in rep.problems)
        print(
            f"{prog}: error: {e}; no engine built; {'wrote' if exported else 'checked'} {onnx_path} and wrote "
            f"the TensorRT {rep.trt_version} compatibility report {md} ({compat})",
            file=sys.stderr,
        )
        return EXIT_NO_TRT
    except TrtBuildError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - anything else TensorRT raises: one line, not a traceback
        print(f"{prog}: error: TensorRT build failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {info['plan']} ({info['bytes'] / 1e6:.1f} MB, TensorRT {info['tensorrt']}, "
        f"built in {info['build_s']} s) and {Path(info['sidecar']).name}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def onnx_config(onnx_path: PathLike) -> dict:
    """The model config in the metadata of a tokfuse_rt ONNX file ({} when it has none)."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    return read_config(read_meta({p.key: p.value for p in m.metadata_props})) or {}


def onnx_precision(onnx_path: PathLike) -> str:
    """ "int8" for a graph written by ``export.to_onnx --int8`` (its ``quant`` metadata), else "float32"."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    return read_precision(read_meta({p.key: p.value for p in m.metadata_props}))


if __name__ == "__main__":
    raise SystemExit(main())


def _write_text(path, text: str) -> None:
    from tokfuse_rt.outputs import atomic_write

    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
