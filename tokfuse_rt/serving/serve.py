"""HTTP fusion service on Ray Serve.

    tokfuse serve [--host 127.0.0.1] [--port 8000] [--model PATH] [--replicas N]

    POST /fuse    multipart parts ``ir``, ``vis`` (image files), optional ``k`` and ``rig`` -> the fused PNG
    POST /metrics multipart parts ``ir``, ``vis``, ``fused`` and optional ``convention`` -> the quality
                  metrics of ``tokfuse_rt.metrics`` as JSON
    GET  /healthz -> {"status": "ok"}
    GET  /info    -> model, backend, limits, batching
    GET  /        -> the web page (tokfuse_rt/web), GET /samples/<pair>/<ir|vis>.png its sample pair

Each replica holds one ``Engine`` (ONNX Runtime by default: the bundled model exported once with
``export.to_onnx``). Requests are batched dynamically (``serve.batch``): concurrent requests reach
``Engine.fuse_batch`` together and pairs of the same size share a backend call. The body size and the
pixels of each image are limited (checked before decoding). With a bearer token (the environment
variable ``TOKFUSE_SERVE_TOKEN`` when the service starts), ``/fuse`` and ``/info`` need the header
``Authorization: Bearer <token>`` (and so does ``/metrics``; the page, its samples and ``/healthz`` do not);
replicas only see its SHA-256. Every bad request gets a 4xx with a JSON body ``{"error": reason}``.
Unregistered cameras: a deployment-wide camera rig (``align``, see ``tokfuse_rt.rig``) and/or a
per-request ``rig`` part (the rig file's JSON) warp the infrared image onto the visible grid; the
request's rig wins.

This module imports Ray at import time: import it only to serve.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os
import time
from dataclasses import asdict, dataclass

from ray import serve

from ..engine import MIN_PIXELS
from .cluster import ModelBlob, connected, resolve_model

TOKEN_ENV = "TOKFUSE_SERVE_TOKEN"
APP_NAME = "tokfuse"
DEPLOYMENT = "TokFuseService"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 32 * 1024 * 1024  # whole multipart body
    max_pixels: int = 16_000_000  # per image, checked from the header before decoding
    read_timeout_s: float = 10.0  # a request body with no data for this long gets 408 (slow or stalled client)
    body_timeout_s: float = 60.0  # a whole request body must arrive within this (408 otherwise)
    max_uploads: int = 128  # /fuse requests reading or holding a body at once, per replica (503 beyond)
    max_upload_bytes: int = 128 * 1024 * 1024  # body bytes held by those requests together, per replica (503 beyond)


class BadRequest(Exception):
    """A request error answered with ``status`` and ``{"error": reason}``."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def token_digest(token: str | None) -> str | None:
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def decode_upload(data: bytes, name: str, max_pixels: int):
    """Image bytes -> the decoded PIL image, read by the rules of ``imageio.load_image``
    (``imageio.open_image``: the formats read, the pixel count checked from the header before any
    pixel is decoded, the first frame, the EXIF orientation). The Engine converts it by the same
    bit-depth rule as a file (``pil_to_array``) and returns a PIL image of the same pixels as
    ``Engine.fuse`` on the files. Raises BadRequest (413 over the pixel limit, else 400)."""
    from ..imageio import ImageTooLargeError, open_image

    if not data:
        raise BadRequest(400, f"{name}: empty file")
    try:
        return open_image(io.BytesIO(data), name, max_pixels, label="upload")
    except ImageTooLargeError as e:
        raise BadRequest(413, str(e)) from None
    except ValueError as e:
        raise BadRequest(400, str(e)) from None


@serve.deployment(name=DEPLOYMENT)
class TokFuseService:
    """One replica: an Engine, the HTTP routes and the dynamic batcher."""

    def __init__(
        self,
        model: ModelBlob,
        threads: int | None = None,
        limits: dict | None = None,
        token_sha256: str | None = None,
        max_batch_size: int = 8,
        batch_wait_s: float = 0.005,
        align: dict | None = None,
        loopback: bool = False,
    ):
        from ..engine import Engine
        from ..rig import as_rig

        if loopback:
            _replica_grpc_on_loopback()

        self.limits = Limits(**(limits or {}))
        self.engine = Engine(
            model.local_path(),
            threads=threads,
            batch_size=max_batch_size,
            max_pixels=max(self.limits.max_pixels, MIN_PIXELS),
            align=as_rig(align),
        )
        self.token_sha256 = token_sha256
        self.model_name = model.name
        self._fuse_many.set_max_batch_size(max_batch_size)
        self._fuse_many.set_batch_wait_timeout_s(batch_wait_s)
        self.batching = {"max_batch_size": max_batch_size, "batch_wait_s": batch_wait_s}
        self.batches = self.pairs = 0
        from .. import web

        self._page_html = web.page(auth=bool(token_sha256))
        self._page_headers = {
            "Content-Security-Policy": web.content_security_policy(self._page_html),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }
        self.uploads = self.upload_bytes = 0  # bodies being read or held now (Limits.max_uploads / max_upload_bytes)

    # --- HTTP ------------------------------------------------------------------------------------
    #: path -> (method, handler name, needs the bearer token when the service has one)
    ROUTES = {
        "/fuse": ("POST", "_fuse", True),
        "/metrics": ("POST", "_metrics", True),
        "/healthz": ("GET", "_healthz", False),
        "/info": ("GET", "_info", True),
        "/": ("GET", "_page", False),
    }
    SAMPLES_PREFIX = "/samples/"

    async def __call__(self, request):
        from starlette.responses import JSONResponse, Response

        path, method = request.url.path.rstrip("/") or "/", request.method
        try:
            if path.startswith(self.SAMPLES_PREFIX):
                want, handler, auth = "GET", "_sample", False
            elif path in self.ROUTES:
                want, handler, auth = self.ROUTES[path]
            else:
                listed = ", ".join(f"{m} {p}" for p, (m, _, _) in self.ROUTES.items())
                raise BadRequest(
                    404, f"no route {path}; routes: {listed}, GET {self.SAMPLES_PREFIX}<pair>/<ir|vis>.png"
                )
            if method != want:
                raise BadRequest(405, f"{path} takes {want}, not {method}")
            if auth:
                self._check_auth(request)
            return await getattr(self, handler)(request)
        except BadRequest as e:
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            if e.status in (408, 503):
                headers = {"Retry-After": "1"} if e.status == 503 else {"Connection": "close"}
            return JSONResponse({"error": e.reason}, status_code=e.status, headers=headers)
        except Exception as e:  # noqa: BLE001 - a server fault, not the client's: say so, never an HTML page
            return Response(
                json.dumps({"error": f"internal error: {type(e).__name__}: {e}"}),
                status_code=500,
                media_type="application/json",
            )

    async def _healthz(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok"})

    async def _page(self, request):
        from starlette.responses import Response

        return Response(self._page_html, media_type="text/html; charset=utf-8", headers=self._page_headers)

    async def _sample(self, request):
        from starlette.responses import Response

        from .. import web

        pair, _, file = request.url.path[len(self.SAMPLES_PREFIX) :].partition("/")
        side = file[: -len(".png")] if file.endswith(".png") else None
        data = web.sample(pair, side) if side else None
        if data is None:
            raise BadRequest(404, f"no sample {request.url.path}; samples: {', '.join(sorted(web.SAMPLES))}")
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    def _check_auth(self, request) -> None:
        if not self.token_sha256:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise BadRequest(401, "missing bearer token (header Authorization: Bearer <token>)")
        if not hmac.compare_digest(token_digest(token.strip()), self.token_sha256):
            raise BadRequest(401, "invalid bearer token")

    async def _info(self, request):
        from starlette.responses import JSONResponse

        info = self.engine.info()
        info.update(
            model=self.model_name,
            limits=asdict(self.limits),
            batching=self.batching,
            served={"batches": self.batches, "pairs": self.pairs},
            auth=bool(self.token_sha256),
        )
        return JSONResponse(json.loads(json.dumps(info, default=str)))

    async def _fuse(self, request):
        return await self._with_upload(request, self._fuse_upload)

    async def _with_upload(self, request, handler):
        """``handler(request, held)`` counted as one upload (Limits.max_uploads, 503 beyond it); the body
        bytes it holds (``held[0]``) are released when it returns."""
        lim = self.limits
        if self.uploads >= lim.max_uploads:
            raise BadRequest(503, f"too many uploads in progress ({lim.max_uploads}); retry shortly")
        self.uploads += 1
        held = [0]
        try:
            return await handler(request, held)
        finally:
            self.uploads -= 1
            self.upload_bytes -= held[0]

    async def _fuse_upload(self, request, held: list):
        from starlette.responses import Response

        t0 = time.perf_counter()
        parts = await self._read_form(request, held)
        for need in ("ir", "vis"):
            if need not in parts:
                raise BadRequest(400, f"missing multipart part {need!r} (send parts 'ir' and 'vis', optional 'k')")
        k = self._parse_k(parts.get("k"))
        rig = _parse_rig(parts.get("rig")) or self.engine.align
        ir, vis = await asyncio.gather(
            asyncio.to_thread(decode_upload, parts["ir"], "ir", self.limits.max_pixels),
            asyncio.to_thread(decode_upload, parts["vis"], "vis", self.limits.max_pixels),
        )
        del parts  # the encoded bytes are not needed any more (memory: large uploads)
        if rig is None and ir.size != vis.size:
            raise BadRequest(
                400,
                f"ir and vis sizes differ: ir is {ir.size[0]}x{ir.size[1]}, vis is "
                f"{vis.size[0]}x{vis.size[1]} (the pair must be registered and of the same size, or send a 'rig' part)",
            )
        # read as fuse reads them now (the rig applied), so the decoded PIL images are not held while the pair
        # waits and fuses
        try:
            pair = await asyncio.to_thread(self.engine.prepare, ir, vis, rig)
        except (ValueError, TypeError) as e:
            raise BadRequest(400, str(e)) from None
        del ir, vis
        fused = await self._fuse_many((pair, k))
        if isinstance(fused, Exception):
            raise BadRequest(400, str(fused))
        png = await asyncio.to_thread(_encode_png, fused)
        ms = (time.perf_counter() - t0) * 1000.0
        return Response(png, media_type="image/png", headers={"X-Tokfuse-Ms": f"{ms:.1f}"})

    async def _metrics(self, request):
        return await self._with_upload(request, self._metrics_upload)

    async def _metrics_upload(self, request, held: list):
        from starlette.responses import JSONResponse

        t0 = time.perf_counter()
        parts = await self._read_form(request, held)
        for need in ("ir", "vis", "fused"):
            if need not in parts:
                raise BadRequest(
                    400, f"missing multipart part {need!r} (send parts 'ir', 'vis', 'fused', optional 'convention')"
                )
        conv = parts.get("convention")
        conv = conv.decode(errors="replace") if isinstance(conv, bytes) else conv
        out = await asyncio.to_thread(
            upload_metrics, parts["ir"], parts["vis"], parts["fused"], self.limits.max_pixels, conv or None
        )
        out["ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
        return JSONResponse(out, headers={"X-Tokfuse-Ms": f"{out['ms']:.1f}"})

    async def _body_chunks(self, request, held: list):
        """The request body's chunks, with the limits enforced as it streams: its size, the bytes all
        uploads of this replica take together (503), a read timeout between chunks and a deadline for the
        whole body (408: a slow or stalled client never holds a replica)."""
        lim, loop = self.limits, asyncio.get_running_loop()
        deadline = loop.time() + lim.body_timeout_s
        size = 0
        chunks = request.stream().__aiter__()
        while True:
            wait = min(lim.read_timeout_s, deadline - loop.time())
            try:
                if wait <= 0:
                    raise asyncio.TimeoutError
                chunk = await asyncio.wait_for(chunks.__anext__(), wait)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise BadRequest(
                    408,
                    f"request body not received in time (read timeout {lim.read_timeout_s:g} s between chunks, "
                    f"{lim.body_timeout_s:g} s for the whole body)",
                ) from None
            size += len(chunk)
            held[0] += len(chunk)
            self.upload_bytes += len(chunk)
            if size > lim.max_body_bytes:
                raise BadRequest(413, f"request body is over the limit of {lim.max_body_bytes} bytes")
            if self.upload_bytes > lim.max_upload_bytes:
                raise BadRequest(503, "the service holds too many upload bytes now; retry shortly")
            yield chunk

    async def _read_form(self, request, held: list) -> dict:
        """Multipart body -> {part name: bytes}, read by :meth:`_body_chunks` (limits enforced as it streams)."""
        from starlette.datastructures import UploadFile
        from starlette.formparsers import MultiPartException, MultiPartParser

        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise BadRequest(415, f"expected a multipart/form-data body, got {ctype or 'no content type'!r}")
        limit = self.limits.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BadRequest(413, f"request body of {length} bytes is over the limit of {limit}")
        try:  # parsed as it streams: file parts spool to disk past 1 MB, the body is never held whole
            form = await MultiPartParser(
                request.headers, self._body_chunks(request, held), max_files=4, max_fields=4, max_part_size=limit
            ).parse()
        except MultiPartException as e:
            raise BadRequest(400, f"malformed multipart body: {e.message}") from None
        parts = {}
        for key, val in form.multi_items():
            if key in parts:
                raise BadRequest(400, f"multipart part {key!r} given twice")
            if key in ("ir", "vis") and not isinstance(val, UploadFile):
                raise BadRequest(
                    400,
                    f"multipart part {key!r} is a text field, not a file (with curl: -F {key}=@FILE, note the @)",
                )
            parts[key] = await val.read() if isinstance(val, UploadFile) else val
        await form.close()
        return parts

    def _parse_k(self, raw):
        n = self.engine.backend.num_tokens
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            return None
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        try:
            k = int(text.strip())
        except ValueError:
            raise BadRequest(400, f"k must be an integer in [0, {n}], got {text[:40]!r}") from None
        if not 0 <= k <= n:
            raise BadRequest(400, f"k must be in [0, {n}], got {k}")
        return k

    # --- dynamic batching ------------------------------------------------------------------------
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _fuse_many(self, items: list) -> list:
        return await asyncio.to_thread(self._fuse_sync, items)

    def _fuse_sync(self, items: list) -> list:
        """[(pair, k)] (``Engine.prepare`` results of PIL images) -> [fused PIL image, or the exception of
        that pair]; one ``fuse_batch`` per k (pairs of the same size share backend calls)."""
        out = [None] * len(items)
        by_k: dict = {}
        for i, (_, k) in enumerate(items):
            by_k.setdefault(k, []).append(i)
        for k, idx in by_k.items():
            try:
                res = self.engine.fuse_batch([items[i][0] for i in idx], k=k)
            except (ValueError, TypeError):
                res = []
                for i in idx:
                    try:
                        res.append(self.engine.fuse_batch([items[i][0]], k=k)[0])
                    except (ValueError, TypeError) as e:
                        res.append(e)
            for i, r in zip(idx, res):
                out[i] = r
        self.batches += 1
        self.pairs += len(items)
        return out


def upload_metrics(ir: bytes, vis: bytes, fused: bytes, max_pixels: int, convention: str | None = None) -> dict:
    """The quality metrics of ``tokfuse_rt.metrics.evaluate`` for uploaded ``fused`` against ``ir`` and
    ``vis``, each read as ``tokfuse eval`` reads files (``read_gray``, or ``read_rgb`` for a per-channel
    convention) after the upload checks of ``decode_upload``. Returns ``{"convention", "metrics":
    {name: value or None where undefined}, "higher_is_better": {name: bool}}``. Raises BadRequest (400
    for a bad image, sizes that differ or an unknown convention, 413 over the pixel limit, 501 without
    scipy)."""
    import math

    from ..metrics import HIGHER_IS_BETTER, evaluate, get_convention, read_gray, read_rgb

    try:
        conv = get_convention(convention)
    except ValueError as e:
        raise BadRequest(400, f"convention: {e}") from None
    sizes = {}
    for name, data in (("ir", ir), ("vis", vis), ("fused", fused)):
        sizes[name] = decode_upload(data, name, max_pixels).size
    if len(set(sizes.values())) != 1:
        raise BadRequest(400, "sizes differ: " + ", ".join(f"{n} is {w}x{h}" for n, (w, h) in sizes.items()))
    reader = read_rgb if conv.per_channel else read_gray
    F, A, B = (reader(io.BytesIO(data)) for data in (fused, ir, vis))
    try:
        values = evaluate(F, A, B, convention=conv)
    except ImportError as e:
        raise BadRequest(501, f"the metrics need scipy on the service (install tokfuse_rt[eval]): {e}") from None
    return {
        "convention": conv.name,
        "metrics": {k: (float(v) if math.isfinite(v) else None) for k, v in values.items()},
        "higher_is_better": {k: HIGHER_IS_BETTER.get(k.split("_")[0], True) for k in values},
    }


def _parse_rig(raw):
    """The optional ``rig`` part (a rig file's JSON) -> a Rig, or None; BadRequest 400 naming what is wrong."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    from ..rig import Rig

    try:
        return Rig.from_dict(json.loads(raw), source="(request part 'rig')")
    except json.JSONDecodeError as e:
        raise BadRequest(400, f"rig: not JSON ({e})") from None
    except (ValueError, TypeError) as e:
        raise BadRequest(400, str(e)) from None


def _replica_grpc_on_loopback() -> None:
    """Ray Serve starts every replica's inter-deployment gRPC server on ``[::]:0`` (all interfaces, hard-coded
    in ``ray.serve._private.replica``); on a Ray instance that listens on 127.0.0.1 only, bind it there too.
    Runs in the replica process before Serve starts that server; without the hook it is a no-op."""
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    real = getattr(replica, "add_port_to_grpc_server", None)
    if real is None or getattr(real, "tokfuse_loopback", False):
        return

    def on_loopback(server, address: str):
        return real(server, "127.0.0.1:" + address[len("[::]:") :] if address.startswith("[::]:") else address)

    on_loopback.tokfuse_loopback = True
    replica.add_port_to_grpc_server = on_loopback


def _encode_png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def build_app(
    model=None,
    *,
    replicas: int = 1,
    threads: int | None = 1,
    max_batch_size: int = 8,
    batch_wait_s: float = 0.005,
    limits: Limits | None = None,
    token: str | None = None,
    align=None,
    loopback: bool = False,
):
    """The Serve application (not yet running). ``model``: a model file, None for the bundled default
    exported to ONNX; ``token``: bearer token required by /fuse, /metrics and /info (None: no auth);
    ``align``: a deployment-wide camera rig (path or Rig, checked here); ``loopback``: the Ray instance
    listens on 127.0.0.1 only, so do the replicas' own servers."""
    from ..rig import as_rig

    for nm, v in (("replicas", replicas), ("max_batch_size", max_batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{nm} must be a positive int, got {v!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    if not (isinstance(batch_wait_s, (int, float)) and 0 <= batch_wait_s <= 10):
        raise ValueError(f"batch_wait_s must be in [0, 10] seconds, got {batch_wait_s!r}")
    limits = limits or Limits()
    if min(limits.max_body_bytes, limits.max_pixels, limits.max_uploads, limits.max_upload_bytes) < 1 or not (
        0 < limits.read_timeout_s <= limits.body_timeout_s
    ):
        raise ValueError(f"limits must be positive (read_timeout_s <= body_timeout_s), got {limits}")
    rig = as_rig(align)
    blob = ModelBlob.put(resolve_model(model))
    dep = TokFuseService.options(
        num_replicas=replicas,
        # room for every upload allowed plus /healthz and /info: a replica full of slow uploads still answers
        max_ongoing_requests=limits.max_uploads + max(16, 2 * max_batch_size),
        ray_actor_options={"num_cpus": threads or 1},
    )
    return dep.bind(
        blob,
        threads=threads,
        limits=asdict(limits),
        token_sha256=token_digest(token),
        max_batch_size=max_batch_size,
        batch_wait_s=float(batch_wait_s),
        align=rig.to_dict() if rig is not None else None,
        loopback=bool(loopback),
    )


def check_port(host: str, port: int) -> None:
    """ValueError naming ``host:port`` when the port is out of range or cannot be listened on (in use,
    no permission, unknown host), checked as the HTTP proxy will bind it (SO_REUSEADDR)."""
    import socket

    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port}: unknown host ({e.strerror or e})") from None
    fam, _, _, _, addr = infos[0]
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            why = "it is in use" if e.errno == 98 else (e.strerror or str(e))
            raise ValueError(f"cannot listen on {host}:{port}: {why}; choose another --port") from None


def start(app, host: str = "127.0.0.1", port: int = 8000) -> str:
    """Start Serve's HTTP proxy on ``host:port`` and run ``app`` at ``/``; returns the base URL."""
    serve.start(
        http_options={"host": host, "port": port}, logging_config={"log_level": "WARNING", "enable_access_log": False}
    )
    serve.run(app, name=APP_NAME, route_prefix="/", logging_config={"log_level": "WARNING", "enable_access_log": False})
    return f"http://{host}:{port}"


def serve_forever(
    model=None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = "auto",
    replicas: int = 1,
    threads: int | None = 1,
    max_batch_size: int = 8,
    batch_wait_s: float = 0.005,
    limits: Limits | None = None,
    token_env: str = TOKEN_ENV,
    ready=print,
    align=None,
) -> None:
    """``tokfuse serve``: run the service until interrupted (Ctrl-C / SIGTERM), then remove it."""
    import signal

    token = os.environ.get(token_env) or None
    check_port(host, port)  # before Ray starts: a clear error naming the port
    with connected(address, host=host) as ray:
        app = build_app(
            model,
            loopback=ray.util.get_node_ip_address() == "127.0.0.1",
            replicas=replicas,
            threads=threads,
            max_batch_size=max_batch_size,
            batch_wait_s=batch_wait_s,
            limits=limits,
            token=token,
            align=align,
        )
        url = start(app, host, port)
        ready(
            f"tokfuse serve: {url} (web page at /; POST /fuse, POST /metrics, GET /healthz, GET /info), "
            f"{replicas} replica(s), "
            f"auth {'on' if token else 'off'}; Ctrl-C stops"
        )
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            _delete_app()


def _delete_app(timeout_s: float = 15.0) -> None:
    """Remove this application (a shared cluster keeps its others). Ctrl-C in a terminal may also have
    stopped a local Ray instance started for this process; then there is nothing to wait for."""
    import threading

    t = threading.Thread(target=serve.delete, args=(APP_NAME,), daemon=True)
    t.start()
    t.join(timeout_s)


def _interrupt(*_):
    raise KeyboardInterrupt
