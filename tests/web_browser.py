"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver`` packages) driven by Selenium, for the
browser tests (tests/serving/test_web.py) and the page's screenshot (scripts/web_screenshot.py)."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

# --no-sandbox: CI runs as root in a container; the others keep Chromium from calling any Google
# service (updates, sync, field trials) so that every request the tests see is the page's own.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
)


def missing() -> str | None:
    """Why no browser test can run here (None: Selenium, chromium and chromedriver are all installed)."""
    if importlib.util.find_spec("selenium") is None:
        return "needs selenium (pip install 'tokfuse_rt[dev]')"
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    return None


@contextlib.contextmanager
def chromium(download_dir: Path | None = None, size=(1280, 1000)):
    """A headless Chromium with a fresh profile, its console and network (performance) logs recorded,
    downloads saved to ``download_dir`` without asking; quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tokfuse-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    if download_dir is not None:
        opts.add_experimental_option(
            "prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
        )
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def fetch_bytes(drv, url: str) -> bytes:
    """The bytes the page gets for ``url`` (a blob: URL or one of the service's), fetched in the page."""
    data_url = drv.execute_async_script(
        """const [url, done] = arguments;
        fetch(url).then((r) => r.blob()).then((b) => {
          const fr = new FileReader();
          fr.onload = () => done(fr.result);
          fr.readAsDataURL(b);
        }).catch((e) => done("error:" + e));""",
        url,
    )
    assert data_url.startswith("data:"), data_url
    return base64.b64decode(data_url.split(",", 1)[1])


def requested_urls(drv) -> list[str]:
    """Every URL the page asked for since the last call (Network.requestWillBeSent of the performance log)."""
    urls = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls
