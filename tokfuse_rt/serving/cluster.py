"""Ray connection and model shipping shared by the batch job and the HTTP service.

Ray is imported only inside these functions: ``import tokfuse_rt`` stays light.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path


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


#: Ray's switch (read when ``ray`` is imported, and by every Ray process it starts) that makes a local
#: instance use the loopback address as its node address: its servers then listen on 127.0.0.1 only.
_RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def is_loopback(host: str | None) -> bool:
    import ipaddress

    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


def _starts_local(ray, addr) -> bool:
    """True when ``ray.init(address=addr)`` would start a new local instance (no cluster to join)."""
    if addr == "local":
        return True
    if addr is not None:
        return False
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(None) is None
    except Exception:  # noqa: BLE001 - cannot tell: leave Ray's own choice alone
        return False


@contextlib.contextmanager
def _loopback_ray(ray):
    """Start a local Ray instance whose processes listen on 127.0.0.1 only (GCS, raylet, agents, metrics)."""
    from ray._private import ray_constants

    old_env, old_flag = os.environ.get(_RAY_LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_RAY_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(_RAY_LOOPBACK_ENV, None)
        else:
            os.environ[_RAY_LOOPBACK_ENV] = old_env


@contextlib.contextmanager
def connected(address: str | None = "auto", num_cpus: int | None = None, host: str | None = None):
    """Use Ray for the duration of the block.

    Already initialised in this process: used as is. ``address`` "auto" (or None): the running
    cluster if there is one (``RAY_ADDRESS``, or the latest ``ray start`` on this machine), else a
    local Ray instance started for this block (``num_cpus`` logical CPUs, default all cores) and
    shut down after it. "local": a new local instance in any case. Any other value: the address of
    a running cluster (``HOST:PORT`` or ``ray://HOST:PORT``); RayConnectError if nothing answers.
    ``host``: the address the caller serves on; when it is a loopback address, a local instance started
    here listens on 127.0.0.1 only (a joined cluster is as it was started).
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
    loopback = host is not None and is_loopback(host) and _starts_local(ray, addr)
    with _loopback_ray(ray) if loopback else contextlib.nullcontext():
        if loopback:
            addr = "local"
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
    from ..onnx_contract import half_paths

    ckpt = Path(ckpt or DEFAULT_MODEL)
    if not ckpt.is_file():
        raise FileNotFoundError(f"model file not found: {ckpt}")
    key = hashlib.sha256(f"{_sha256(ckpt)} torch {torch.__version__}".encode()).hexdigest()[:16]
    cache = Path(cache) if cache is not None else cache_dir() / "onnx"
    out = cache / f"{ckpt.stem}-{key}.onnx"
    if out.is_file() and all(p.is_file() for p in half_paths(out).values()):
        return out
    from export.to_onnx import export_onnx

    cache.mkdir(parents=True, exist_ok=True)
    # export_onnx writes the halves, then the model, each through an exclusive temporary and a rename:
    # a complete model file under ``out`` always has its halves beside it; nothing else is left behind
    export_onnx(ckpt, out, verify=False)
    return out


def private_dir(*parts: str) -> Path:
    """``<temp>/tokfuse_rt-<uid>/<parts>``: a folder of this user only (mode 0700). ValueError if the
    folder, or its parent, is a link, is owned by another user or is open to others (a shared temp
    folder is writable by everyone: nothing found there is trusted otherwise)."""
    base = Path(tempfile.gettempdir()) / f"tokfuse_rt-{os.getuid()}"
    d = base
    for part in ("", *parts):
        d = d / part if part else d
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise ValueError(
                f"{d} is not a private folder of this user (a link, another owner, or open to others); remove it"
            )
    return d


def _put_file(ray, path: Path) -> tuple:
    data = path.read_bytes()
    return path.name, hashlib.sha256(data).hexdigest(), ray.put(data)


@dataclass(frozen=True)
class ModelBlob:
    """A model file travelling to worker processes through the Ray object store, so that workers
    on other nodes need no shared filesystem. ``ref`` holds the file's bytes; ``companions`` the
    (name, sha256, ref) of the model's token/render halves when it has them (so workers can tile)."""

    name: str
    sha256: str
    ref: object
    companions: tuple = ()

    @classmethod
    def put(cls, path) -> ModelBlob:
        from ..onnx_contract import half_paths

        ray = import_ray()
        path = Path(path)
        halves = [p for p in half_paths(path).values() if p.is_file()] if path.suffix == ".onnx" else []
        return cls(*_put_file(ray, path), tuple(_put_file(ray, p) for p in halves))

    def local_path(self) -> Path:
        """The model (and its halves) as files on this node, in a private folder of this user keyed by the
        model's SHA-256. A file already there is used only when its bytes have the SHA-256 shipped;
        otherwise (missing, planted, tampered with) it is written again from the object store."""
        from ..outputs import atomic_write

        d = private_dir("models", self.sha256[:32])
        ray = None
        for name, sha, ref in ((self.name, self.sha256, self.ref), *self.companions):
            out = d / name
            if _is_regular(out) and _sha256(out) == sha:
                continue
            ray = ray or import_ray()
            data = ray.get(ref)
            if hashlib.sha256(data).hexdigest() != sha:
                raise ValueError(f"model {name}: bytes received do not match their SHA-256")
            atomic_write(out, lambda f, data=data: f.write(data))
        return d / self.name


def _is_regular(p: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(p).st_mode)
    except OSError:
        return False


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
