"""The REST API through an HTTP client: routes, every bad-input case (4xx JSON, never 5xx), privacy, temporary
files, requests off the event loop."""

from __future__ import annotations

import asyncio
import base64
import logging
import tempfile
import threading
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import BAD_CASES, bad_file

from mammodet.serving.app import create_app
from mammodet.serving.inference import Detector

MAX_UPLOAD_MB = 0.5


@pytest.fixture(scope="module")
def detector(tiny_checkpoint: Path) -> Detector:
    return Detector.from_checkpoint(tiny_checkpoint, "cpu")


@pytest.fixture(scope="module")
def client(detector: Detector) -> TestClient:
    return TestClient(create_app(detector, max_upload_mb=MAX_UPLOAD_MB, preview_max_side=100))


def upload(client: TestClient, data: bytes, url: str = "/v1/detect") -> httpx.Response:
    return client.post(url, files={"file": ("scan", data, "application/octet-stream")})


def test_health_and_model(client: TestClient, detector: Detector) -> None:
    assert client.get("/health").json() == {"status": "ok", "version": detector.version}
    model = client.get("/v1/model").json()
    limits = {
        "max_upload_bytes": 524288,
        "max_pixels": 50_000_000,
        "max_concurrent": 1,
        "max_queue": 8,
        "body_timeout_s": 30.0,
    }
    assert model == {**detector.info(), "limits": limits}
    assert set(model) == {
        "name",
        "version",
        "checkpoint_sha256",
        "arch",
        "family",
        "backbone",
        "classes",
        "preprocessing",
        "thresholds",
        "limits",
    }


def test_page_docs_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "Research use only" in page.text and "not for clinical use" in page.text
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/health", "/v1/model", "/v1/detect"}
    detect = schema["paths"]["/v1/detect"]["post"]
    assert set(detect["responses"]) == {"200", "400", "401", "408", "411", "413", "415", "422", "503"}


def test_detect_answers_the_inference_path(client: TestClient, detector: Detector, mammograms: dict[str, Path]) -> None:
    for name in ("lesions", "clear"):
        answer = upload(client, mammograms[name].read_bytes())
        assert answer.status_code == 200
        assert answer.json() == detector.report(detector.detect(mammograms[name]))
        assert set(answer.json()) == {"detections", "image", "model"}
        assert set(answer.json()["detections"][0]) == {"label", "score", "box"}


def test_png_jpeg_and_preview(client: TestClient, mammograms: dict[str, Path]) -> None:
    image = np.random.default_rng(0).integers(0, 256, (300, 180), dtype=np.uint8)
    for suffix in (".png", ".jpg"):
        answer = upload(client, cv2.imencode(suffix, image)[1].tobytes(), "/v1/detect?preview=true")
        assert answer.status_code == 200 and answer.json()["image"] == {"width": 180, "height": 300}
        prefix = "data:image/png;base64,"
        assert answer.json()["preview"].startswith(prefix)
        preview = cv2.imdecode(np.frombuffer(base64.b64decode(answer.json()["preview"][len(prefix) :]), np.uint8), -1)
        assert preview.shape == (100, 60)  # shrunk to preview_max_side


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_answer_4xx_json(case: str, client: TestClient, mammograms: dict[str, Path], tmp_path: Path) -> None:
    kind, reason = BAD_CASES[case]
    answer = upload(client, bad_file(case, mammograms["lesions"], tmp_path).read_bytes())
    status = {"empty": 400, "unsupported": 415, "invalid": 422}[kind]
    assert (answer.status_code, answer.json()) == (status, {"error": {"code": kind, "message": reason}})


def test_oversized_upload_is_refused_before_it_is_read(client: TestClient) -> None:
    answer = upload(client, b"\0" * 600_000)
    assert answer.status_code == 413
    body_size = int(answer.request.headers["content-length"])
    assert answer.json() == {
        "error": {"code": "too_large", "message": f"upload of {body_size} bytes is over the limit of 524288 bytes"}
    }


