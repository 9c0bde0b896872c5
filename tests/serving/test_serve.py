"""``tokfuse serve`` (Ray Serve) tested over real HTTP on 127.0.0.1 with httpx: responses equal
``Engine.fuse``, every bad request gets a 4xx with a JSON reason,
a bounded load run has no error, requests are batched, a replica killed during load leaves the
service answering. One Ray instance and one service (2 replicas, tiny model) for the module."""

from __future__ import annotations

import concurrent.futures as cf
import io
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image
from workspace import descendants

ray = pytest.importorskip("ray", reason="needs the extra tokfuse_rt[ray]")
pytest.importorskip("ray.serve", reason="needs ray[serve]")
pytest.importorskip("onnxruntime")
httpx = pytest.importorskip("httpx")

from tokfuse_rt import Engine
from tokfuse_rt.imageio import ImageReadWarning

from serve_common import free_port, tokfuse_serve

pytestmark = pytest.mark.timeout(600)  # per test, set-up included: a bound for a busy 2-core machine
TOKEN = "test-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 2 * 1024 * 1024
MAX_PIXELS = 500_000  # the test pairs (up to TNO 768x576 = 442368 px) pass, 1000x1000 does not
READ_TIMEOUT_S = 3.0  # short, so the stalled-upload test ends soon


@pytest.fixture(scope="module")
def service(tiny_onnx):
    """``tokfuse serve`` as a user runs it (a subprocess, token from the environment), joined to a
    Ray instance of this process so the tests can kill a replica; SIGTERM stops it at the end."""
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    args = ["--replicas", "2", "--threads", "1", "--max-batch-size", "4", "--batch-wait-ms", "10"]
    args += ["--max-body-mb", str(MAX_BODY / 2**20), "--max-pixels", str(MAX_PIXELS)]
    args += ["--read-timeout-s", str(READ_TIMEOUT_S)]
    with tokfuse_serve(tiny_onnx, args, token=TOKEN, ray_address=ray.get_runtime_context().gcs_address) as url:
        yield url
    assert "tokfuse" not in serve.status().applications, "the application outlived tokfuse serve"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def engine(tiny_onnx):
    with Engine(tiny_onnx) as eng:
        yield eng


@pytest.fixture(scope="module")
def pairs(shared_data):
    """Real pairs: RoadScene (gray IR, colour visible), MSRS (640x480), TNO (gray, gray)."""
    out = []
    for name in ("RoadScene", "MSRS", "TNO"):
        ir = sorted((shared_data / "test" / name / "ir").iterdir())[0]
        vis = next((shared_data / "test" / name / "vi").glob(ir.stem + ".*"))
        out.append((ir, vis))
    return out


def _post(url, ir: bytes, vis: bytes, k=None, headers=AUTH, client=httpx):
    files = {"ir": ("ir.png", ir, "application/octet-stream"), "vis": ("vis.png", vis, "application/octet-stream")}
    data = {"k": str(k)} if k is not None else None
    return client.post(f"{url}/fuse", files=files, data=data, headers=headers, timeout=60)


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _decode(resp) -> np.ndarray:
    assert resp.headers["content-type"] == "image/png", resp.text[:200]
    return np.asarray(Image.open(io.BytesIO(resp.content)))


def test_health_and_info(service):
    r = httpx.get(f"{service}/healthz", timeout=30)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.get(f"{service}/info", headers=AUTH, timeout=30)
    info = r.json()
    assert r.status_code == 200 and info["backend"] == "onnxruntime" and info["auth"] is True
    lim = info["limits"]
    assert (lim["max_body_bytes"], lim["max_pixels"], lim["read_timeout_s"]) == (MAX_BODY, MAX_PIXELS, READ_TIMEOUT_S)
    assert info["config"]["num_tokens"] == 8


def test_fuse_equals_engine(service, engine, pairs):
    for ir, vis in pairs:
        for k in (None, 0, 8):
            r = _post(service, ir.read_bytes(), vis.read_bytes(), k=k)
            assert r.status_code == 200, r.text
            got, ref = _decode(r), engine.fuse(ir, vis, k=k)
            assert got.shape == ref.shape and np.array_equal(got, ref), f"{ir.name} k={k}"
    assert _decode(_post(service, pairs[0][0].read_bytes(), pairs[0][1].read_bytes())).ndim == 3  # colour kept


