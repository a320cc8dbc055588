"""``python -m mammodet.export ckpt_path=FILE out_dir=DIR``: safetensors, TorchScript, ONNX, config and model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mammodet.cli import command
from mammodet.errors import UserError
from mammodet.serving.export import checkpoint_data, export_model, push_to_hub, trained_on
from mammodet.serving.inference import Detector


def read_metrics(path: str) -> dict[str, Any]:
    """The metrics file named by ``metrics_path``: a JSON object, else a ``UserError`` naming the file."""
    try:
        metrics = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(
            f"metrics_path={path}: no such file; expected evaluate's metrics.json or a run's test_metrics.json"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"metrics_path={path}: not readable JSON ({error})") from None
    if not isinstance(metrics, dict):
        raise UserError(f"metrics_path={path}: holds a JSON {type(metrics).__name__}, expected an object of metrics")
    return metrics


@command("export")
def main(cfg: DictConfig) -> None:
    """Export on the CPU; upload when ``push_to_hub`` names a repository."""
    metrics = read_metrics(cfg.metrics_path) if cfg.metrics_path else None
    detector = Detector.from_checkpoint(cfg.ckpt_path, "cpu", score_thresh=cfg.score_thresh)
    dataset_name = cfg.dataset_name or trained_on(checkpoint_data(cfg.ckpt_path))
    files = export_model(detector, cfg.out_dir, metrics, cfg.onnx, dataset_name, cfg.metrics_path)
    for kind, path in files.items():
        print(f"{kind:12s} {path}")
    if cfg.push_to_hub:
        print(f"uploaded: {push_to_hub(cfg.out_dir, cfg.push_to_hub, cfg.private)}")


if __name__ == "__main__":
    main()
