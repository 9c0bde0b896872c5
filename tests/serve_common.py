"""``tokfuse serve`` started as a user runs it, for the tests over HTTP (tests/serving/test_serve.py) and in a
browser (tests/serving/test_web.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tokfuse_serve(model, args=(), token: str | None = None, ray_address: str | None = None, start_s: float = 180):
    """Run ``tokfuse serve --port <free> --model <model> <args>`` in a subprocess (the token, if any,
    from the environment variable a user sets), joined to the Ray cluster at ``ray_address`` (None: its
    own); yield its URL once it says it is ready. ``model`` None: the bundled one. At the end SIGTERM
    stops it; it must exit with status 0."""
    port = free_port()
    cmd = [sys.executable, "-m", "tokfuse_rt", "serve", "--port", str(port), *args]
    if model is not None:
        cmd += ["--model", str(model)]
    if ray_address:
        cmd += ["--ray", ray_address]
    env = {k: v for k, v in os.environ.items() if k != "TOKFUSE_SERVE_TOKEN"}
    if token:
        env["TOKFUSE_SERVE_TOKEN"] = token
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines, url = [], None
        t0 = time.monotonic()
        while time.monotonic() - t0 < start_s and url is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if line.startswith("tokfuse serve: http://"):
                url = line.split()[2]
        assert url == f"http://127.0.0.1:{port}", "".join(lines)
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining its output
        yield url
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