def test_uploads_read_by_the_file_rules(service, engine, pairs, tmp_path):
    """An upload is read as ``Engine.fuse`` reads the same file: a 12-bit thermal frame in a 16-bit
    PNG, stored turned by 90° with an EXIF orientation tag, beside an upright colour visible image
    (without the tag applied the sizes would differ; without the bit-depth rule it would be dark)."""
    ir8 = np.asarray(Image.open(pairs[1][0]).convert("L"))  # MSRS, 640x480
    ir12 = ir8.astype(np.uint16) * 16 + 7  # 12-bit data, max 4087
    exif = Image.Exif()
    exif[0x0112] = 6  # viewer turns it 90° clockwise
    Image.fromarray(np.rot90(ir12, 1).copy()).save(tmp_path / "ir16.png", exif=exif)
    assert Image.open(tmp_path / "ir16.png").mode == "I;16"
    with pytest.warns(ImageReadWarning, match="16-bit data use 12 bits"):
        ref = engine.fuse(tmp_path / "ir16.png", pairs[1][1])
    assert ref.shape[:2] == ir8.shape
    r = _post(service, (tmp_path / "ir16.png").read_bytes(), pairs[1][1].read_bytes())
    assert r.status_code == 200, r.text
    got = _decode(r)
    assert got.shape == ref.shape and np.array_equal(got, ref)


