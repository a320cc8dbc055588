"""``python -m mammodet.export ckpt_path=FILE out_dir=DIR``: safetensors, TorchScript, ONNX, config and model card."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from mammodet.cli import command
from mammodet.errors import UserError
from mammodet.serving.export import checkpoint_data, export_model, push_to_hub, trained_on
from mammodet.serving.inference import Detector


@command("export")
def main(cfg: DictConfig) -> None:
    """Export on the CPU; upload when ``push_to_hub`` names a repository."""
    if cfg.metrics_path and not Path(cfg.metrics_path).is_file():
        raise UserError(f"metrics_path={cfg.metrics_path}: no such file; expected a run's test_metrics.json")
    detector = Detector.from_checkpoint(cfg.ckpt_path, "cpu", score_thresh=cfg.score_thresh)
    metrics = json.loads(Path(cfg.metrics_path).read_text()) if cfg.metrics_path else None
    dataset_name = cfg.dataset_name or trained_on(checkpoint_data(cfg.ckpt_path))
    files = export_model(detector, cfg.out_dir, metrics, cfg.onnx, dataset_name)
    for kind, path in files.items():
        print(f"{kind:12s} {path}")
    if cfg.push_to_hub:
        print(f"uploaded: {push_to_hub(cfg.out_dir, cfg.push_to_hub, cfg.private)}")


if __name__ == "__main__":
    main()
