"""The web app and REST API (FastAPI): ``create_app(detector)``.

Routes: ``GET /`` (the page), ``GET /health``, ``GET /v1/model``, ``POST /v1/detect`` (multipart field
``file``; ``?preview=true`` adds a PNG ``data:`` URL of the image for display), OpenAPI docs at ``/docs``.

Bad input answers 4xx with ``{"error": {"code", "message"}}``, never 5xx: an upload over ``max_upload_mb``
(413, refused from its Content-Length before it is read, and counted again as the body arrives; 411 for a chunked
upload without one; 400 for one that sends both Content-Length and Transfer-Encoding), a body not
received within ``body_timeout_s`` (408), an empty file (400), content that is not DICOM, PNG or JPEG by its
magic bytes (415), too many pixels by the header (413), a file that cannot be decoded or whose decoded size
differs from its header (422). The upload is written to a temporary folder that is deleted once it is
decoded; messages and logs carry no DICOM text attribute and no file name.

Load: at most ``max_concurrent`` uploads are decoded and run through the model at once (a semaphore; in a
worker thread, off the event loop) and at most ``max_queue`` more wait, bodies read; further detection
requests answer 503 with ``Retry-After`` before their body is read. With ``api_key`` set, every ``/v1/*``
request must carry it (``X-API-Key: <key>`` or ``Authorization: Bearer <key>``, the scheme in any case; 401
otherwise). A queued request whose client has disconnected is dropped before it reaches the model. Every answer
carries Content-Security-Policy, X-Content-Type-Options: nosniff and X-Frame-Options: DENY.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi import HTTPException as FastAPIHTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mammodet.serving.inference import Detector, InputError
from mammodet.serving.page import INDEX_HTML, PAGE_CSP
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


DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "frame-ancestors 'none'"
)
"""``/docs`` and ``/redoc``: FastAPI's pages load Swagger UI / ReDoc from jsDelivr."""
API_CSP = "default-src 'none'; frame-ancestors 'none'"
"""Everything else (JSON): nothing may load or frame it."""


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one shape of every error answer."""
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}}, headers=headers)


class Guard:
    """ASGI middleware run before any route: security headers, API key, upload size, admission, body timeout.

    Everything here is decided from the request line and headers, before the body is read. Detection requests
    beyond ``max_active`` (running + queued) answer 503 with ``Retry-After``; an admitted body must arrive within
    ``body_timeout_s`` seconds (408 otherwise), so a client sending less than its Content-Length cannot hold a
    slot.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        api_key: str | None,
        max_active: int,
        retry_after_s: int,
        body_timeout_s: float,
    ) -> None:
        self.app, self.max_bytes, self.api_key = app, max_bytes, api_key
        self.max_active, self.retry_after_s, self.body_timeout_s = max_active, retry_after_s, body_timeout_s
        self.active = 0  # detection requests admitted and not finished (one event loop: no lock needed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        send = self._with_security_headers(send, path)
        refusal = self._refusal(method, path, Headers(scope=scope))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if not (method == "POST" and path == "/v1/detect"):
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_active:
            busy = error_response(
                503,
                "busy",
                f"{self.active} detections running or queued (the limit); retry in {self.retry_after_s} s",
                headers={"Retry-After": str(self.retry_after_s)},
            )
            await busy(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, self._timed(receive), send)
        finally:
            self.active -= 1

    def _refusal(self, method: str, path: str, headers: Headers) -> JSONResponse | None:
        """The answer for a request refused from its headers alone, or None."""
        if (
            self.api_key is not None
            and path.startswith("/v1/")
            and not hmac.compare_digest(presented_key(headers).encode(), self.api_key.encode())
        ):
            return error_response(
                401,
                "unauthorized",
                "this server needs an API key: send it as X-API-Key: <key> or Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if method == "POST":
            length = headers.get("content-length", "0")
            if "content-length" in headers and "transfer-encoding" in headers:  # RFC 9112 6.1: ambiguous framing
                return error_response(
                    400, "bad_request", "send either Content-Length or Transfer-Encoding, not both (ambiguous length)"
                )
            if "transfer-encoding" in headers:
                return error_response(411, "length_required", "send the upload with a Content-Length header")
            if not length.isdigit():
                return error_response(400, "bad_request", "invalid Content-Length header")
            if int(length) > self.max_bytes:
                return error_response(
                    413, "too_large", f"upload of {int(length)} bytes is over the limit of {self.max_bytes} bytes"
                )
        return None

    def _timed(self, receive: Receive) -> Receive:
        """``receive`` with one deadline for the whole body (408 once it has passed) and the bytes it actually
        delivers counted against ``max_bytes`` (413), whatever the headers said; no deadline after its last chunk."""
        deadline = time.monotonic() + self.body_timeout_s
        body_done = False
        received = 0

        async def timed_receive() -> Message:
            nonlocal body_done, received
            if body_done:  # e.g. a disconnect check while the model runs: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                raise FastAPIHTTPException(
                    408, f"the upload did not arrive within {self.body_timeout_s:g} s (body_timeout_s)"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise FastAPIHTTPException(413, f"upload of more than {self.max_bytes} bytes is over the limit")
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return timed_receive

    @staticmethod
    def _with_security_headers(send: Send, path: str) -> Send:
        """``send`` adding Content-Security-Policy, X-Content-Type-Options and X-Frame-Options to the answer."""
        if path == "/":
            policy = PAGE_CSP
        elif path.startswith(("/docs", "/redoc")):
            policy = DOCS_CSP
        else:
            policy = API_CSP
        extra = [
            (b"content-security-policy", policy.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
        ]

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return secured_send


def presented_key(headers: Headers) -> str:
    """The API key a request carries: ``X-API-Key``, else ``Authorization: Bearer`` (scheme case-insensitive)."""
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def create_app(
    detector: Detector,
    max_upload_mb: float = 100.0,
    preview_max_side: int = 1024,
    *,
    api_key: str | None = None,
    max_concurrent: int = 1,
    max_queue: int = 8,
    retry_after_s: int = 5,
    body_timeout_s: float = 30.0,
) -> FastAPI:
    """The app around an already loaded ``detector``; the limits are described in the module docstring."""
    if max_concurrent < 1 or max_queue < 0:
        raise ValueError(f"max_concurrent must be >= 1 and max_queue >= 0, got {max_concurrent}, {max_queue}")
    max_bytes = int(max_upload_mb * 1024 * 1024)
    app = FastAPI(
        title="mammodet",
        version=detector.version,
        description="Breast lesion detection in mammograms. Research use only, not for clinical use.",
    )
    app.add_middleware(
        Guard,
        max_bytes=max_bytes,
        api_key=api_key or None,
        max_active=max_concurrent + max_queue,
        retry_after_s=retry_after_s,
        body_timeout_s=body_timeout_s,
    )
    slots = asyncio.Semaphore(max_concurrent)  # decodes + forwards at once; the rest wait here, bodies read

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
        limits = {
            "max_upload_bytes": max_bytes,
            "max_pixels": detector.max_pixels,
            "max_concurrent": max_concurrent,
            "max_queue": max_queue,
            "body_timeout_s": body_timeout_s,
        }
        return {**detector.info(), "limits": limits}

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
        responses={status: {"model": ErrorResponse} for status in (400, 401, 408, 411, 413, 415, 422, 503)},
    )
    async def detect(
        request: Request,
        file: Annotated[UploadFile, File(description="a DICOM, PNG or JPEG mammogram")],
        preview: Annotated[bool, Query(description="add the image as a PNG data: URL (for display)")] = False,
    ) -> dict[str, Any] | JSONResponse:
        """Detect lesions; boxes in the uploaded image's pixels."""
        data = await file.read()
        await file.close()
        async with slots:
            if await request.is_disconnected():  # nobody waits for this answer: leave the model to the others
                log.info("detect: dropped, the client disconnected while queued")
                return error_response(499, "client_closed", "the client disconnected before its turn")
            return await run_in_threadpool(analyse, data, preview)

    return app