def test_too_many_pixels(detector: Detector, mammograms: dict[str, Path]) -> None:
    small = Detector(
        detector.model,
        detector.preprocessing,
        detector.hyper_parameters,
        detector.sha256,
        detector.device,
        max_pixels=60_000,
    )
    answer = upload(TestClient(create_app(small)), mammograms["lesions"].read_bytes())
    assert (answer.status_code, answer.json()) == (
        413,
        {"error": {"code": "too_large", "message": "200 x 320 = 64000 pixels, more than the limit of 60000"}},
    )


def test_malformed_requests(client: TestClient) -> None:
    missing = client.post("/v1/detect", data={"other": "x"})
    assert (missing.status_code, missing.json()) == (
        422,
        {"error": {"code": "invalid_request", "message": "body.file: Field required"}},
    )
    chunked = client.post("/v1/detect", content=iter([b"--x\r\n"]), headers={"content-type": "multipart/form-data"})
    assert (chunked.status_code, chunked.json()) == (
        411,
        {"error": {"code": "length_required", "message": "send the upload with a Content-Length header"}},
    )
    assert client.get("/v1/nothing").json() == {"error": {"code": "http_404", "message": "Not Found"}}


def test_no_dicom_text_in_answers_or_logs(
    client: TestClient, mammograms: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = [upload(client, mammograms["lesions"].read_bytes(), "/v1/detect?preview=true").text]
    for case in ("truncated dicom", "unsupported transfer syntax"):
        bodies.append(upload(client, bad_file(case, mammograms["lesions"], tmp_path).read_bytes()).text)
    assert all("SECRET" not in body for body in bodies)
    assert "SECRET" not in caplog.text and "detect: " in caplog.text


def test_uploads_leave_no_temporary_file(
    client: TestClient, mammograms: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    assert upload(client, mammograms["clear"].read_bytes()).status_code == 200
    assert upload(client, bad_file("truncated dicom", mammograms["lesions"], tmp_path).read_bytes()).status_code == 422
    assert list(temporary.iterdir()) == []


def held_detector(detector: Detector, release: threading.Event, forwards: list[int]) -> Detector:
    """A copy of ``detector`` whose model waits for ``release``; each forward's batch size goes to ``forwards``."""

    def held(images):
        forwards.append(len(images))
        assert release.wait(30), "the model was never released"
        return detector.forward(images)

    blocking = Detector(
        detector.model, detector.preprocessing, detector.hyper_parameters, detector.sha256, detector.device
    )
    blocking.forward = held
    return blocking


def test_requests_run_off_the_event_loop_and_concurrently(detector: Detector, mammograms: dict[str, Path]) -> None:
    """A detection blocked inside the model does not stop /health; four concurrent ones give the same answer."""
    release = threading.Event()
    blocking = held_detector(detector, release, [])
    data = mammograms["lesions"].read_bytes()
    files = {"file": ("scan", data, "application/octet-stream")}

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(blocking))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            pending = [asyncio.create_task(http.post("/v1/detect", files=files)) for _ in range(4)]
            await asyncio.sleep(0.2)
            health = await asyncio.wait_for(http.get("/health"), 10)
            assert health.status_code == 200 and not any(task.done() for task in pending)
            release.set()
            return await asyncio.gather(*pending)

    answers = asyncio.run(scenario())
    expected = detector.report(detector.detect(mammograms["lesions"]))
    assert [a.status_code for a in answers] == [200] * 4 and all(a.json() == expected for a in answers)


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    from mammodet.serving.page import PAGE_CSP

    for url in ("/", "/health", "/v1/model", "/docs", "/v1/nothing"):
        headers = client.get(url).headers
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY", url
        assert "frame-ancestors 'none'" in headers["content-security-policy"], url
    page = client.get("/").headers["content-security-policy"]
    assert page == PAGE_CSP and "script-src 'sha256-" in page and "unsafe-inline" not in page.split("style-src")[0]


def test_a_png_bomb_is_refused_within_3_s(client: TestClient) -> None:
    import io
    import time

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buffer, format="PNG")  # 100 Mpx in a few KB
    assert len(buffer.getvalue()) < 100_000
    started = time.perf_counter()
    answer = upload(client, buffer.getvalue())
    assert time.perf_counter() - started < 3.0
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "too_large")
    assert "10000 x 10000 = 100000000 pixels, more than the limit of 50000000" in answer.json()["error"]["message"]


