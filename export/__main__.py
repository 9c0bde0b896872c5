"""python -m export {onnx|trt|native|check} ...  ->  export.to_onnx / to_trt / to_native / trt_support."""

import sys

USAGE = "usage: python -m export {onnx,trt,native,check} ARGS...   (e.g. python -m export onnx CKPT -o model.onnx)"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "onnx":
        from .to_onnx import main as m
    elif cmd in ("trt", "tensorrt"):
        from .to_trt import main as m
    elif cmd == "native":
        from .to_native import main as m
    elif cmd == "check":
        from .trt_support import main as m
    else:
        print(f"python -m export: unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
        return 2
    return m(rest)


if __name__ == "__main__":
    raise SystemExit(main())
