"""Make docs/serving_screenshot.png: ``python -m mammodet.serve`` with a checkpoint, one upload in Chromium.

    python scripts/serving_screenshot.py CKPT IMAGE [--threshold 0.5] [--out docs/serving_screenshot.png]

Starts the serve command on a free loopback port, opens the page in headless Chromium (Debian's, as the browser
test does), uploads IMAGE, sets the confidence slider to ``--threshold`` and saves a screenshot of the page.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "serving_screenshot.png")
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mammodet.serve", f"ckpt_path={args.ckpt}", f"port={port}", "device=cpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"python -m mammodet.serve did not start on {url}")
            time.sleep(0.25)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.set_input_files("#file", str(args.image))
            expect(page.locator("#status")).to_contain_text("detections; move the slider", timeout=60_000)
            page.locator("#threshold").fill(str(args.threshold))
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out}")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    main()
