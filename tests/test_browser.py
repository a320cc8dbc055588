"""End to end in headless Chromium: ``python -m mammodet.serve``, upload a synthetic DICOM, see boxes and table."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The serve command on a free loopback port; its URL once /health answers."""
    port = free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mammodet.serve", f"ckpt_path={tiny_checkpoint}", f"port={port}", "device=cpu",
         "score_thresh=0"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start: {Path(log.name).read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_upload_shows_boxes_table_slider_and_download(server: str, mammograms: dict[str, Path], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        detect_calls = []
        page.on("request", lambda r: detect_calls.append(r.url) if "/v1/detect" in r.url else None)
        page.goto(server)
        expect(page.locator("#notice")).to_contain_text("Research use only")
        expect(page.locator("#notice")).to_contain_text("not for clinical use")
        expect(page.locator("#model")).to_contain_text("model 0.1.0+")

        page.set_input_files("#file", str(mammograms["lesions"]))
        expect(page.locator("#status")).to_contain_text("detections; move the slider")
        with page.expect_download() as download:
            page.click("#download")
        answer = json.loads(Path(download.value.path()).read_text())
        assert set(answer) == {"detections", "image", "model"} and answer["image"] == {"width": 200, "height": 320}
        total = len(answer["detections"])
        assert total > 0
        expect(page.locator("svg#image rect.box")).to_have_count(total)  # threshold 0: every detection
        expect(page.locator("#lesions tbody tr")).to_have_count(total)
        page.screenshot(path=str(tmp_path / "page.png"))

        threshold = math.floor(answer["detections"][2]["score"] * 100) / 100  # a slider step; the best three stay
        page.locator("#threshold").fill(str(threshold))
        shown = sum(d["score"] >= threshold for d in answer["detections"])
        assert shown >= 3
        expect(page.locator("svg#image rect.box")).to_have_count(shown)
        expect(page.locator("#lesions tbody tr")).to_have_count(shown)
        first = answer["detections"][0]
        expect(page.locator("#lesions tbody tr").first).to_contain_text(f"{first['label']}{first['score']:.3f}")
        page.locator("#threshold").fill("1")
        expect(page.locator("svg#image rect.box")).to_have_count(0)
        assert len(detect_calls) == 1  # the slider filters without running the model again

        bad = tmp_path / "notes.dcm"
        bad.write_text("not an image")
        page.set_input_files("#file", str(bad))
        expect(page.locator("#status")).to_have_text("Error 415: not a DICOM, PNG or JPEG file (judged by its content)")
        expect(page.locator("#lesions tbody tr")).to_have_count(0)
        browser.close()
