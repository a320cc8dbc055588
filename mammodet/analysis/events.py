"""Scalars of a run's TensorBoard event files as arrays per tag, and the statistics the report quotes.

Every event file under ``<run_dir>/tensorboard`` is read with TensorBoard's ``EventAccumulator`` (fit and
test write separate files). Values of one tag logged twice at the same step (a resumed run) keep the
latest written, as TensorBoard shows them.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

TENSORBOARD_SMOOTHING = 0.6
"""TensorBoard's default smoothing weight; the report's smoothed curves use it so they look the same."""


@dataclass(frozen=True)
class Series:
    """One scalar tag: ``steps`` (global step, increasing, unique), ``values`` and ``wall_times`` (s)."""

    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray

    def __len__(self) -> int:
        return int(self.steps.size)

    @property
    def final(self) -> float:
        """The last logged value."""
        return float(self.values[-1])

    def tail(self, fraction: float) -> Series:
        """The points in the last ``fraction`` of the logged step range (at least one)."""
        first, last = float(self.steps[0]), float(self.steps[-1])
        keep = self.steps >= last - fraction * (last - first)
        return Series(self.steps[keep], self.values[keep], self.wall_times[keep])


def event_files(run_dir: str | os.PathLike) -> list[Path]:
    """The run's TensorBoard event files (under ``tensorboard/`` when it exists), oldest first."""
    root = Path(run_dir)
    if (root / "tensorboard").is_dir():
        root = root / "tensorboard"
    return sorted(root.rglob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name))


def load_scalars(run_dir: str | os.PathLike) -> dict[str, Series]:
    """Every scalar tag of the run's event files: ``{tag: Series}``, all points kept (no down-sampling)."""
    points: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for path in event_files(run_dir):
        accumulator = EventAccumulator(str(path), size_guidance={SCALARS: 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            points[tag] += [(e.step, e.wall_time, e.value) for e in accumulator.Scalars(tag)]
    series = {}
    for tag, rows in points.items():
        latest: dict[int, tuple[float, float]] = {}
        for step, wall_time, value in sorted(rows, key=lambda r: (r[0], r[1])):
            latest[step] = (wall_time, value)
        steps = np.array(sorted(latest), dtype=np.int64)
        series[tag] = Series(
            steps=steps,
            values=np.array([latest[s][1] for s in steps], dtype=np.float64),
            wall_times=np.array([latest[s][0] for s in steps], dtype=np.float64),
        )
    return dict(sorted(series.items()))


def smooth(values: np.ndarray, weight: float = TENSORBOARD_SMOOTHING) -> np.ndarray:
    """TensorBoard's smoothing: a debiased exponential moving average (non-finite points keep the last value)."""
    out = np.empty(len(values), dtype=np.float64)
    last, count = 0.0, 0
    for i, value in enumerate(np.asarray(values, dtype=np.float64)):
        if np.isfinite(value):
            last = last * weight + (1 - weight) * value
            count += 1
        out[i] = last / (1 - weight**count) if count else np.nan
    return out


def epoch_at(scalars: dict[str, Series], step: int) -> int | None:
    """The epoch of ``step`` counted from 1, as the training progress log writes ``epoch e/E`` (Lightning's
    0-based ``epoch`` scalar logged at or before ``step``, plus one); None when not logged."""
    epochs = scalars.get("epoch")
    if epochs is None or not len(epochs):
        return None
    i = int(np.searchsorted(epochs.steps, step, side="right")) - 1
    return int(epochs.values[max(i, 0)]) + 1


def aligned(a: Series, b: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, values of a, values of b) at the steps both series logged."""
    steps, ia, ib = np.intersect1d(a.steps, b.steps, assume_unique=True, return_indices=True)
    return steps, a.values[ia], b.values[ib]
