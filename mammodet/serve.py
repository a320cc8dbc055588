"""``python -m mammodet.serve ckpt_path=FILE port=8000``: the web page and REST API (FastAPI + uvicorn)."""

from __future__ import annotations

import ipaddress
import os

import uvicorn
from omegaconf import DictConfig

from mammodet.cli import command
from mammodet.errors import UserError
from mammodet.serving.app import create_app
from mammodet.serving.inference import Detector

API_KEY_ENV = "MAMMODET_API_KEY"
"""Environment variable read for the API key when ``api_key`` is not set in the config."""


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def resolve_api_key(host: str, api_key: str | None, allow_no_api_key: bool = False) -> str | None:
    """The API key to require on ``/v1/*`` (config, else ``MAMMODET_API_KEY``), or None.

    Serving beyond loopback without a key exposes the model to the network, so it is refused unless
    ``allow_no_api_key`` says it is meant (behind an authenticating proxy, say).
    """
    key = api_key or os.environ.get(API_KEY_ENV) or None
    if key is None and not is_loopback(host) and not allow_no_api_key:
        raise UserError(
            f"refusing to listen on {host} without an API key: set api_key=... or the {API_KEY_ENV} "
            "environment variable (clients send it as X-API-Key), or allow_no_api_key=true to serve without one"
        )
    return key


@command("serve")
def main(cfg: DictConfig) -> None:
    """Check the bind and key, load the model once, then serve until interrupted."""
    api_key = resolve_api_key(cfg.host, cfg.api_key, cfg.allow_no_api_key)
    detector = Detector.from_checkpoint(
        cfg.ckpt_path, cfg.device, score_thresh=cfg.score_thresh, max_pixels=cfg.max_pixels
    )
    app = create_app(
        detector,
        max_upload_mb=cfg.max_upload_mb,
        preview_max_side=cfg.preview_max_side,
        api_key=api_key,
        max_concurrent=cfg.max_concurrent,
        max_queue=cfg.max_queue,
        retry_after_s=cfg.retry_after_s,
        body_timeout_s=cfg.body_timeout_s,
    )
    print(f"mammodet {detector.version} on http://{cfg.host}:{cfg.port}/ (API docs at /docs)")
    if api_key:
        print("/v1/* requires the API key (X-API-Key header)")
    uvicorn.run(app, host=cfg.host, port=cfg.port)


if __name__ == "__main__":
    main()