def test_a_jpeg_whose_header_claims_more_pixels_than_its_data_is_refused(client: TestClient) -> None:
    data = bytearray(cv2.imencode(".jpg", np.full((300, 180), 90, np.uint8))[1].tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (3000).to_bytes(2, "big") + (2000).to_bytes(2, "big")  # height, width
    answer = upload(client, bytes(data))
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "invalid")
    assert "the JPEG header claims 2000 x 3000 pixels, more than" in answer.json()["error"]["message"]


def test_api_key_guards_v1_only(detector: Detector, mammograms: dict[str, Path]) -> None:
    keyed = TestClient(create_app(detector, api_key="s3cret"))
    refused = keyed.get("/v1/model")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthorized")
    assert upload(keyed, mammograms["clear"].read_bytes()).status_code == 401
    assert keyed.get("/v1/model", headers={"X-API-Key": "wrong"}).status_code == 401
    assert keyed.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert keyed.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    for scheme in ("bearer", "BEARER", "beArer"):  # hostile probe #14: the scheme is case-insensitive
        assert keyed.get("/v1/model", headers={"Authorization": f"{scheme} s3cret"}).status_code == 200
    assert keyed.get("/v1/model", headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert keyed.get("/v1/model", headers={"Authorization": "s3cret"}).status_code == 401
    assert keyed.get("/health").status_code == 200 and keyed.get("/").status_code == 200


def test_serve_refuses_a_public_bind_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import subprocess
    import sys

    from mammodet.serve import API_KEY_ENV, resolve_api_key

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    repo = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "mammodet.serve", f"ckpt_path={tmp_path / 'none.ckpt'}", "host=0.0.0.0"]
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    done = subprocess.run(command, capture_output=True, text=True, cwd=repo, env=env, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: refusing to listen on 0.0.0.0 without an API key")
    assert resolve_api_key("127.0.0.1", None) is None and resolve_api_key("::1", None) is None
    assert resolve_api_key("0.0.0.0", None, allow_no_api_key=True) is None
    assert resolve_api_key("0.0.0.0", "k") == "k"
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert resolve_api_key("0.0.0.0", None) == "from-env"


def test_requests_beyond_the_queue_get_503_with_retry_after(detector: Detector, mammograms: dict[str, Path]) -> None:
    release = threading.Event()
    blocking = held_detector(detector, release, [])
    files = {"file": ("scan", mammograms["lesions"].read_bytes(), "application/octet-stream")}

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        app = create_app(blocking, max_concurrent=1, max_queue=1, retry_after_s=7)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            admitted = [asyncio.create_task(http.post("/v1/detect", files=files)) for _ in range(2)]
            await asyncio.sleep(0.3)
            refused = await asyncio.wait_for(http.post("/v1/detect", files=files), 10)
            release.set()
            return await asyncio.gather(*admitted), refused

    admitted, refused = asyncio.run(scenario())
    assert [a.status_code for a in admitted] == [200, 200]
    assert (refused.status_code, refused.headers["retry-after"], refused.json()["error"]["code"]) == (503, "7", "busy")


async def asgi_call(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes], then: str = "hang") -> list[dict]:
    """POST ``chunks`` to ``/v1/detect`` at the ASGI level (headers exactly as given); the messages sent back.

    After the last chunk the client either hangs (``then="hang"``: the body never ends) or is gone
    (``then="disconnect"``: the body ends and every later receive says ``http.disconnect``).
    """
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/detect",
        "raw_path": b"/v1/detect",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    last = len(chunks) - 1
    messages = [
        {"type": "http.request", "body": chunk, "more_body": then == "hang" or i < last}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        if then == "hang":
            await asyncio.sleep(60)  # the rest of the body never comes
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


def asgi_post(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes], then: str = "hang") -> list[dict]:
    """``asgi_call`` on its own event loop."""
    return asyncio.run(asgi_call(app, headers, chunks, then))


def answer_of(sent: list[dict]) -> tuple[int, dict]:
    """The status and JSON body of an ASGI answer."""
    import json

    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_a_body_shorter_than_its_content_length_times_out(detector: Detector) -> None:
    import time

    app = create_app(detector, body_timeout_s=0.3)
    headers = [(b"content-length", b"1000"), (b"content-type", b"multipart/form-data; boundary=x")]
    started = time.perf_counter()
    sent = asgi_post(app, headers, [b"--x\r\n"])
    assert time.perf_counter() - started < 3
    assert answer_of(sent) == (
        408,
        {"error": {"code": "http_408", "message": "the upload did not arrive within 0.3 s (body_timeout_s)"}},
    )


