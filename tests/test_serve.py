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
from test_predict import BAD_CASES, bad_file

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
    assert model == {**detector.info(), "limits": {"max_upload_bytes": 524288, "max_pixels": 100_000_000}}
    assert set(model) == {
        "name",
        "version",
        "checkpoint_sha256",
        "arch",
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
    assert set(detect["responses"]) == {"200", "400", "411", "413", "415", "422"}


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


def test_requests_run_off_the_event_loop_and_concurrently(detector: Detector, mammograms: dict[str, Path]) -> None:
    """A detection blocked inside the model does not stop /health; four concurrent ones give the same answer."""
    release = threading.Event()

    def held(images):
        assert release.wait(30), "the model was never released"
        return detector.forward(images)

    blocking = Detector(
        detector.model, detector.preprocessing, detector.hyper_parameters, detector.sha256, detector.device
    )
    blocking.forward = held
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
