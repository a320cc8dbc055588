"""Training callbacks that report through ``logging``, so the terminal and ``train.log`` show the same lines:
whole-run progress with an ETA, and a model summary without the FLOPs column (always 0 for a detector,
which has no example input)."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import deque
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

log = logging.getLogger(__name__)


def _clock(seconds: float) -> str:
    """``H:MM:SS`` for a duration in seconds."""
    return str(timedelta(seconds=round(seconds)))


class RunProgress(Callback):
    """Every ``every_n_steps`` optimizer steps (default: the trainer's ``log_every_n_steps``) logs step k of N for
    the whole run, the elapsed time and an ETA from the median of the last ``window`` step times (data wait
    included, validation left out); logs each validation's duration and ``monitor`` value."""

    def __init__(self, every_n_steps: int | None = None, window: int = 50, monitor: str | None = None) -> None:
        self.every_n_steps, self.monitor = every_n_steps, monitor
        self.step_times: deque[float] = deque(maxlen=window)
        self.started = self.last_step_end = self.validation_started = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = self.last_step_end = time.monotonic()
        self.step_times.clear()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        self.step_times.append(now - self.last_step_end)
        self.last_step_end = now
        every = self.every_n_steps or trainer.log_every_n_steps or 1
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        if step == 1 or step % every == 0 or step == total:
            self._log_step(trainer, outputs, now)

    def _log_step(self, trainer: L.Trainer, outputs: Any, now: float) -> None:
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        median = statistics.median(self.step_times)
        parts = [f"step {step}"]
        if math.isfinite(total):
            parts = [f"step {step}/{int(total)} ({100 * step / total:.0f}%)"]
        if trainer.max_epochs and trainer.max_epochs > 0:
            parts.append(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")
        parts.append(f"elapsed {_clock(now - self.started)}")
        if math.isfinite(total):
            parts.append(f"ETA {_clock(median * (total - step))} (median step {median:.2f} s)")
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        log.info(" | ".join(parts))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validation_started = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        took = time.monotonic() - self.validation_started
        self.last_step_end += took  # the next step's time leaves validation out
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        shown = f": {self.monitor} {float(value):.4f}" if value is not None else ""
        log.info(f"validation at step {trainer.global_step} took {_clock(took)}{shown}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log.info(f"training ended at step {trainer.global_step} after {_clock(time.monotonic() - self.started)}")


class ParameterSummary(ModelSummary):
    """Lightning's model summary (layers to ``max_depth``, parameter counts and size) as log lines, without FLOPs."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        columns = dict(summary_data)
        rows = zip(columns["Name"], columns["Type"], columns["Params"], strict=True)
        layers = ", ".join(f"{name} ({kind}, {params.strip()})" for name, kind, params in rows)
        log.info(
            f"model: {layers}; {get_human_readable_count(total_parameters)} parameters, "
            f"{get_human_readable_count(trainable_parameters)} trainable, {model_size:.1f} MB"
        )
