"""``tokfuse serve``: the HTTP fusion service on Ray Serve (see tokfuse_rt.serving.serve)."""

from __future__ import annotations

import sys

from .options import add_model, add_threads, model_path


def port_number(text: str) -> int:
    """An argparse type: a TCP port 1..65535 (a clear usage error otherwise)."""
    import argparse

    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer in 1..65535, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {port}")
    return port


def register(sub, help: str) -> None:
    s = sub.add_parser(
        "serve",
        help=help,
        description="Serve a web page at GET / (try fusion in a browser), POST /fuse (multipart ir, vis, "
        "optional k -> PNG), POST /metrics (multipart ir, vis, fused -> quality metrics as JSON), GET /healthz "
        "and GET /info on Ray Serve. With the environment variable TOKFUSE_SERVE_TOKEN set, /fuse, /metrics "
        "and /info need 'Authorization: Bearer <token>'.",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=port_number, default=8000, help="port, 1..65535 (default 8000)")
    add_model(s, help="model file (.onnx recommended) or 'default': the bundled model exported to ONNX once (default)")
    s.add_argument("--replicas", type=int, default=1, help="replicas, one engine each (default 1)")
    add_threads(s, default=1, help="backend threads per replica (default 1)")
    s.add_argument("--max-batch-size", type=int, default=8, help="most requests fused together (default 8)")
    s.add_argument(
        "--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests (default 5 ms)"
    )
    s.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body in MiB (default 32)")
    s.add_argument(
        "--max-pixels", type=float, default=16e6, help="refuse images with more pixels, per image (default: 1.6e+07)"
    )
    s.add_argument(
        "--read-timeout-s",
        type=float,
        default=10.0,
        help="a request body with no data for this long gets 408; the whole body must arrive within 6x this "
        "(default 10)",
    )
    s.add_argument(
        "--max-uploads",
        type=int,
        default=128,
        help="requests reading a body at once, per replica; 503 beyond (default 128)",
    )
    s.add_argument(
        "--ray",
        default="auto",
        metavar="auto|ADDRESS",
        help="Ray cluster: 'auto' joins the running one or starts a local instance (default), "
        "or a cluster address HOST:PORT",
    )
    s.add_argument(
        "--align",
        default=None,
        metavar="RIG",
        help="camera rig JSON (tokfuse calibrate) applied to every request; a request's 'rig' part wins",
    )
    s.set_defaults(func=cmd_serve)


def cmd_serve(a) -> int:
    from ..rig import as_rig

    rig = as_rig(a.align)  # a bad rig file fails before Ray starts
    from ..serving.serve import Limits, serve_forever

    body = int(a.max_body_mb * 1024 * 1024)
    limits = Limits(
        max_body_bytes=body,
        max_pixels=int(a.max_pixels),
        read_timeout_s=a.read_timeout_s,
        body_timeout_s=6 * a.read_timeout_s,
        max_uploads=a.max_uploads,
        max_upload_bytes=max(4 * body, Limits.max_upload_bytes),
    )
    serve_forever(
        model_path(a.model),
        host=a.host,
        port=a.port,
        address=a.ray,
        replicas=a.replicas,
        threads=a.threads,
        max_batch_size=a.max_batch_size,
        batch_wait_s=a.batch_wait_ms / 1000.0,
        limits=limits,
        align=rig,
        ready=lambda msg: print(msg, flush=True, file=sys.stdout),
    )
    return 0
