"""Ray connection and model shipping shared by the batch job and the HTTP service.

Ray is imported only inside these functions: ``import tokfuse_rt`` stays light.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Environment variables a worker process reads (fault injection for tests; see batch.FaultHook).
FORWARDED_ENV = ("TOKFUSE_FAULT_EXIT_AT", "TOKFUSE_FAULT_MARKER")


class RayConnectError(ConnectionError, RuntimeError):
    """No Ray cluster answers at the address given."""


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with a clear message, when nothing listens at ``HOST:PORT`` (or ``ray://HOST:PORT``);
    Ray itself keeps retrying an unreachable address for minutes."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"Ray address {address!r}: expected 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayConnectError(
            f"no Ray cluster answers at {address} ({e}); start one with 'ray start --head' or use --ray auto"
        ) from None


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"Ray is not installed; install the extra: pip install 'tokfuse_rt[ray]' ({e})") from None
    return ray


@contextlib.contextmanager
def connected(address: str | None = "auto", num_cpus: int | None = None):
    """Use Ray for the duration of the block.

    Already initialised in this process: used as is. ``address`` "auto" (or None): the running
    cluster if there is one (``RAY_ADDRESS``, or the latest ``ray start`` on this machine), else a
    local Ray instance started for this block (``num_cpus`` logical CPUs, default all cores) and
    shut down after it. "local": a new local instance in any case. Any other value: the address of
    a running cluster (``HOST:PORT`` or ``ray://HOST:PORT``); RayConnectError if nothing answers.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    addr = None if address in (None, "", "auto") else address
    if addr is not None and addr != "local":
        check_address(addr)
    kwargs = dict(logging_level=logging.WARNING, configure_logging=True)
    if addr is None:
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    ray.init(address=addr, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def cache_dir() -> Path:
    """Where derived model files are kept: ``$TOKFUSE_CACHE``, else ``$XDG_CACHE_HOME/tokfuse_rt``,
    else ``~/.cache/tokfuse_rt``."""
    env = os.environ.get("TOKFUSE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "tokfuse_rt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_onnx(ckpt=None, cache=None) -> Path:
    """ONNX export of checkpoint ``ckpt`` (default: the bundled model), made once with
    ``export.to_onnx`` and kept in ``cache`` (default ``cache_dir()/onnx``) under a name keyed by
    the checkpoint's SHA-256 and the torch version that exported it."""
    import torch

    from ..engine import DEFAULT_MODEL

    ckpt = Path(ckpt or DEFAULT_MODEL)
    if not ckpt.is_file():
        raise FileNotFoundError(f"model file not found: {ckpt}")
    key = hashlib.sha256(f"{_sha256(ckpt)} torch {torch.__version__}".encode()).hexdigest()[:16]
    cache = Path(cache) if cache is not None else cache_dir() / "onnx"
    out = cache / f"{ckpt.stem}-{key}.onnx"
    if out.is_file():
        return out
    from export.to_onnx import export_onnx

    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{out.stem}-{os.getpid()}.onnx"  # export_onnx itself writes tmp + rename
    try:
        export_onnx(ckpt, tmp, verify=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


@dataclass(frozen=True)
class ModelBlob:
    """A model file travelling to worker processes through the Ray object store, so that workers
    on other nodes need no shared filesystem. ``ref`` holds the file's bytes."""

    name: str
    sha256: str
    ref: object

    @classmethod
    def put(cls, path) -> ModelBlob:
        ray = import_ray()
        path = Path(path)
        data = path.read_bytes()
        return cls(path.name, hashlib.sha256(data).hexdigest(), ray.put(data))

    def local_path(self) -> Path:
        """The model as a file on this node (written once per node into the temp folder)."""
        d = Path(tempfile.gettempdir()) / "tokfuse_rt-models"
        out = d / f"{self.sha256[:16]}-{self.name}"
        if out.is_file() and out.stat().st_size > 0:
            return out
        ray = import_ray()
        data = ray.get(self.ref)
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise ValueError(f"model {self.name}: bytes received do not match their SHA-256")
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{out.name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out)
        return out


def resolve_model(model) -> Path:
    """The model file workers load: ``model`` as given, or the bundled default exported to ONNX."""
    if model is None:
        return default_onnx()
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a path or None, got {type(model).__name__}")
    p = Path(model)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p}")
    return p


def worker_env() -> dict:
    """Ray runtime_env forwarding the fault-injection variables set in this process (empty if none)."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    return {"env_vars": env} if env else {}
