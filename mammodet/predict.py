"""``python -m mammodet.predict ckpt_path=FILE input=FILE_OR_FOLDER``: JSON + annotated PNG per image, summary CSV."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from mammodet.config import CONFIG_DIR
from mammodet.serving.inference import Detector
from mammodet.serving.predict import predict_files

log = logging.getLogger(__name__)

SYNTHETIC_WARNING = (
    "%s was trained only on synthetic data (mammodet.synth's mammograms, recorded in the checkpoint): "
    "its predictions on real mammograms mean nothing"
)
"""The one warning of a run whose checkpoint records ``provenance: synthetic``, whatever the input."""


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    """Predict; print where the outputs are; exit 1 naming each file that could not be read."""
    detector = Detector.from_checkpoint(
        cfg.ckpt_path, cfg.device, score_thresh=cfg.score_thresh, max_pixels=cfg.max_pixels
    )
    if detector.provenance == "synthetic":
        log.warning(SYNTHETIC_WARNING, cfg.ckpt_path)
    summary = predict_files(detector, cfg.input, cfg.out_dir, cfg.batch_size)
    print(f"{summary.done} images predicted with model {detector.version}; summary in {summary.csv_path}")
    if summary.failed:
        for name, reason in summary.failed:
            print(f"  failed: {name}: {reason}")
        raise SystemExit(f"{len(summary.failed)} of {summary.done + len(summary.failed)} files could not be read")


if __name__ == "__main__":
    main()
