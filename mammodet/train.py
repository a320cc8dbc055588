"""``python -m mammodet.train experiment=NAME``: train a detector, then test its best checkpoint.

The run directory (``hydra.run.dir``) receives ``checkpoints/last.ckpt`` and the best checkpoint by
``val/map_50``, TensorBoard logs, ``config.yaml`` (resolved) and ``test_metrics.json``.
``ckpt_path=<file>`` resumes model, optimizer, scheduler, scaler and step. Returns the optimised metric
so Hydra sweepers (``-m``, Optuna) can use it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from mammodet.cli import command
from mammodet.config import check_arguments
from mammodet.models.checkpoint import read_checkpoint
from mammodet.run_logging import route_run_logs

log = logging.getLogger(__name__)


def resolve_precision(precision: Any) -> Any:
    """``auto``: 16-bit mixed precision on a CUDA GPU, 32-bit on the CPU."""
    if precision == "auto":
        return "16-mixed" if torch.cuda.is_available() else "32-true"
    return precision


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a ``_target_`` (callbacks, loggers)."""
    return [hydra.utils.instantiate(c) for c in (group or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


def plain_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """Logged metrics as plain floats without their ``test/`` (or other) prefix."""
    out = {}
    for name, value in metrics.items():
        if name.startswith(prefix):
            out[name[len(prefix) :]] = float(value.item() if isinstance(value, torch.Tensor) else value)
    return dict(sorted(out.items()))


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit and test as configured; returns (metrics, objects) like lightning-hydra-template's ``train``.

    Bad settings fail first, naming their key (``UserError``): a value of the wrong type, a resume checkpoint
    that cannot be read or has other classes, a missing data path; the run folder is made only then.
    """
    check_arguments(cfg.data, "data")
    check_arguments(cfg.model, "model")
    check_arguments(cfg.trainer, "trainer", {"precision": resolve_precision(cfg.trainer.precision)})
    if cfg.get("ckpt_path"):
        read_checkpoint(cfg.ckpt_path, mmap=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if cfg.get("synthesize"):  # only the demos ask: make the synthetic dataset unless it is already there
        hydra.utils.call(cfg.synthesize)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.check_inputs()  # a missing path fails now, naming its key, not after the model is built
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, precision=resolve_precision(cfg.trainer.precision)
    )

    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
        best = trainer.checkpoint_callback
        if best is not None and best.monitor and best.best_model_score is not None:
            metrics[best.monitor] = float(best.best_model_score)  # sweepers optimise the best epoch, not the last
    if cfg.get("test", True):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint was saved; testing the current weights")
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        test_metrics = plain_metrics(results[0] if results else {}, "test/")
        test_metrics["checkpoint"] = best
        if trainer.is_global_zero:
            (output_dir / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2))
            shown = ", ".join(f"{k} {test_metrics[k]:.3f}" for k in ("map_50", "map", "f1_macro") if k in test_metrics)
            log.info(f"test: {shown} (every value in {output_dir / 'test_metrics.json'})")
        metrics.update({f"test/{k}": v for k, v in test_metrics.items() if isinstance(v, float)})
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}


@command("train")
def main(cfg: DictConfig) -> float | None:
    """Train; return ``optimized_metric`` for sweepers."""
    route_run_logs()
    metrics, _ = train(cfg)
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:  # e.g. a run shorter than the validation interval: not an error
        log.warning("optimized_metric %r was not logged (no validation ran?); returning None to the sweeper", name)
        return None
    return metrics[name]


if __name__ == "__main__":
    main()