def _bad_cases(pairs):
    ir, vis = pairs[0][0].read_bytes(), pairs[0][1].read_bytes()
    other = pairs[1][1].read_bytes()  # an MSRS image: another size
    big = _png(np.zeros((1000, 1000), np.uint8))  # 1 MP: over the pixel limit, a small file
    tiny = _png(np.zeros((15, 16), np.uint8))
    return {
        "missing vis": (400, dict(files={"ir": ("a.png", ir)})),
        "missing ir": (400, dict(files={"vis": ("a.png", vis)})),
        "non-image": (400, dict(files={"ir": ("a.png", b"hello, not an image"), "vis": ("b.png", vis)})),
        "empty part": (400, dict(files={"ir": ("a.png", b""), "vis": ("b.png", vis)})),
        "truncated": (400, dict(files={"ir": ("a.jpg", ir[: len(ir) // 3]), "vis": ("b.png", vis)})),
        "size mismatch": (400, dict(files={"ir": ("a.png", ir), "vis": ("b.png", other)})),
        "too small": (400, dict(files={"ir": ("a.png", tiny), "vis": ("b.png", tiny)})),
        "too many pixels": (413, dict(files={"ir": ("a.png", big), "vis": ("b.png", big)})),
        "body too large": (413, dict(files={"ir": ("a.png", b"\0" * (MAX_BODY + 1)), "vis": ("b.png", vis)})),
        "ir as a text field": (400, dict(data={"ir": "ir.png"}, files={"vis": ("b.png", vis)})),  # curl -F ir=ir.png
        "both text fields": (400, dict(files={"ir": (None, "ir.png"), "vis": (None, "vis.png")})),
        "k not int": (400, dict(files={"ir": ("a", ir), "vis": ("b", vis)}, data={"k": "two"})),
        "k negative": (400, dict(files={"ir": ("a", ir), "vis": ("b", vis)}, data={"k": "-1"})),
        "k over K": (400, dict(files={"ir": ("a", ir), "vis": ("b", vis)}, data={"k": "9"})),
        "not multipart": (415, dict(content=b"{}", headers={**AUTH, "content-type": "application/json"})),
        "no token": (401, dict(files={"ir": ("a", ir), "vis": ("b", vis)}, headers={})),
        "wrong token": (
            401,
            dict(files={"ir": ("a", ir), "vis": ("b", vis)}, headers={"Authorization": "Bearer nope"}),
        ),
        "not bearer": (
            401,
            dict(files={"ir": ("a", ir), "vis": ("b", vis)}, headers={"Authorization": f"Basic {TOKEN}"}),
        ),
    }


def test_bad_requests_get_4xx_with_json_reason(service, pairs):
    for case, (status, kw) in _bad_cases(pairs).items():
        headers = kw.pop("headers", AUTH)
        r = httpx.post(f"{service}/fuse", headers=headers, timeout=60, **kw)
        assert r.status_code == status, f"{case}: {r.status_code} {r.text[:300]}"
        assert r.headers["content-type"] == "application/json", case
        assert isinstance(r.json().get("error"), str) and r.json()["error"], case
    for method, path, status in (("GET", "/fuse", 405), ("POST", "/healthz", 405), ("GET", "/nope", 404)):
        r = httpx.request(method, f"{service}{path}", headers=AUTH, timeout=30)
        assert r.status_code == status and "error" in r.json(), (method, path, r.text)
    r = httpx.get(f"{service}/info", timeout=30)
    assert r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"


def test_page_and_samples(service):
    """GET / is the web page (tokfuse_rt/web/index.html, marked for a service with a token): under 50 KB,
    no URL off the service, a Content-Security-Policy without 'unsafe-inline' (the browser tests in
    tests/serving/test_web.py show that it admits the page's own script and style); the sample pair is the
    bundled files' bytes. Neither needs the token."""
    from tokfuse_rt import web
    from tokfuse_rt.demo import ASSETS

    r = httpx.get(f"{service}/", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.content == web.page(auth=True) and b'<body data-auth="on">' in r.content
    assert web.page(auth=False).count(b'<body data-auth="off">') == 1
    assert len(r.content) < 50_000, len(r.content)
    assert re.findall(rb"(?:[a-z]+:)?//[\w-]+(?:\.[\w-]+)+", r.content) == []  # no absolute URL
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe-inline" not in csp, csp
    for side in ("ir", "vis"):
        r = httpx.get(f"{service}/samples/bundled/{side}.png", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == (ASSETS / f"sample_{side}.png").read_bytes()
    for path in ("/samples/bundled/x.png", "/samples/nope/ir.png", "/samples/bundled/ir.jpg", "/samples/"):
        r = httpx.get(f"{service}{path}", timeout=30)
        assert r.status_code == 404 and r.json()["error"], (path, r.text)
    r = httpx.post(f"{service}/", timeout=30)
    assert r.status_code == 405 and r.json()["error"] == "/ takes GET, not POST"


def test_metrics_equal_the_evaluator(service, pairs, tmp_path):
    """POST /metrics on a real pair and its fused PNG from /fuse answers the values ``evaluate_dirs`` (the
    code behind ``tokfuse eval``) computes from the same three files: equal, since both read the bytes
    with the same reader and JSON carries a double exactly; undefined values are null."""
    from tokfuse_rt.metrics import HIGHER_IS_BETTER
    from tokfuse_rt.metrics.report import evaluate_dirs

    ir, vis = pairs[0]  # RoadScene: a JPEG pair, colour visible
    fused = _post(service, ir.read_bytes(), vis.read_bytes()).content
    dirs = {role: tmp_path / role for role in ("ir", "vis", "fused")}
    for role, name, data in (("ir", ir.name, ir.read_bytes()), ("vis", vis.name, vis.read_bytes())):
        dirs[role].mkdir()
        (dirs[role] / name).write_bytes(data)
    dirs["fused"].mkdir()
    (dirs["fused"] / f"{ir.stem}.png").write_bytes(fused)
    files = {"ir": ("a.jpg", ir.read_bytes()), "vis": ("b.jpg", vis.read_bytes()), "fused": ("f.png", fused)}
    for conv in (None, "vifb"):
        r = httpx.post(
            f"{service}/metrics", files=files, data={"convention": conv} if conv else None, headers=AUTH, timeout=120
        )
        assert r.status_code == 200, r.text
        rows, failures = evaluate_dirs(
            dirs["fused"], dirs["ir"], dirs["vis"], progress=False, convention=conv or "cddfuse"
        )
        assert failures == [] and len(rows) == 1
        expect = {k: (v if math.isfinite(v) else None) for k, v in rows[0].items() if k != "name"}
        got = r.json()
        assert got["convention"] == (conv or "cddfuse")
        assert got["metrics"] == expect and list(got["metrics"]) == list(expect)
        assert got["higher_is_better"] == {k: HIGHER_IS_BETTER[k.split("_")[0]] for k in expect}
        assert got["ms"] > 0 and r.headers["x-tokfuse-ms"] == f"{got['ms']:.1f}"


def test_metrics_bad_requests(service, pairs):
    ir, vis = pairs[0][0].read_bytes(), pairs[0][1].read_bytes()
    fused = _post(service, ir, vis).content
    other = pairs[1][1].read_bytes()  # another size
    big = _png(np.zeros((1000, 1000), np.uint8))
    ok = {"ir": ("a", ir), "vis": ("b", vis), "fused": ("f", fused)}
    cases = {
        "missing fused": (400, dict(files={"ir": ("a", ir), "vis": ("b", vis)}), "missing multipart part 'fused'"),
        "fused not an image": (400, dict(files={**ok, "fused": ("f", b"nope")}), "fused:"),
        "sizes differ": (400, dict(files={**ok, "fused": ("f", other)}), "sizes differ: ir is "),
        "too many pixels": (413, dict(files={**ok, "fused": ("f", big)}), "fused"),
        "unknown convention": (400, dict(files=ok, data={"convention": "nope"}), "convention: unknown convention"),
        "no token": (401, dict(files=ok, headers={}), "missing bearer token"),
    }
    for case, (status, kw, start) in cases.items():
        headers = kw.pop("headers", AUTH)
        r = httpx.post(f"{service}/metrics", headers=headers, timeout=60, **kw)
        assert r.status_code == status and r.headers["content-type"] == "application/json", (case, r.text[:300])
        assert start in r.json()["error"], (case, r.json())
    r = httpx.get(f"{service}/metrics", headers=AUTH, timeout=30)
    assert r.status_code == 405


def _load(url, jobs, concurrency: int, on_done=None):
    """POST every (ir bytes, vis bytes) of ``jobs`` with ``concurrency`` clients; returns
    [(index, status or exception name, body, seconds)]."""

    def one(i):
        ir, vis = jobs[i]
        t0 = time.perf_counter()
        try:
            r = _post(url, ir, vis, client=client)
            res = (i, r.status_code, r.content, time.perf_counter() - t0)
        except httpx.HTTPError as e:
            res = (i, type(e).__name__, b"", time.perf_counter() - t0)
        if on_done:
            on_done(res)
        return res

    limits = httpx.Limits(max_connections=concurrency)
    with httpx.Client(limits=limits, timeout=60) as client, cf.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(len(jobs))))


@pytest.fixture(scope="module")
def crops(pairs, tmp_path_factory):
    """Two real MSRS pairs cropped to 320x240 PNGs (same size, so concurrent requests batch
    together; small, so a load run of a few hundred requests stays short on 2 cores)."""
    d = tmp_path_factory.mktemp("crops")
    msrs_ir, msrs_vis = pairs[1][0].parent, pairs[1][1].parent
    out = []
    for i, ir in enumerate(sorted(msrs_ir.iterdir())[:2]):
        vis = next(msrs_vis.glob(ir.stem + ".*"))
        pair = []
        for side, p in (("ir", ir), ("vis", vis)):
            q = d / f"{i}_{side}.png"
            Image.open(p).crop((160, 120, 480, 360)).save(q)
            pair.append(q)
        out.append(tuple(pair))
    return out


def test_load_run_no_errors_and_batched(service, engine, crops):
    """200 requests, 8 concurrent, two same-size pairs alternating: no error, every answer exact."""
    expect = [engine.fuse(a, b) for a, b in crops]
    jobs = [(crops[i % 2][0].read_bytes(), crops[i % 2][1].read_bytes()) for i in range(200)]
    res = _load(service, jobs, 8)
    errors = [(i, s) for i, s, _, _ in res if s != 200]
    assert not errors, errors[:10]
    for i, _, body, _ in res:
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), expect[i % 2]), f"request {i}"
    served = [httpx.get(f"{service}/info", headers=AUTH, timeout=30).json()["served"] for _ in range(6)]
    assert any(s["pairs"] > s["batches"] for s in served), f"no replica ever fused two requests together: {served}"


def test_replica_killed_during_load(service, crops):
    """Kill one of the two replicas after 40 answers of a 200-request run (8 concurrent): the service
    keeps answering; only requests in flight on the killed replica may fail; Serve restores it."""
    from ray import serve

    ir, vis = crops[0][0].read_bytes(), crops[0][1].read_bytes()
    jobs = [(ir, vis)] * 200
    replicas = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "SERVE_REPLICA" in a["name"] and "TokFuseService" in a["name"]
    ]
    assert len(replicas) == 2, replicas
    victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
    state = {"n": 0, "killed_at": None}

    def on_done(res):
        state["n"] += 1
        if state["n"] == 40 and state["killed_at"] is None:
            state["killed_at"] = time.perf_counter()
            ray.kill(victim, no_restart=True)

    res = _load(service, jobs, 8, on_done)
    failed = [(i, s) for i, s, _, _ in res if s != 200]
    print(f"replica killed after 40 answers: {len(failed)} of {len(res)} requests failed: {failed}")
    assert state["killed_at"] is not None
    assert len(failed) <= 8, failed  # at most the requests in flight
    assert all(s == 200 for _, s, _, _ in res[-100:]), "the service stopped answering"
    t0 = time.monotonic()  # Serve starts a replacement replica
    while time.monotonic() - t0 < 120:
        st = serve.status().applications["tokfuse"].deployments["TokFuseService"]
        if st.status == "HEALTHY" and st.replica_states.get("RUNNING", 0) == 2:
            break
        time.sleep(1)
    else:
        pytest.fail(f"Serve did not restore 2 running replicas: {st}")
    r = _post(service, ir, vis)
    assert r.status_code == 200


@pytest.mark.parametrize("case", ["out of range", "in use"])
def test_bad_or_busy_port_is_one_clear_line(case):
    """``--port 99999`` and a port in use: one line naming the port, no traceback, before Ray starts."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = 99999 if case == "out of range" else busy.getsockname()[1]
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "tokfuse_rt", "serve", "--port", str(port), "--ray", "local"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr
    assert str(port) in r.stderr and ("in use" in r.stderr or "1..65535" in r.stderr), r.stderr
    assert time.monotonic() - t0 < 60


def _stall(url, n: int):
    """``n`` uploads that send their headers and a few body bytes, then nothing (sockets kept open)."""
    host, port = url.split("//")[1].split(":")
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(
            (
                f"POST /fuse HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n--xyz\r\n"
            ).encode()
        )
        socks.append(s)
    return socks


def test_stalled_uploads_starve_no_one(service, engine, crops):
    """64 uploads stall after a few body bytes (on 127.0.0.1): /healthz still answers within 1 s, a good
    request still succeeds, and every stalled upload gets 408 once the read timeout has passed."""
    ir, vis = (p.read_bytes() for p in crops[0])
    want = engine.fuse(*crops[0])
    socks = _stall(service, 64)
    try:
        time.sleep(1.0)  # let them all reach the replicas
        for _ in range(3):
            t0 = time.perf_counter()
            r = httpx.get(f"{service}/healthz", timeout=5)
            assert r.status_code == 200 and time.perf_counter() - t0 < 1.0, time.perf_counter() - t0
        r = _post(service, ir, vis)
        assert r.status_code == 200, r.text
        assert np.array_equal(_decode(r), want)
        t_end = time.monotonic() + READ_TIMEOUT_S + 30
        answers = []
        for s in socks:
            s.settimeout(max(0.1, t_end - time.monotonic()))
            try:
                answers.append(s.recv(200).split(b"\r\n", 1)[0])
            except OSError as e:
                answers.append(type(e).__name__.encode())
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), set(answers)
    finally:
        for s in socks:
            s.close()


def _listening(pids) -> list:
    """(address, pid) of the TCP sockets listening in processes ``pids``, from ``ss -ltnpH``."""
    import re

    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        for pid in re.findall(r"pid=(\d+)", line):
            if int(pid) in pids:
                found.append((cols[3], int(pid)))
    return found


@pytest.mark.skipif(not shutil.which("ss"), reason="needs ss (iproute2) to list listening sockets")
def test_local_ray_instance_listens_on_the_http_host_only(tiny_onnx):
    """``tokfuse serve`` on 127.0.0.1 with a Ray instance of its own: every socket its processes (Ray's
    GCS, raylet, agents, metrics, workers, the HTTP proxy) listen on is a loopback address."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "tokfuse_rt",
        "serve",
        "--port",
        str(port),
        "--model",
        str(tiny_onnx),
        "--ray",
        "local",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines, t0 = [], time.monotonic()
        while time.monotonic() - t0 < 240:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if line.startswith("tokfuse serve: http://"):
                break
        assert lines and lines[-1].startswith("tokfuse serve: http://127.0.0.1:"), "".join(lines)
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
        found = _listening(descendants(proc.pid))
        assert any(addr.endswith(f":{port}") for addr, _ in found), found
        wild = [(a, p) for a, p in found if not re.match(r"^(127\.|\[::ffff:127\.|\[::1\]|localhost)", a)]
        assert len(found) > 3 and not wild, wild
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
