"""Numbers the report quotes, computed from the scalars: per-tag statistics, peaks, trends and timing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mammodet.analysis.events import Series, aligned, epoch_at

LOSS_TAGS = ("train/loss_classifier", "train/loss_box_reg", "train/loss_objectness", "train/loss_rpn_box_reg")
TOTAL_LOSS = "train/loss"
ACCURACY_PREFIX = "train/fast_rcnn/"
LR_TAG = "train/lr"
WAIT_TAG = "train/data_wait_s"
STEP_TAG = "train/step_s"
NONFINITE_TAG = "train/nonfinite_skipped"
PRIMARY_VAL = "val/map_50"
STATISTICS = ("n", "first", "final", "mean", "min", "max", "tail_mean")
"""Per-tag statistics written to the CSV; ``tail_mean`` is the mean over the last ``tail_fraction`` of steps."""


def describe(series: Series, tail_fraction: float) -> dict[str, float]:
    """``STATISTICS`` of one tag (plus the first and final steps)."""
    values = series.values
    return {
        "n": float(len(series)),
        "first": float(values[0]),
        "final": float(values[-1]),
        "mean": float(values.mean()),
        "min": float(values.min()),
        "max": float(values.max()),
        "tail_mean": float(series.tail(tail_fraction).values.mean()),
        "first_step": float(series.steps[0]),
        "final_step": float(series.steps[-1]),
    }


@dataclass(frozen=True)
class Peak:
    """Where a validation metric was highest, and where it ended."""

    tag: str
    value: float
    step: int
    epoch: int | None
    final: float
    final_step: int
    final_epoch: int | None
    evaluations: int


def peak(scalars: dict[str, Series], tag: str = PRIMARY_VAL) -> Peak | None:
    """The highest value of ``tag`` (first one on ties); None when it was never logged."""
    series = scalars.get(tag)
    if series is None or not len(series):
        return None
    i = int(np.nanargmax(series.values))
    step, final_step = int(series.steps[i]), int(series.steps[-1])
    return Peak(
        tag=tag,
        value=float(series.values[i]),
        step=step,
        epoch=epoch_at(scalars, step),
        final=series.final,
        final_step=final_step,
        final_epoch=epoch_at(scalars, final_step),
        evaluations=len(series),
    )


@dataclass(frozen=True)
class Trend:
    """Mean of a tag over the last ``fraction`` of steps against the window of equal length before it."""

    tag: str
    fraction: float
    previous_mean: float
    tail_mean: float
    change: float
    """``tail_mean - previous_mean``."""
    standard_error: float
    """Standard error of ``change`` (the two windows' points taken as independent)."""

    @property
    def relative_change(self) -> float:
        return self.change / abs(self.previous_mean) if self.previous_mean else math.nan

    @property
    def direction(self) -> str:
        """``falling`` or ``rising`` when the change exceeds two standard errors, else ``flat``."""
        if self.change < -2 * self.standard_error:
            return "falling"
        if self.change > 2 * self.standard_error:
            return "rising"
        return "flat"


def trend(scalars: dict[str, Series], tag: str, fraction: float) -> Trend | None:
    """The :class:`Trend` of ``tag``; None when it is missing or has fewer than two points in either window."""
    series = scalars.get(tag)
    if series is None or len(series) < 4:
        return None
    first, last = float(series.steps[0]), float(series.steps[-1])
    width = fraction * (last - first)
    tail = series.values[series.steps >= last - width]
    before = series.values[(series.steps < last - width) & (series.steps >= last - 2 * width)]
    if tail.size < 2 or before.size < 2:
        return None
    change = float(tail.mean() - before.mean())
    error = math.sqrt(tail.var(ddof=1) / tail.size + before.var(ddof=1) / before.size)
    return Trend(tag, fraction, float(before.mean()), float(tail.mean()), change, error)


@dataclass(frozen=True)
class Timing:
    """Data wait against compute per training step, at the steps where both were logged."""

    steps: int
    median_wait_s: float
    median_compute_s: float
    mean_wait_s: float
    mean_compute_s: float
    median_wait_share: float
    """Median over steps of ``wait / (wait + compute)``."""
    total_wait_share: float
    """Summed wait over summed wait + compute."""
    images_per_s: float | None
    """``batch_size / median(wait + compute)`` when the batch size is known."""


def timing(scalars: dict[str, Series], batch_size: int | None = None) -> Timing | None:
    """:class:`Timing` from ``train/data_wait_s`` and ``train/step_s``; None when either is missing."""
    if WAIT_TAG not in scalars or STEP_TAG not in scalars:
        return None
    _, wait, compute = aligned(scalars[WAIT_TAG], scalars[STEP_TAG])
    if not wait.size:
        return None
    total = wait + compute
    return Timing(
        steps=int(wait.size),
        median_wait_s=float(np.median(wait)),
        median_compute_s=float(np.median(compute)),
        mean_wait_s=float(wait.mean()),
        mean_compute_s=float(compute.mean()),
        median_wait_share=float(np.median(wait / total)),
        total_wait_share=float(wait.sum() / total.sum()),
        images_per_s=float(batch_size / np.median(total)) if batch_size else None,
    )


def training_wall_s(scalars: dict[str, Series]) -> float | None:
    """Seconds between the first and the last ``train/`` point (TensorBoard wall times)."""
    times = [s.wall_times for tag, s in scalars.items() if tag.startswith("train/") and len(s)]
    if not times:
        return None
    return float(max(t.max() for t in times) - min(t.min() for t in times))


@dataclass(frozen=True)
class Schedule:
    """The learning-rate schedule as logged."""

    first: float
    peak: float
    peak_step: int
    final: float
    final_step: int


def schedule(scalars: dict[str, Series]) -> Schedule | None:
    """:class:`Schedule` of ``train/lr``; None when not logged."""
    lr = scalars.get(LR_TAG)
    if lr is None or not len(lr):
        return None
    i = int(np.argmax(lr.values))
    return Schedule(float(lr.values[0]), float(lr.values[i]), int(lr.steps[i]), lr.final, int(lr.steps[-1]))
