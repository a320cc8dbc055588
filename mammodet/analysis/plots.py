"""The report's figures, drawn on ``matplotlib.figure.Figure`` objects (no pyplot state, any backend).

Each ``plot_*`` returns a figure, or None when the run lacks what it would show; :func:`save` writes a PNG.
Curves show the raw points faintly and TensorBoard's smoothing on top.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mammodet.analysis.dataset import SplitStats
from mammodet.analysis.evaluation import Evaluation
from mammodet.analysis.events import TENSORBOARD_SMOOTHING, Series, aligned, epoch_at, smooth
from mammodet.analysis.summary import ACCURACY_PREFIX, LOSS_TAGS, LR_TAG, PRIMARY_VAL, STEP_TAG, TOTAL_LOSS, WAIT_TAG

DPI = 110
WAIT_COLOR, COMPUTE_COLOR = "tab:orange", "tab:blue"


def save(figure: Figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` as a PNG and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _curve(ax: Axes, series: Series, label: str, color: str | None, smoothing: float) -> None:
    """Raw points (faint) and the smoothed curve (solid) of one tag."""
    line = ax.plot(series.steps, series.values, color=color, alpha=0.3, linewidth=0.8)[0]
    ax.plot(series.steps, smooth(series.values, smoothing), color=line.get_color(), linewidth=1.6, label=label)


def _short(tag: str) -> str:
    return tag.split("/", 1)[1] if "/" in tag else tag


def plot_losses(scalars: dict[str, Series], smoothing: float = TENSORBOARD_SMOOTHING) -> Figure | None:
    """The four loss components and the total, raw and smoothed, and the smoothed components on one log axis."""
    tags = [t for t in (*LOSS_TAGS, TOTAL_LOSS) if t in scalars and len(scalars[t])]
    if not tags:
        return None
    figure = Figure(figsize=(13, 7), layout="constrained")
    axes = figure.subplots(2, 3).ravel()
    for ax, tag in zip(axes, tags, strict=False):
        _curve(ax, scalars[tag], "smoothed", None, smoothing)
        ax.set_title(tag)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    components = [t for t in LOSS_TAGS if t in tags]
    ax = axes[5]
    for tag in components:
        series = scalars[tag]
        ax.plot(series.steps, np.clip(smooth(series.values, smoothing), 1e-6, None), label=_short(tag))
    ax.set_yscale("log")
    ax.set_title("components, smoothed (log scale)")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3, which="both")
    if components:
        ax.legend(fontsize=8)
    for ax in axes[len(tags) : 5]:
        ax.set_visible(False)
    figure.suptitle(f"Training losses (faint: raw, solid: smoothed with weight {smoothing})")
    return figure


def plot_accuracy(scalars: dict[str, Series], smoothing: float = TENSORBOARD_SMOOTHING) -> Figure | None:
    """ROI-head (Fast R-CNN) classification accuracy on sampled proposals: all, foreground, false negatives."""
    tags = [t for t in scalars if t.startswith(ACCURACY_PREFIX) and len(scalars[t])]
    if not tags:
        return None
    figure = Figure(figsize=(9, 4.5), layout="constrained")
    ax = figure.subplots()
    for tag in tags:
        _curve(ax, scalars[tag], _short(tag), None, smoothing)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("fraction of sampled proposals")
    ax.set_title("ROI-head accuracy (faint: raw, solid: smoothed)")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def plot_learning_rate(scalars: dict[str, Series]) -> Figure | None:
    """The learning rate at every logged step, its peak marked."""
    lr = scalars.get(LR_TAG)
    if lr is None or not len(lr):
        return None
    figure = Figure(figsize=(9, 4), layout="constrained")
    ax = figure.subplots()
    ax.plot(lr.steps, lr.values, color="tab:green")
    i = int(np.argmax(lr.values))
    ax.scatter([lr.steps[i]], [lr.values[i]], color="black", zorder=3)
    ax.annotate(
        f"peak {lr.values[i]:.3g} at step {lr.steps[i]}",
        (lr.steps[i], lr.values[i]),
        xytext=(8, -14),
        textcoords="offset points",
    )
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning-rate schedule")
    ax.grid(alpha=0.3)
    return figure


def plot_timing(scalars: dict[str, Series]) -> Figure | None:
    """The bottleneck chart: data wait and compute per logged step (stacked), and their shares."""
    if WAIT_TAG not in scalars or STEP_TAG not in scalars:
        return None
    steps, wait, compute = aligned(scalars[WAIT_TAG], scalars[STEP_TAG])
    if not steps.size:
        return None
    figure = Figure(figsize=(13, 4.5), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[2.2, 1])
    left.fill_between(steps, 0, wait, step="mid", color=WAIT_COLOR, alpha=0.8, label="data wait")
    left.fill_between(steps, wait, wait + compute, step="mid", color=COMPUTE_COLOR, alpha=0.6, label="compute")
    left.set_xlabel("step")
    left.set_ylabel("seconds")
    left.set_title("Time per logged training step")
    left.legend(loc="upper right")
    left.grid(alpha=0.3)
    rows = {
        "median step": (float(np.median(wait)), float(np.median(compute))),
        "mean step": (float(wait.mean()), float(compute.mean())),
    }
    for y, (w, c) in enumerate(rows.values()):
        share = w / (w + c) if w + c else 0.0
        right.barh(y, w, color=WAIT_COLOR)
        right.barh(y, c, left=w, color=COMPUTE_COLOR)
        right.text(w + c, y, f" {share:.0%} waiting", va="center")
    right.set_yticks(range(len(rows)), list(rows))
    right.set_xlabel("seconds")
    right.set_xlim(0, max(w + c for w, c in rows.values()) * 1.45)
    right.set_title(f"Data wait vs compute ({steps.size} steps)")
    return figure


def _epochs_or_steps(scalars: dict[str, Series], series: Series) -> tuple[np.ndarray, str]:
    """x values for validation curves: epochs when Lightning logged them, else steps."""
    if "epoch" not in scalars:
        return series.steps, "step"
    return np.array([epoch_at(scalars, int(s)) for s in series.steps]), "epoch"


def plot_validation(scalars: dict[str, Series]) -> Figure | None:
    """Validation mAP (all, @0.50, @0.75) and per-class AP@0.50 per evaluation, the peak of ``val/map_50`` marked."""
    overall = [t for t in ("val/map", PRIMARY_VAL, "val/map_75") if t in scalars]
    per_class = sorted(t for t in scalars if t.startswith("val/ap_50/"))
    if not overall and not per_class:
        return None
    figure = Figure(figsize=(13, 4.5), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    xlabel = "step"
    for ax, tags in ((left, overall), (right, per_class)):
        for tag in tags:
            series = scalars[tag]
            x, xlabel = _epochs_or_steps(scalars, series)
            values = np.where(series.values < 0, np.nan, series.values)  # -1: class absent from validation
            ax.plot(x, values, marker="o", markersize=3, label=_short(tag))
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if tags:
            ax.legend(fontsize=8)
    if PRIMARY_VAL in scalars:
        series = scalars[PRIMARY_VAL]
        x, _ = _epochs_or_steps(scalars, series)
        i = int(np.nanargmax(series.values))
        left.scatter([x[i]], [series.values[i]], s=80, facecolors="none", edgecolors="black", zorder=3)
        left.annotate(
            f"peak {series.values[i]:.3f}", (x[i], series.values[i]), xytext=(6, 6), textcoords="offset points"
        )
    left.set_title("Validation mAP")
    right.set_title("Validation AP@0.50 per class")
    left.set_ylabel("AP")
    return figure


def plot_class_distribution(stats: Sequence[SplitStats]) -> Figure | None:
    """Lesions per class and split (grouped bars) and images with and without lesions per split."""
    if not stats:
        return None
    classes = list(stats[0].lesions)
    figure = Figure(figsize=(13, 4.5), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[1.6, 1])
    width = 0.8 / len(classes)
    x = np.arange(len(stats))
    for k, name in enumerate(classes):
        counts = [s.lesions[name] for s in stats]
        bars = left.bar(x + (k - (len(classes) - 1) / 2) * width, counts, width, label=name)
        left.bar_label(bars, fontsize=8)
    left.set_xticks(x, [s.split for s in stats])
    left.set_ylabel("lesions")
    left.set_title("Lesions per class and split")
    left.legend()
    with_lesions = [s.images_with_lesions for s in stats]
    without = [s.images - s.images_with_lesions for s in stats]
    right.bar(x, with_lesions, label="with lesions", color="tab:red", alpha=0.7)
    right.bar(x, without, bottom=with_lesions, label="without lesions", color="tab:gray", alpha=0.6)
    for i, s in enumerate(stats):
        right.text(i, s.images, str(s.images), ha="center", va="bottom", fontsize=8)
    right.set_xticks(x, [s.split for s in stats])
    right.set_ylim(0, max(s.images for s in stats) * 1.15 + 1)
    left.set_ylim(0, max(max(s.lesions.values()) for s in stats) * 1.15 + 1)
    right.set_ylabel("images")
    right.set_title("Images per split")
    right.legend()
    return figure


def _bars_with_intervals(
    ax: Axes, x: np.ndarray, values: Sequence[float], intervals: Sequence[tuple[float, float] | None], **kwargs: object
) -> None:
    """Bars with asymmetric error bars where an interval is known."""
    values = np.asarray(values, dtype=np.float64)
    low = np.array([v - i[0] if i else 0.0 for v, i in zip(values, intervals, strict=True)])
    high = np.array([i[1] - v if i else 0.0 for v, i in zip(values, intervals, strict=True)])
    has = np.array([i is not None for i in intervals])
    bars = ax.bar(x, np.nan_to_num(values), **kwargs)
    ax.bar_label(bars, labels=["–" if np.isnan(v) else f"{v:.2f}" for v in values], fontsize=7, padding=2)
    if has.any():
        ax.errorbar(x[has], values[has], yerr=[low[has], high[has]], fmt="none", ecolor="black", capsize=3)


def plot_evaluation(evaluation: Evaluation) -> Figure | None:
    """Headline test metrics and per-class metrics (intervals as error bars), and the FROC curve."""
    rates = {k: v for k, v in evaluation.headline.items() if 0 <= v <= 1}
    metrics = [m for m in ("ap_50", "precision", "recall", "f1") if any(m in c for c in evaluation.per_class.values())]
    curve = evaluation.froc if evaluation.froc and evaluation.froc.get("fps_per_image") else None
    panels = int(bool(rates)) + int(bool(metrics)) + int(curve is not None)
    if not panels:
        return None
    figure = Figure(figsize=(5.5 * panels, 4.5), layout="constrained")
    axes = list(np.atleast_1d(figure.subplots(1, panels)))
    bar_axes = axes[: int(bool(rates)) + int(bool(metrics))]
    if rates:
        ax = axes.pop(0)
        _bars_with_intervals(
            ax,
            np.arange(len(rates)),
            list(rates.values()),
            [evaluation.intervals.get(k) for k in rates],
            color="tab:purple",
            alpha=0.8,
        )
        ax.set_xticks(range(len(rates)), list(rates), rotation=30, ha="right")
        ax.set_title(f"Test metrics ({evaluation.confidence:.0%} CI)" if evaluation.intervals else "Test metrics")
        ax.grid(alpha=0.3, axis="y")
    if metrics:
        ax = axes.pop(0)
        names = list(evaluation.per_class)
        width = 0.8 / len(metrics)
        for k, metric in enumerate(metrics):
            x = np.arange(len(names)) + (k - (len(metrics) - 1) / 2) * width
            values = [evaluation.per_class[n].get(metric, np.nan) for n in names]
            intervals = [evaluation.intervals.get(f"per_class.{n}.{metric}") for n in names]
            _bars_with_intervals(ax, x, values, intervals, width=width, label=metric)
        ax.set_xticks(range(len(names)), names)
        ax.set_title("Per class")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    # One scale for the bar panels, zoomed on the values (and interval ends) so small metrics stay readable.
    shown = [*rates.values(), *(v for c in evaluation.per_class.values() for k, v in c.items() if k in metrics)]
    top = max([v for v in shown if np.isfinite(v)] + [hi for _, hi in evaluation.intervals.values()] + [0.0])
    for ax in bar_axes:
        ax.set_ylim(0, min(1.05, top * 1.2 + 0.05))
    if curve is not None:
        ax = axes.pop(0)
        fps, sensitivity = np.array(curve["fps_per_image"]), np.array(curve["sensitivity"])
        keep = fps > 0
        ax.step(fps[keep], sensitivity[keep], where="post", color="tab:red")
        for rate, value in (curve.get("sensitivity_at") or {}).items():
            ax.scatter([rate], [value], color="black", s=12, zorder=3)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false positives per image")
        ax.set_ylabel("lesion sensitivity")
        title = "FROC" + (f" (CPM {curve['cpm']:.3f})" if "cpm" in curve else "")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    return figure


def plot_sweep(
    runs: Sequence[tuple[str, dict[str, Series]]], smoothing: float = TENSORBOARD_SMOOTHING
) -> Figure | None:
    """Runs of a sweep side by side: smoothed training loss, ``val/map_50`` per epoch, and its best per run."""
    if not runs:
        return None
    figure = Figure(figsize=(15, 4.5), layout="constrained")
    loss_ax, val_ax, best_ax = figure.subplots(1, 3, width_ratios=[1.2, 1.2, 1])
    best = []
    for label, scalars in runs:
        if TOTAL_LOSS in scalars:
            loss_ax.plot(scalars[TOTAL_LOSS].steps, smooth(scalars[TOTAL_LOSS].values, smoothing), label=label)
        series = scalars.get(PRIMARY_VAL)
        if series is not None and len(series):
            x, xlabel = _epochs_or_steps(scalars, series)
            val_ax.plot(x, series.values, marker="o", markersize=3, label=label)
            val_ax.set_xlabel(xlabel)
            val_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        best.append(float(np.nanmax(series.values)) if series is not None and len(series) else np.nan)
    loss_ax.set_title(f"{TOTAL_LOSS} (smoothed)")
    loss_ax.set_xlabel("step")
    val_ax.set_title(PRIMARY_VAL)
    bars = best_ax.bar(range(len(runs)), np.nan_to_num(best), color="tab:purple", alpha=0.8)
    best_ax.bar_label(bars, labels=[f"{b:.3f}" for b in best], fontsize=8)
    best_ax.set_xticks(range(len(runs)), [label for label, _ in runs], rotation=30, ha="right")
    best_ax.set_title(f"best {PRIMARY_VAL} per run")
    for ax in (loss_ax, val_ax, best_ax):
        ax.grid(alpha=0.3)
    for ax in (loss_ax, val_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return figure