def test_content_length_with_transfer_encoding_is_refused(detector: Detector) -> None:
    """Hostile probe #3: both headers let a chunked body pass a small Content-Length (RFC 9112 6.1: ambiguous)."""
    app = create_app(detector, max_upload_mb=MAX_UPLOAD_MB)
    headers = [
        (b"content-length", b"100"),
        (b"transfer-encoding", b"chunked"),
        (b"content-type", b"multipart/form-data; boundary=x"),
    ]
    assert answer_of(asgi_post(app, headers, [b"--x\r\n"])) == (
        400,
        {
            "error": {
                "code": "bad_request",
                "message": "send either Content-Length or Transfer-Encoding, not both (ambiguous length)",
            }
        },
    )


def test_the_bytes_read_are_counted_whatever_the_headers_say(detector: Detector) -> None:
    """A body longer than its (small) Content-Length is cut off at the limit: 413, not read to the end."""
    app = create_app(detector, max_upload_mb=MAX_UPLOAD_MB)
    request = httpx.Request("POST", "http://test/v1/detect", files={"file": ("scan", b"\0" * 1_300_000)})
    body = request.read()  # a well-formed 1.3 MB upload against a 0.5 MB limit, claiming 100 bytes
    headers = [(b"content-length", b"100"), (b"content-type", request.headers["content-type"].encode())]
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    sent = asgi_post(app, headers, chunks, then="disconnect")
    assert answer_of(sent) == (
        413,
        {"error": {"code": "http_413", "message": "upload of more than 524288 bytes is over the limit"}},
    )


def test_queued_requests_of_gone_clients_never_reach_the_model(detector: Detector, mammograms: dict[str, Path]) -> None:
    """Hostile probe #12: requests whose client disconnected while queued are dropped, not run."""
    release, forwards = threading.Event(), []
    blocking = held_detector(detector, release, forwards)
    files = {"file": ("scan", mammograms["lesions"].read_bytes(), "application/octet-stream")}
    request = httpx.Request("POST", "http://test/v1/detect", files=files)
    body, content_type = request.read(), request.headers["content-type"]
    app = create_app(blocking, max_concurrent=1, max_queue=8)
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", content_type.encode())]

    async def scenario() -> tuple[httpx.Response, list[list[dict]], httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            first = asyncio.create_task(http.post("/v1/detect", files=files))
            await asyncio.sleep(0.3)  # the first holds the model
            gone_tasks = [asyncio.create_task(asgi_call(app, headers, [body], "disconnect")) for _ in range(5)]
            await asyncio.sleep(0.5)
            release.set()
            abandoned = await asyncio.gather(*gone_tasks)
            return await first, abandoned, await http.post("/v1/detect", files=files)

    first, abandoned, after = asyncio.run(scenario())
    assert first.status_code == 200 and after.status_code == 200
    assert [answer_of(sent)[0] for sent in abandoned] == [499] * 5
    assert forwards == [1, 1]  # the first and the last request only


def test_a_dicom_with_unannounced_frames_is_a_422(client: TestClient, tmp_path: Path) -> None:
    """Hostile probe #4: a bad DICOM answers a JSON 4xx naming the problem, not a plain-text 500."""
    from helpers import two_frames_unannounced

    answer = upload(client, two_frames_unannounced(tmp_path / "frames.dcm").read_bytes())
    assert (answer.status_code, answer.json()) == (
        422,
        {
            "error": {
                "code": "invalid",
                "message": "pixel data decodes to shape (2, 64, 48), expected one 64 x 48 frame",
            }
        },
    )


def test_a_dicom_declaring_too_many_pixels_is_refused(client: TestClient, tmp_path: Path) -> None:
    from helpers import huge_rle_header

    answer = upload(client, huge_rle_header(tmp_path).read_bytes())
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "too_large")
    assert answer.json()["error"]["message"] == "60000 x 60000 = 3600000000 pixels, more than the limit of 50000000"
