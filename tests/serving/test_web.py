"""The web page of ``tokfuse serve`` (GET /) in a real browser: headless Chromium from Debian's packages,
driven by Selenium, against ``tokfuse serve`` on 127.0.0.1 (tiny model, bearer token on). The fused
image the page shows and the PNG it downloads equal ``Engine.fuse`` on the same real pair; every API
error shows the API's own JSON reason; the metrics table shows what POST /metrics answers; no request
leaves the service; the console stays clean; keyboard alone and a narrow window work."""

from __future__ import annotations

import base64
import io
import re
import time

import numpy as np
import pytest
from PIL import Image

from web_browser import chromium, fetch_bytes, missing, requested_urls

if missing():
    pytest.skip(missing(), allow_module_level=True)
ray = pytest.importorskip("ray", reason="needs the extra tokfuse_rt[ray]")
pytest.importorskip("ray.serve", reason="needs ray[serve]")
pytest.importorskip("onnxruntime")
httpx = pytest.importorskip("httpx")

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tokfuse_rt import Engine
from tokfuse_rt.demo import ASSETS

from serve_common import tokfuse_serve

pytestmark = pytest.mark.timeout(600)  # per test, set-up included: a bound for a busy 2-core machine
TOKEN = "web-token-51c2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_S = 120  # one fusion of a 640x480 pair with the tiny model takes well under a second; CI may be busy


@pytest.fixture(scope="module")
def service(tiny_onnx):
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    args = ["--replicas", "1", "--threads", "1", "--max-pixels", "500000"]
    with tokfuse_serve(tiny_onnx, args, token=TOKEN, ray_address=ray.get_runtime_context().gcs_address) as url:
        yield url
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def engine(tiny_onnx):
    with Engine(tiny_onnx) as eng:
        yield eng


@pytest.fixture(scope="module")
def pairs(shared_data):
    """Real test pairs: RoadScene (JPEG, gray infrared, colour visible) and MSRS (PNG, 640x480)."""
    out = {}
    for name in ("RoadScene", "MSRS"):
        ir = sorted((shared_data / "test" / name / "ir").iterdir())[0]
        out[name] = (ir, next((shared_data / "test" / name / "vi").glob(ir.stem + ".*")))
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    with chromium(download_dir=downloads) as drv:
        drv.downloads = downloads
        yield drv


@pytest.fixture
def page(browser, service):
    """The page freshly loaded with the token typed in; the logs emptied of earlier tests."""
    browser.set_window_size(1280, 1000)
    browser.get_log("browser")
    browser.get_log("performance")
    browser.get(service + "/")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    yield browser
    # no request left the service: not the page's, not one Chromium made for itself in this tab
    urls = requested_urls(browser)
    assert urls, "the performance log recorded no request"
    outside = [u for u in urls if not (u.startswith(service + "/") or u.startswith(("blob:", "data:")))]
    assert not outside, outside
    entries = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert all(e.startswith((service + "/", "blob:", "data:")) for e in entries), entries


def _el(drv, id_):
    return drv.find_element(By.ID, id_)


def _upload(drv, ir, vis):
    _el(drv, "ir").send_keys(str(ir))
    _el(drv, "vis").send_keys(str(vis))


def _wait_outcome(drv) -> tuple[str, str]:
    """("fused", src of #fused) once the page shows a result, or ("error", text of #error)."""

    def outcome(d):
        src = _el(d, "fused").get_attribute("src") or ""
        if src.startswith("blob:") and _el(d, "result").is_displayed():
            return "fused", src
        err = _el(d, "error")
        return ("error", err.text) if err.is_displayed() and err.text else False

    return WebDriverWait(drv, WAIT_S).until(outcome)


def _fuse(drv) -> tuple[str, str]:
    _el(drv, "fuse").click()
    return _wait_outcome(drv)


