"""``python -m mammodet.serve ckpt_path=FILE port=8000``: the web page and REST API (FastAPI + uvicorn)."""

from __future__ import annotations

import hydra
import uvicorn
from omegaconf import DictConfig

from mammodet.config import CONFIG_DIR
from mammodet.serving.app import create_app
from mammodet.serving.inference import Detector


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve")
def main(cfg: DictConfig) -> None:
    """Load the model once, then serve until interrupted."""
    detector = Detector.from_checkpoint(
        cfg.ckpt_path, cfg.device, score_thresh=cfg.score_thresh, max_pixels=cfg.max_pixels
    )
    app = create_app(detector, max_upload_mb=cfg.max_upload_mb, preview_max_side=cfg.preview_max_side)
    print(f"mammodet {detector.version} on http://{cfg.host}:{cfg.port}/ (API docs at /docs)")
    uvicorn.run(app, host=cfg.host, port=cfg.port)


if __name__ == "__main__":
    main()
