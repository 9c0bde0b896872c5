"""The screenshot of the web page of ``tokfuse serve`` (docs/web_page.png): the service with the bundled
model (exported to ONNX), headless Chromium (Debian's chromium and chromium-driver) driven by Selenium, a
pair loaded (default: the bundled sample pair, with the page's own button), fused, its metrics computed.

    python scripts/web_screenshot.py [--model M] [--ir IR --vis VIS] [--width 1100] [-o docs/web_page.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the helpers that start the service and the browser for the tests


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model file (default: the bundled model)")
    p.add_argument("--ir", default=None, help="infrared image (default: the sample pair)")
    p.add_argument("--vis", default=None, help="visible image (with --ir)")
    p.add_argument("--width", type=int, default=1100, help="window width in CSS pixels")
    p.add_argument("-o", "--output", default=str(ROOT / "docs" / "web_page.png"))
    a = p.parse_args(argv)
    if (a.ir is None) != (a.vis is None):
        p.error("--ir and --vis go together")

    from serve_common import tokfuse_serve
    from web_browser import chromium, missing

    if missing():
        print(f"web_screenshot: {missing()}", file=sys.stderr)
        return 2
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tokfuse_serve(a.model, ["--replicas", "1"], start_s=900) as url, chromium(size=(a.width, 900)) as drv:
        drv.get(url + "/")
        if a.ir:
            drv.find_element(By.ID, "ir").send_keys(str(Path(a.ir).resolve()))
            drv.find_element(By.ID, "vis").send_keys(str(Path(a.vis).resolve()))
        else:
            drv.find_element(By.ID, "sample").click()
            WebDriverWait(drv, 60).until(
                lambda d: d.execute_script("return document.getElementById('vis').files.length")
            )
        drv.find_element(By.ID, "fuse").click()
        WebDriverWait(drv, 600).until(
            lambda d: d.find_element(By.ID, "result").is_displayed() or d.find_element(By.ID, "error").is_displayed()
        )
        if drv.find_element(By.ID, "error").is_displayed():
            print(f"web_screenshot: the page shows an error: {drv.find_element(By.ID, 'error').text}", file=sys.stderr)
            return 1
        drv.find_element(By.ID, "metrics-btn").click()
        WebDriverWait(drv, 600).until(lambda d: d.find_element(By.ID, "metrics").is_displayed())
        height = drv.execute_script("return document.documentElement.scrollHeight")
        drv.set_window_size(a.width, height + 200)  # the whole page in one picture (window chrome included)
        drv.execute_script("window.scrollTo(0, 0)")
        png = drv.get_screenshot_as_png()
        out = Path(a.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)  # exclusive; renamed when whole
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(png)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        print(f"web_screenshot: {out} ({out.stat().st_size} bytes, page {a.width}x{height} CSS px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
