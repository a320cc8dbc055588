"""``python -m mammodet.predict ckpt_path=FILE input=FILE_OR_FOLDER``: JSON + annotated PNG per image, summary CSV."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from mammodet.cli import command
from mammodet.errors import UserError
from mammodet.serving.inference import Detector
from mammodet.serving.predict import list_inputs, predict_files


@command("predict")
def main(cfg: DictConfig) -> None:
    """Predict; print where the outputs are; exit 1 naming each file that could not be read."""
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
