"""``python -m mammodet.predict ckpt_path=FILE input=FILE_OR_FOLDER``: JSON + annotated PNG per image, summary CSV."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from mammodet.cli import command
from mammodet.data.provenance import checkpoint_provenance
from mammodet.errors import UserError
from mammodet.models.checkpoint import read_checkpoint
from mammodet.serving.inference import Detector
from mammodet.serving.predict import list_inputs, predict_files

log = logging.getLogger(__name__)

SYNTHETIC_WARNING = (
    "%s was trained only on synthetic data (mammodet.synth's mammograms, recorded in the checkpoint): "
    "its predictions on real mammograms mean nothing"
)
"""The one warning of a run whose checkpoint records ``provenance: synthetic``, whatever the input."""


@command("predict")
def main(cfg: DictConfig) -> None:
    """Predict; print where the outputs are; exit 1 naming each file that could not be read."""
    checkpoint = read_checkpoint(cfg.ckpt_path, mmap=True)  # the warning comes first, whatever the input
    if checkpoint_provenance(checkpoint.get("datamodule_hyper_parameters", {})) == "synthetic":
        log.warning(SYNTHETIC_WARNING, cfg.ckpt_path)
    del checkpoint
    try:
        list_inputs(Path(cfg.input))  # before the model loads: a wrong path or an empty folder is one line
    except FileNotFoundError as error:
        raise UserError(f"input={error}") from error
    detector = Detector.from_checkpoint(
        cfg.ckpt_path, cfg.device, score_thresh=cfg.score_thresh, max_pixels=cfg.max_pixels
    )
    summary = predict_files(detector, cfg.input, cfg.out_dir, cfg.batch_size)
    print(f"{summary.done} images predicted with model {detector.version}; summary in {summary.csv_path}")
    if summary.failed:
        for name, reason in summary.failed:
            print(f"  failed: {name}: {reason}")
        raise SystemExit(f"{len(summary.failed)} of {summary.done + len(summary.failed)} files could not be read")


if __name__ == "__main__":
    main()