def _decode(png: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG"
    return np.asarray(im)


def _console_errors(drv) -> list[dict]:
    return [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def _api_reason(url, files, data=None, headers=AUTH) -> str:
    r = httpx.post(f"{url}/fuse", files=files, data=data, headers=headers, timeout=60)
    assert r.status_code >= 400 and r.headers["content-type"] == "application/json", r.text[:200]
    return r.json()["error"]


def test_fuse_a_real_pair(page, service, engine, pairs):
    """File pickers, Fuse: #fused is the PNG of Engine.fuse on the same files (identical pixels), so is the
    downloaded PNG; size, backend and server time shown; the metrics table holds what POST /metrics says."""
    ir, vis = pairs["RoadScene"]
    _upload(page, ir, vis)
    kind, src = _fuse(page)
    assert kind == "fused", src
    png = fetch_bytes(page, src)
    got, ref = _decode(png), engine.fuse(ir, vis)
    assert got.shape == ref.shape and ref.ndim == 3 and np.array_equal(got, ref)

    h, w = ref.shape[:2]
    assert _el(page, "size").text.startswith(f"{w} × {h} px")
    assert _el(page, "backend").text.startswith("onnxruntime"), _el(page, "backend").text
    assert re.fullmatch(r"\d+\.\d ms", _el(page, "server-ms").text), _el(page, "server-ms").text
    assert _el(page, "k-used").text.startswith("model default")

    _el(page, "download").click()
    target = page.downloads / f"{ir.stem}_fused.png"
    t0 = time.monotonic()
    while not target.is_file() and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    assert target.is_file(), list(page.downloads.iterdir())
    assert target.read_bytes() == png

    _el(page, "metrics-btn").click()
    WebDriverWait(page, WAIT_S).until(lambda d: _el(d, "metrics").is_displayed() or _el(d, "error").is_displayed())
    assert not _el(page, "error").is_displayed(), _el(page, "error").text
    shown = {
        tr.get_attribute("data-metric"): tr.get_attribute("data-value")
        for tr in page.find_elements(By.CSS_SELECTOR, "#metrics tbody tr")
    }
    files = {"ir": (ir.name, ir.read_bytes()), "vis": (vis.name, vis.read_bytes()), "fused": ("f.png", png)}
    api = httpx.post(f"{service}/metrics", files=files, headers=AUTH, timeout=120).json()["metrics"]
    # JavaScript's String(number) is the shortest text that reads back as the same double
    assert {k: (None if v == "null" else float(v)) for k, v in shown.items()} == api
    assert list(shown) == list(api) and len(api) == 15

    # the before/after slider moves with the keyboard and clips the fused image
    slider = _el(page, "slider")
    slider.send_keys(Keys.HOME)
    for _ in range(25):
        slider.send_keys(Keys.ARROW_RIGHT)
    assert slider.get_attribute("value") == "25"
    clip = page.execute_script("return document.getElementById('cmp-fused').style.clipPath")
    assert clip == "inset(0px 75% 0px 0px)", clip
    assert _el(page, "cmp-src").get_attribute("src") == page.execute_script(
        "return document.getElementById('ir-view').src"
    )
    assert _console_errors(page) == []


def test_drop_a_pair_and_fuse_with_k_by_keyboard(page, engine, pairs):
    """Files dropped on the two zones; k typed and Enter pressed in its field: Engine.fuse with that k."""
    ir, vis = pairs["MSRS"]
    for side, path in (("ir", ir), ("vis", vis)):
        page.execute_script(
            """const [zone, name, b64] = arguments;
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "image/png" }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));""",
            _el(page, f"{side}-drop"),
            path.name,
            base64.b64encode(path.read_bytes()).decode(),
        )
        assert page.execute_script(f"return document.getElementById('{side}').files[0].name") == path.name
    k = _el(page, "k")
    k.send_keys("8")
    k.send_keys(Keys.ENTER)
    kind, src = _wait_outcome(page)
    assert kind == "fused", src
    got, ref = _decode(fetch_bytes(page, src)), engine.fuse(ir, vis, k=8)
    assert got.shape == ref.shape and np.array_equal(got, ref)
    # (the tiny untrained model gives the same image for every k; that the page sends k is shown by
    # test_errors_show_the_api_reason, where k=99 gets the API's range reason)
    assert _el(page, "k-used").text == "8"
    assert _console_errors(page) == []


def test_errors_show_the_api_reason(page, service, pairs, tmp_path):
    """Not an image, sizes that differ, k out of range, no token: #error shows the reason of the API's
    JSON error for the same request; the console holds only the browser's notes of those 4xx answers."""
    road_ir, road_vis = pairs["RoadScene"]
    msrs_vis = pairs["MSRS"][1]
    text = tmp_path / "notes.png"
    text.write_bytes(b"hello, this is not an image")
    cases = [
        ("not an image", text, road_vis, "", TOKEN),
        ("sizes differ", road_ir, msrs_vis, "", TOKEN),
        ("k out of range", road_ir, road_vis, "99", TOKEN),
        ("no token", road_ir, road_vis, "", ""),
    ]
    for case, ir, vis, k, token in cases:
        page.get(page.current_url)
        if token:
            _el(page, "token").send_keys(token)
        _upload(page, ir, vis)
        _el(page, "k").send_keys(k)
        kind, text_shown = _fuse(page)
        files = {"ir": (ir.name, ir.read_bytes()), "vis": (vis.name, vis.read_bytes())}
        reason = _api_reason(service, files, {"k": k} if k else None, AUTH if token else {})
        assert kind == "error" and text_shown.startswith(reason), (case, text_shown, reason)
        assert not _el(page, "result").is_displayed() and not _el(page, "fused").get_attribute("src"), case
        errors = _console_errors(page)
        assert all(e["source"] == "network" and f"{service}/fuse" in e["message"] for e in errors), (case, errors)
    assert "Enter the service's token" in text_shown


def test_keyboard_alone_and_labels(page, engine):
    """Every control has a label; Tab reaches the controls in reading order; with Tab and Enter only, the
    sample pair is loaded and fused (Engine.fuse of the bundled sample pair)."""
    unlabelled = page.execute_script(
        """return [...document.querySelectorAll("input, button, select, textarea")]
             .filter((e) => !(e.labels && e.labels.length) && !e.textContent.trim() && !e.getAttribute("aria-label"))
             .map((e) => e.id || e.outerHTML);"""
    )
    assert unlabelled == []

    def press(*k):  # key presses to the focused element, as a person types them
        ActionChains(page).send_keys(*k).perform()
        return page.switch_to.active_element.get_attribute("id")

    for _ in range(12):  # from the token field on, round to the first control
        if press(Keys.TAB) == "ir":
            break
    order = ["ir"] + [press(Keys.TAB) for _ in range(5)]
    assert order == ["ir", "vis", "k", "token", "sample", "fuse"], order
    ActionChains(page).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    assert page.switch_to.active_element.get_attribute("id") == "sample"
    press(Keys.ENTER)
    WebDriverWait(page, 30).until(lambda d: d.execute_script("return document.getElementById('vis').files.length"))
    assert press(Keys.TAB) == "fuse"
    press(Keys.ENTER)
    kind, src = _wait_outcome(page)
    assert kind == "fused", src
    ref = engine.fuse(ASSETS / "sample_ir.png", ASSETS / "sample_vis.png")
    assert np.array_equal(_decode(fetch_bytes(page, src)), ref)
    assert _console_errors(page) == []


def test_narrow_window(page, pairs):
    """At 360 px wide nothing overflows sideways: the controls and the fused image fit the window."""
    page.set_window_size(360, 800)
    _upload(page, *pairs["MSRS"])
    kind, _ = _fuse(page)
    assert kind == "fused"
    width = page.execute_script("return window.innerWidth")
    assert page.execute_script("return document.documentElement.scrollWidth") <= width
    for id_ in ("ir", "vis", "k", "token", "fuse", "fused", "slider", "download"):
        r = page.execute_script(f"return document.getElementById('{id_}').getBoundingClientRect().toJSON()")
        assert r["left"] >= 0 and r["right"] <= width and r["width"] > 0, (id_, r, width)
    assert _console_errors(page) == []
