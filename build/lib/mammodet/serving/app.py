"""The web app and REST API (FastAPI): ``create_app(detector)``.

Routes: ``GET /`` (the page), ``GET /health``, ``GET /v1/model``, ``POST /v1/detect`` (multipart field
``file``; ``?preview=true`` adds a PNG ``data:`` URL of the image for display), OpenAPI docs at ``/docs``.

Bad input answers 4xx with ``{"error": {"code", "message"}}``, never 5xx: an upload over ``max_upload_mb``
(413, refused from its Content-Length before it is read; 411 for a chunked upload without one), an empty
file (400), content that is not DICOM, PNG or JPEG by its magic bytes (415), too many pixels (413), a file
that cannot be decoded (truncated, unsupported transfer syntax, ...: 422). The upload is written to a
temporary folder that is deleted once it is decoded; messages and logs carry no DICOM text attribute and no
file name. Decoding and the model run in a worker thread, off the event loop; the detector runs one forward
at a time.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from mammodet.serving.inference import Detector, InputError
from mammodet.serving.page import INDEX_HTML
from mammodet.serving.render import preview_data_url

log = logging.getLogger(__name__)

ERROR_STATUS = {"empty": 400, "unsupported": 415, "too_large": 413, "invalid": 422}
"""HTTP status of each ``InputError.kind``."""


class Detection(BaseModel):
    label: str = Field(description="calcification, mass_low or mass_high")
    score: float
    box: list[float] = Field(description="[x0, y0, x1, y1] in the uploaded image's pixels")


class ImageSize(BaseModel):
    width: int
    height: int


class ModelRef(BaseModel):
    name: str
    version: str
    arch: str


class DetectResponse(BaseModel):
    detections: list[Detection] = Field(description="every detection the model keeps, best score first")
    image: ImageSize
    model: ModelRef
    preview: str | None = Field(None, description="with ?preview=true: the image as a PNG data: URL")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """The one shape of every error answer."""
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def create_app(detector: Detector, max_upload_mb: float = 100.0, preview_max_side: int = 1024) -> FastAPI:
    """The app around an already loaded ``detector``; uploads over ``max_upload_mb`` MiB are refused."""
    max_bytes = int(max_upload_mb * 1024 * 1024)
    app = FastAPI(
        title="mammodet",
        version=detector.version,
        description="Breast lesion detection in mammograms. Research use only, not for clinical use.",
    )

    @app.middleware("http")
    async def refuse_large_uploads(request: Request, call_next: Any) -> Response:
        """Refuse a POST body over the limit from its Content-Length, before any of it is read."""
        if request.method == "POST":
            length = request.headers.get("content-length", "0")
            if "content-length" not in request.headers and "transfer-encoding" in request.headers:
                return error_response(411, "length_required", "send the upload with a Content-Length header")
            if not length.isdigit():
                return error_response(400, "bad_request", "invalid Content-Length header")
            if int(length) > max_bytes:
                return error_response(
                    413, "too_large", f"upload of {int(length)} bytes is over the limit of {max_bytes} bytes"
                )
        return await call_next(request)

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        log.info("upload refused: %s", exc.kind)
        return error_response(ERROR_STATUS[exc.kind], exc.kind, exc.reason)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, "invalid_request", problems)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, f"http_{exc.status_code}", str(exc.detail))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return INDEX_HTML

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the model is loaded."""
        return {"status": "ok", "version": detector.version}

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        """Version, classes, preprocessing, thresholds and upload limits."""
        return {**detector.info(), "limits": {"max_upload_bytes": max_bytes, "max_pixels": detector.max_pixels}}

    def analyse(data: bytes, preview: bool) -> dict[str, Any]:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="mammodet-") as folder:
            path = Path(folder) / "upload"
            path.write_bytes(data)
            prepared = detector.prepare(path)
        detections = detector.run([prepared])[0]
        report = detector.report(detections)
        if preview:
            report["preview"] = preview_data_url(prepared.image, preview_max_side)
        log.info(
            "detect: %d bytes, %d detections, %.0f ms",
            len(data),
            len(detections.scores),
            (time.perf_counter() - started) * 1000,
        )
        return report

    @app.post(
        "/v1/detect",
        response_model=DetectResponse,
        response_model_exclude_none=True,
        responses={status: {"model": ErrorResponse} for status in (400, 411, 413, 415, 422)},
    )
    async def detect(
        file: Annotated[UploadFile, File(description="a DICOM, PNG or JPEG mammogram")],
        preview: Annotated[bool, Query(description="add the image as a PNG data: URL (for display)")] = False,
    ) -> dict[str, Any]:
        """Detect lesions; boxes in the uploaded image's pixels."""
        data = await file.read()
        await file.close()
        return await run_in_threadpool(analyse, data, preview)

    return app
