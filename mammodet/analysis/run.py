"""One training run as the analysis reads it: :class:`Run` (event files, config, dataset statistics, evaluation
results) and :class:`Analysis`, the numbers computed from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mammodet.analysis.dataset import SplitStats, annotations_written, resolve_image_dir, split_statistics
from mammodet.analysis.evaluation import Evaluation, load_run_evaluation
from mammodet.analysis.events import Series, epoch_at, event_files, load_scalars
from mammodet.analysis.summary import (
    TOTAL_LOSS,
    Peak,
    Schedule,
    Timing,
    Trend,
    describe,
    peak,
    schedule,
    timing,
    training_wall_s,
    trend,
)


def is_run_dir(path: str | os.PathLike) -> bool:
    """A training run directory: it holds ``tensorboard/`` or ``config.yaml``."""
    path = Path(path)
    return (path / "tensorboard").is_dir() or (path / "config.yaml").is_file()


@dataclass(frozen=True)
class Run:
    """What the report reads about one run."""

    run_dir: Path
    name: str
    config: dict[str, Any]
    scalars: dict[str, Series]
    event_files: tuple[Path, ...]
    splits: list[SplitStats]
    image_dir: Path | None
    data_written: float | None
    """When the COCO files read for ``splits`` were last written (POSIX seconds)."""
    evaluation: Evaluation | None


def load_run(run_dir: str | os.PathLike, metrics: str | os.PathLike | None = None, name: str | None = None) -> Run:
    """Read a run directory: event files, ``config.yaml``, dataset statistics and evaluation results."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run directory not found")
    files = tuple(event_files(run_dir))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no TensorBoard event files (was the run made with logger=none?)")
    config_path = run_dir / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(config_path)) if config_path.is_file() else {}
    image_dir = resolve_image_dir((config.get("data") or {}).get("image_dir"), run_dir)
    return Run(
        run_dir=run_dir,
        name=name or run_dir.name,
        config=config,
        scalars=load_scalars(run_dir),
        event_files=files,
        splits=split_statistics(image_dir) if image_dir else [],
        image_dir=image_dir,
        data_written=annotations_written(image_dir) if image_dir else None,
        evaluation=load_run_evaluation(run_dir, metrics),
    )


@dataclass(frozen=True)
class Analysis:
    """The numbers computed from a :class:`Run`."""

    tail_fraction: float
    statistics: dict[str, dict[str, float]]
    """:func:`describe` of every ``train/`` tag."""
    validation: dict[str, Peak]
    """:func:`peak` of every ``val/`` tag."""
    loss_trend: Trend | None
    timing: Timing | None
    schedule: Schedule | None
    wall_s: float | None
    started: float | None
    """The first logged point's wall time (POSIX seconds)."""
    steps: int | None
    """The last global step logged (test metrics are logged at the step training ended)."""
    epochs: int | None
    """Epochs trained: the (1-based) epoch of the last training point."""
    max_epochs: int | None
    """``trainer.max_epochs`` of the run's config (the ``E`` of ``epoch e/E``); None when unset or unlimited."""


def analyse(run: Run, tail_fraction: float = 0.1) -> Analysis:
    """Per-tag statistics, validation peaks, loss trend, timing and schedule of ``run``."""
    scalars = run.scalars
    train_tags = [t for t in scalars if t.startswith("train/") and len(scalars[t])]
    val_tags = [t for t in scalars if t.startswith("val/")]
    last_train_step = max((int(scalars[t].steps[-1]) for t in train_tags), default=None)
    max_epochs = (run.config.get("trainer") or {}).get("max_epochs")
    return Analysis(
        tail_fraction=tail_fraction,
        statistics={t: describe(scalars[t], tail_fraction) for t in train_tags},
        validation={t: p for t in val_tags if (p := peak(scalars, t)) is not None},
        loss_trend=trend(scalars, TOTAL_LOSS, tail_fraction),
        timing=timing(scalars, (run.config.get("data") or {}).get("batch_size")),
        schedule=schedule(scalars),
        wall_s=training_wall_s(scalars),
        started=min((float(s.wall_times.min()) for s in scalars.values() if len(s)), default=None),
        steps=max((int(s.steps[-1]) for s in scalars.values() if len(s)), default=None),
        epochs=epoch_at(scalars, last_train_step) if last_train_step is not None else None,
        max_epochs=max_epochs if isinstance(max_epochs, int) and max_epochs > 0 else None,
    )
