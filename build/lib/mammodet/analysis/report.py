"""The analysis report of a training run (or of every run of a sweep): figures, ``analysis_report.md`` and
``project_summary.csv``, every number computed from the run's event files, config and evaluation results.

``write_report(path, out_dir)`` picks the mode: a run directory (``tensorboard/``, ``config.yaml``) gets one
report; a multirun sweep directory (``<ts>/<n>/`` runs) gets a report per run under ``runs/<n>/`` plus a
comparison table and figure. ``project_summary.csv`` is long-form: ``run, section, metric, statistic, value``.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mammodet.analysis import plots
from mammodet.analysis.dataset import SplitStats, annotations_written, resolve_image_dir, split_statistics
from mammodet.analysis.evaluation import Evaluation, load_run_evaluation
from mammodet.analysis.events import TENSORBOARD_SMOOTHING, Series, epoch_at, event_files, load_scalars
from mammodet.analysis.summary import (
    ACCURACY_PREFIX,
    LOSS_TAGS,
    NONFINITE_TAG,
    PRIMARY_VAL,
    STATISTICS,
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

REPORT_NAME = "analysis_report.md"
SUMMARY_NAME = "project_summary.csv"
SWEEP_TABLE_NAME = "sweep_comparison.csv"
SUMMARY_COLUMNS = ("run", "section", "metric", "statistic", "value")
BOTTLENECK_SHARE = 0.2
"""A median data-wait share of step time from which the input pipeline is called the bottleneck."""
WIDE_INTERVAL = 0.2
"""An interval wider than this (on a 0..1 metric) is called wide."""

Row = tuple[str, str, str, str, float]


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
    """Epochs trained: the ``epoch`` logged with the last training point, plus one."""


def analyse(run: Run, tail_fraction: float = 0.1) -> Analysis:
    """Per-tag statistics, validation peaks, loss trend, timing and schedule of ``run``."""
    scalars = run.scalars
    train_tags = [t for t in scalars if t.startswith("train/") and len(scalars[t])]
    val_tags = [t for t in scalars if t.startswith("val/")]
    last_train_step = max((int(scalars[t].steps[-1]) for t in train_tags), default=None)
    epoch = epoch_at(scalars, last_train_step) if last_train_step is not None else None
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
        epochs=epoch + 1 if epoch is not None else None,
    )


# ------------------------------------------------------------------ text


def _fmt(value: float | None, digits: int = 4) -> str:
    """A number to ``digits`` significant digits; ``–`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1) or abs(value) >= 10**digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table; first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _interval_text(evaluation: Evaluation, key: str) -> str:
    interval = evaluation.intervals.get(key)
    return f"{_fmt(interval[0], 3)}–{_fmt(interval[1], 3)}" if interval else "–"


def _epoch_text(epoch: int | None, step: int) -> str:
    return f"epoch {epoch} (step {step})" if epoch is not None else f"step {step}"


def findings(run: Run, analysis: Analysis) -> list[str]:
    """Statements computed from the numbers: bottleneck, peak, convergence, loss make-up, accuracy, data, test."""
    out: list[str] = []
    stats, fraction = analysis.statistics, analysis.tail_fraction
    tail = f"the last {fraction:.0%} of steps"
    if (t := analysis.timing) is not None:
        verdict = (
            "the input pipeline is the bottleneck: raise data.num_workers, or train from converted JPEGs "
            "(data.source=jpeg) rather than DICOM"
            if t.median_wait_share >= BOTTLENECK_SHARE
            else "compute-bound: data loading keeps up"
        )
        speed = f"; {t.images_per_s:.1f} images/s" if t.images_per_s else ""
        out.append(
            f"Data wait was {t.median_wait_share:.1%} of step time (median over {t.steps} logged steps; median wait "
            f"{t.median_wait_s * 1000:.0f} ms, median compute {t.median_compute_s:.3f} s{speed}): {verdict}."
        )
    p = analysis.validation.get(PRIMARY_VAL)
    if p is not None and p.value <= 0:
        out.append(
            f"{PRIMARY_VAL} stayed at {p.value:.4f} over {p.evaluations} validations: the detector has not learned "
            "to find lesions yet."
        )
    elif p is not None:
        text = (
            f"{PRIMARY_VAL} peaked at {_epoch_text(p.epoch, p.step)} at {p.value:.4f} over {p.evaluations} validations"
        )
        if p.final_step != p.step:
            drop = (p.value - p.final) / p.value if p.value > 0 else 0.0
            text += f"; the last validation, {_epoch_text(p.final_epoch, p.final_step)}, gave {p.final:.4f}"
            text += f" ({drop:.0%} below the peak: use the best checkpoint)" if drop >= 0.05 else " (near the peak)"
        else:
            text += "; it was still at its best at the last validation: more epochs may help"
        out.append(text + ".")
    if (tr := analysis.loss_trend) is not None:
        change = (
            f"{tr.previous_mean:.4f} -> {tr.tail_mean:.4f} ({tr.relative_change:+.1%}, "
            f"standard error {tr.standard_error:.4f})"
        )
        verdict = {
            "falling": "still falling: training has not converged, more steps may help",
            "rising": "rising: training became unstable (check the learning rate)",
            "flat": "flat within noise: converged at this schedule, training could have stopped earlier",
        }[tr.direction]
        out.append(f"{TOTAL_LOSS} mean over {tail} vs the {fraction:.0%} before: {change}: {verdict}.")
        val = analysis.validation.get(PRIMARY_VAL)
        if tr.direction == "falling" and val is not None and val.final < 0.95 * val.value:
            out.append(
                f"Training loss kept falling while {PRIMARY_VAL} ended {val.value - val.final:.4f} below its peak: "
                "a sign of overfitting."
            )
    components = {t: stats[t]["tail_mean"] for t in LOSS_TAGS if t in stats}
    if components and sum(components.values()) > 0:
        top = max(components, key=components.get)
        share = components[top] / sum(components.values())
        out.append(f"{top} is the largest loss component: {share:.0%} of the summed losses over {tail}.")
    overall, foreground = stats.get(f"{ACCURACY_PREFIX}cls_accuracy"), stats.get(f"{ACCURACY_PREFIX}fg_cls_accuracy")
    if overall and foreground:
        text = (
            f"ROI-head accuracy over {tail}: {overall['tail_mean']:.1%} on all sampled proposals, "
            f"{foreground['tail_mean']:.1%} on foreground ones"
        )
        gap = overall["tail_mean"] - foreground["tail_mean"]
        if gap >= 0.2:
            text += f" ({gap:.0%} lower: the overall figure is carried by background proposals)"
        missed = stats.get(f"{ACCURACY_PREFIX}false_negative")
        if missed:
            text += f"; {missed['tail_mean']:.1%} of foreground proposals were classified as background"
        out.append(text + ".")
    if (s := analysis.schedule) is not None and s.peak > 0:
        out.append(
            f"Learning rate rose from {s.first:.3g} to {s.peak:.3g} by step {s.peak_step} and ended at {s.final:.3g} "
            f"({100 * s.final / s.peak:.3g}% of the peak) at step {s.final_step}."
        )
    if NONFINITE_TAG in stats and stats[NONFINITE_TAG]["max"] > 0:
        out.append(f"{int(stats[NONFINITE_TAG]['max'])} training steps were skipped for a non-finite loss.")
    if (stale := _stale_data_note(run, analysis)) is not None:
        out.append(stale)
    out += _data_findings(run.splits)
    out += _evaluation_findings(run.evaluation, analysis)
    return out


def _stale_data_note(run: Run, analysis: Analysis) -> str | None:
    """A warning when the COCO files were rewritten after the run started: the statistics may be of other data."""
    if run.data_written is None or analysis.started is None or run.data_written <= analysis.started:
        return None
    written, started = (
        datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") for t in (run.data_written, analysis.started)
    )
    return (
        f"The COCO files under {run.image_dir} were written at {written}, after this run started ({started}): "
        "the data statistics may not describe the data it trained on."
    )


def _data_findings(splits: list[SplitStats]) -> list[str]:
    out = []
    for s in splits:
        counts = s.lesions
        present = {k: v for k, v in counts.items() if v}
        missing = [k for k, v in counts.items() if not v]
        if s.split == "train" and len(present) >= 2:
            most, least = max(present, key=present.get), min(present, key=present.get)
            out.append(
                f"Class imbalance in train: {most} has {present[most] / present[least]:.1f}x as many lesions as "
                f"{least} ({present[most]} vs {present[least]})."
            )
        if missing:
            out.append(f"The {s.split} split has no {', '.join(missing)} lesion: its AP is undefined there.")
        if s.images and s.images_with_lesions < s.images:
            out.append(
                f"{s.images - s.images_with_lesions} of {s.images} {s.split} images "
                f"({1 - s.images_with_lesions / s.images:.0%}) have no lesion."
            )
    return out


def _evaluation_findings(evaluation: Evaluation | None, analysis: Analysis) -> list[str]:
    if evaluation is None:
        return []
    out = []
    test = evaluation.headline.get("map_50")
    if test is not None and not math.isnan(test):
        text = f"Test map_50 is {test:.4f}"
        interval = evaluation.intervals.get("map_50")
        if interval:
            width = interval[1] - interval[0]
            text += f" ({evaluation.confidence:.0%} CI {interval[0]:.4f}–{interval[1]:.4f}, width {width:.3f}"
            text += ": wide, the test set is small)" if width > WIDE_INTERVAL else ")"
        val = analysis.validation.get(PRIMARY_VAL)
        if val is not None:
            text += f"; best {PRIMARY_VAL} was {val.value:.4f} ({test - val.value:+.4f} from validation to test)"
        out.append(text + ".")
    for metric in ("ap_50", "f1", "recall"):
        values = {n: c[metric] for n, c in evaluation.per_class.items() if metric in c and not math.isnan(c[metric])}
        if len(values) >= 2:
            worst, best = min(values, key=values.get), max(values, key=values.get)
            interval = evaluation.intervals.get(f"per_class.{worst}.{metric}")
            ci = f", {evaluation.confidence:.0%} CI {interval[0]:.3f}–{interval[1]:.3f}" if interval else ""
            out.append(
                f"Weakest class by test {metric}: {worst} ({values[worst]:.3f}{ci}); strongest: {best} "
                f"({values[best]:.3f})."
            )
            break
    return out


def executive_summary(run: Run, analysis: Analysis) -> list[str]:
    """A few bullet lines: what was trained, for how long, how well, how fast."""
    model, data = run.config.get("model") or {}, run.config.get("data") or {}
    lines = []
    what = f"{model.get('arch', 'detector')}"
    if run.splits:
        what += " on " + ", ".join(f"{s.images} {s.split}" for s in run.splits) + " images"
    when = []
    if analysis.steps is not None:
        when.append(f"{analysis.steps} steps")
    if analysis.epochs is not None:
        when.append(f"{analysis.epochs} epochs")
    if analysis.wall_s is not None:
        when.append(f"{_duration(analysis.wall_s)} of training")
    lines.append(
        f"Run `{run.name}`: {what}"
        + (f"; {', '.join(when)}" if when else "")
        + (f"; batch size {data['batch_size']}" if data.get("batch_size") else "")
        + "."
    )
    if (loss := analysis.statistics.get(TOTAL_LOSS)) is not None:
        trend_text = f", {analysis.loss_trend.direction} at the end" if analysis.loss_trend else ""
        lines.append(
            f"Training loss {loss['first']:.4f} at the first logged step, {loss['tail_mean']:.4f} "
            f"(mean over the last {analysis.tail_fraction:.0%} of steps){trend_text}."
        )
    if (p := analysis.validation.get(PRIMARY_VAL)) is not None:
        lines.append(f"Best {PRIMARY_VAL}: {p.value:.4f} at {_epoch_text(p.epoch, p.step)}.")
    if run.evaluation is not None:
        parts = [
            f"{k} {v:.4f}"
            + (
                f" ({run.evaluation.confidence:.0%} CI {_interval_text(run.evaluation, k)})"
                if k in run.evaluation.intervals
                else ""
            )
            for k, v in run.evaluation.headline.items()
            if k in ("map_50", "map", "f1_macro") and not math.isnan(v)
        ]
        if parts:
            lines.append(f"Test ({run.evaluation.source.name}): " + ", ".join(parts) + ".")
    if (t := analysis.timing) is not None:
        bound = "data-loading-bound" if t.median_wait_share >= BOTTLENECK_SHARE else "compute-bound"
        lines.append(
            f"Median step {t.median_wait_s + t.median_compute_s:.3f} s, {t.median_wait_share:.0%} of it waiting "
            f"for data: {bound}."
        )
    return lines


# ------------------------------------------------------------------ sections and figures


@dataclass(frozen=True)
class Section:
    """A report section: markdown text and the figures shown above it."""

    title: str
    text: str
    figures: tuple[Path, ...] = ()


def _statistics_table(analysis: Analysis, tags: list[str]) -> str:
    header = ["tag", "first", "final", "mean", "min", "max", f"mean last {analysis.tail_fraction:.0%}"]
    rows = [
        [f"`{t}`", *(_fmt(analysis.statistics[t][k]) for k in ("first", "final", "mean", "min", "max", "tail_mean"))]
        for t in tags
        if t in analysis.statistics
    ]
    return _table(header, rows)


def _training_section(run: Run, analysis: Analysis, figures: dict[str, Path]) -> Section:
    losses = [t for t in (*LOSS_TAGS, TOTAL_LOSS) if t in analysis.statistics]
    accuracy = [t for t in analysis.statistics if t.startswith(ACCURACY_PREFIX)]
    others = [t for t in analysis.statistics if t not in losses and t not in accuracy]
    text = [
        "Losses, ROI-head accuracy and learning rate at every logged step "
        f"(from {len(run.event_files)} event file(s)).",
        "",
        _statistics_table(analysis, losses + accuracy + others),
    ]
    if analysis.validation:
        rows = [
            [f"`{t}`", _fmt(p.value), _epoch_text(p.epoch, p.step), _fmt(p.final), str(p.evaluations)]
            for t, p in analysis.validation.items()
        ]
        text += ["", "Validation metrics (-1: no ground truth of that class):", ""]
        text.append(_table(["tag", "best", "at", "last", "validations"], rows))
    keys = ("losses", "roi_accuracy", "learning_rate", "validation")
    return Section("Training", "\n".join(text), tuple(figures[k] for k in keys if k in figures))


def _data_section(run: Run, analysis: Analysis, figures: dict[str, Path]) -> Section:
    if not run.splits:
        image_dir = (run.config.get("data") or {}).get("image_dir")
        return Section(
            "Data", f"No COCO annotations found for `data.image_dir={image_dir}`: dataset statistics skipped."
        )
    classes = list(run.splits[0].lesions)
    header = ["split", "patients", "images", "with lesions", *classes, "lesions", "median box w x h (px)"]
    rows = [
        [
            s.split,
            str(s.patients),
            str(s.images),
            str(s.images_with_lesions),
            *(str(s.lesions[c]) for c in classes),
            str(s.total_lesions),
            f"{_fmt(s.median_box_width, 3)} x {_fmt(s.median_box_height, 3)}",
        ]
        for s in run.splits
    ]
    text = f"From the COCO files under `{run.image_dir}`.\n\n" + _table(header, rows)
    if (stale := _stale_data_note(run, analysis)) is not None:
        text += f"\n\n**Note:** {stale}"
    return Section("Data", text, tuple(figures[k] for k in ("class_distribution",) if k in figures))


def _efficiency_section(analysis: Analysis, figures: dict[str, Path]) -> Section:
    t = analysis.timing
    if t is None:
        return Section("Efficiency", "`train/data_wait_s` and `train/step_s` were not logged.")
    rows = [
        ["median per step", _fmt(t.median_wait_s), _fmt(t.median_compute_s), f"{t.median_wait_share:.1%}"],
        ["mean per step", _fmt(t.mean_wait_s), _fmt(t.mean_compute_s), f"{t.total_wait_share:.1%}"],
    ]
    text = [
        f"Data wait (`train/data_wait_s`: time from the end of one step to the start of the next) against compute "
        f"(`train/step_s`: forward, backward, optimizer) at the {t.steps} logged steps where both were recorded.",
        "",
        _table(["", "data wait (s)", "compute (s)", "wait share"], rows),
    ]
    if t.images_per_s:
        text += ["", f"Throughput: {t.images_per_s:.2f} images/s (batch size / median step time)."]
    if analysis.wall_s is not None:
        text += ["", f"Training wall time (first to last logged training point): {_duration(analysis.wall_s)}."]
    return Section("Efficiency", "\n".join(text), tuple(figures[k] for k in ("data_vs_compute",) if k in figures))


def _evaluation_section(run: Run, figures: dict[str, Path]) -> Section:
    evaluation = run.evaluation
    if evaluation is None:
        return Section("Evaluation", "No `metrics.json` nor `test_metrics.json`: the run was not evaluated.")
    text = [f"From `{evaluation.source}`."]
    if not evaluation.intervals:
        text[0] += " No intervals: run `python -m mammodet.evaluate` for bootstrap confidence intervals."
    rows = [[k, _fmt(v), _interval_text(evaluation, k)] for k, v in evaluation.headline.items()]
    text += ["", _table(["metric", "value", f"{evaluation.confidence:.0%} CI"], rows)]
    if evaluation.per_class:
        keys = [
            k
            for k in ("ap_50", "precision", "recall", "f1", "tp", "fp", "fn")
            if any(k in c for c in evaluation.per_class.values())
        ]
        rows = []
        for name, values in evaluation.per_class.items():
            cells = []
            for k in keys:
                cell = _fmt(values.get(k))
                if f"per_class.{name}.{k}" in evaluation.intervals:
                    cell += f" ({_interval_text(evaluation, f'per_class.{name}.{k}')})"
                cells.append(cell)
            rows.append([name, *cells])
        text += [
            "",
            f"Per class ({evaluation.confidence:.0%} CI in brackets where computed):",
            "",
            _table(["class", *keys], rows),
        ]
    if evaluation.froc and evaluation.froc.get("sensitivity_at"):
        at = evaluation.froc["sensitivity_at"]
        text += [
            "",
            "FROC sensitivity at FPs per image:",
            "",
            _table(["FPs/image", *(_fmt(r) for r in at)], [["sensitivity", *(_fmt(v, 3) for v in at.values())]]),
        ]
    shown = [figures["evaluation"]] if "evaluation" in figures else []
    shown += [p for k, p in figures.items() if k.startswith("evaluate/")]
    return Section("Evaluation", "\n".join(text), tuple(shown))


def summary_rows(run: Run, analysis: Analysis) -> list[Row]:
    """The CSV rows of one run: every number the report states, full precision."""
    rows: list[Row] = []
    for tag, stats in analysis.statistics.items():
        rows += [(run.name, "training", tag, k, stats[k]) for k in STATISTICS]
    for tag, p in analysis.validation.items():
        rows += [
            (run.name, "validation", tag, "max", p.value),
            (run.name, "validation", tag, "step_of_max", float(p.step)),
            (run.name, "validation", tag, "epoch_of_max", float(p.epoch) if p.epoch is not None else math.nan),
            (run.name, "validation", tag, "final", p.final),
            (run.name, "validation", tag, "n", float(p.evaluations)),
        ]
    if analysis.loss_trend is not None:
        tr = analysis.loss_trend
        rows += [
            (run.name, "training", tr.tag, "previous_tail_mean", tr.previous_mean),
            (run.name, "training", tr.tag, "tail_change", tr.change),
            (run.name, "training", tr.tag, "tail_change_standard_error", tr.standard_error),
        ]
    if (t := analysis.timing) is not None:
        for key in (
            "steps",
            "median_wait_s",
            "median_compute_s",
            "mean_wait_s",
            "mean_compute_s",
            "median_wait_share",
            "total_wait_share",
            "images_per_s",
        ):
            value = getattr(t, key)
            if value is not None:
                rows.append((run.name, "efficiency", "timing", key, float(value)))
    for key in ("wall_s", "steps", "epochs"):
        if (value := getattr(analysis, key)) is not None:
            rows.append((run.name, "efficiency", "run", key, float(value)))
    for s in run.splits:
        for key in (
            "patients",
            "images",
            "images_with_lesions",
            "total_lesions",
            "median_box_width",
            "median_box_height",
        ):
            rows.append((run.name, "data", s.split, key, float(getattr(s, key))))
        rows += [(run.name, "data", f"{s.split}/{c}", "lesions", float(n)) for c, n in s.lesions.items()]
    if (e := run.evaluation) is not None:
        for key, value in e.headline.items():
            rows.append((run.name, "evaluation", key, "value", value))
        for name, values in e.per_class.items():
            rows += [(run.name, "evaluation", f"{name}/{k}", "value", v) for k, v in values.items()]
        for key, (low, high) in e.intervals.items():
            metric = key.removeprefix("per_class.").replace(".", "/")
            rows += [(run.name, "evaluation", metric, "ci_low", low), (run.name, "evaluation", metric, "ci_high", high)]
    return rows


def write_summary_csv(rows: list[Row], path: Path) -> Path:
    """``project_summary.csv``: one number per row, floats written in full (``repr``)."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(SUMMARY_COLUMNS)
        writer.writerows([*row[:4], repr(float(row[4]))] for row in rows)
    return path


def _figures(run: Run, out_dir: Path, smoothing: float) -> dict[str, Path]:
    """Draw and save every figure the run has data for; copy the evaluator's PNGs under ``evaluate/``."""
    drawn = {
        "losses": plots.plot_losses(run.scalars, smoothing),
        "roi_accuracy": plots.plot_accuracy(run.scalars, smoothing),
        "learning_rate": plots.plot_learning_rate(run.scalars),
        "validation": plots.plot_validation(run.scalars),
        "data_vs_compute": plots.plot_timing(run.scalars),
        "class_distribution": plots.plot_class_distribution(run.splits),
        "evaluation": plots.plot_evaluation(run.evaluation) if run.evaluation else None,
    }
    figures = {name: plots.save(figure, out_dir / f"{name}.png") for name, figure in drawn.items() if figure}
    for path in run.evaluation.figures if run.evaluation else ():
        target = out_dir / "evaluate" / path.name
        target.parent.mkdir(exist_ok=True)
        figures[f"evaluate/{path.stem}"] = Path(shutil.copyfile(path, target))
    return figures


def _markdown(title: str, sections: list[Section], out_dir: Path) -> str:
    lines = [f"# {title}"]
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        lines += [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})\n" for p in section.figures]
        lines.append(section.text)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Report:
    """What ``write_report`` wrote: the markdown, the CSV, the figures, and the sections and findings shown."""

    out_dir: Path
    markdown: Path
    summary_csv: Path
    figures: dict[str, Path]
    sections: list[Section]
    findings: list[str]
    rows: list[Row]
    """The CSV's rows."""
    runs: dict[str, Report] = field(default_factory=dict)
    """Per-run reports of a sweep, by run name."""

    def show(self, title: str | None = None) -> None:
        """Display the sections (or the one called ``title``) with their figures, in a notebook."""
        from IPython.display import Image, Markdown, display

        for section in self.sections:
            if title is None or section.title == title:
                display(Markdown(f"## {section.title}\n\n{section.text}"))
                for path in section.figures:
                    display(Image(filename=str(path)))


def _run_report(run: Run, analysis: Analysis, out_dir: Path, smoothing: float) -> Report:
    """Figures, markdown and CSV of one analysed run into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _figures(run, out_dir, smoothing)
    found = findings(run, analysis)
    sections = [
        Section("Executive summary", _bullets(executive_summary(run, analysis))),
        Section("Findings", _bullets(found)),
        _training_section(run, analysis, figures),
        _data_section(run, analysis, figures),
        _efficiency_section(analysis, figures),
        _evaluation_section(run, figures),
    ]
    rows = summary_rows(run, analysis)
    markdown = out_dir / REPORT_NAME
    markdown.write_text(_markdown(f"Analysis report: {run.name}", sections, out_dir))
    return Report(out_dir, markdown, write_summary_csv(rows, out_dir / SUMMARY_NAME), figures, sections, found, rows)


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines) or "Nothing to report."


def write_run_report(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    metrics: str | os.PathLike | None = None,
    smoothing: float = TENSORBOARD_SMOOTHING,
    tail_fraction: float = 0.1,
) -> Report:
    """The report of one run directory into ``out_dir``."""
    run = load_run(run_dir, metrics)
    return _run_report(run, analyse(run, tail_fraction), Path(out_dir), smoothing)


# ------------------------------------------------------------------ sweeps


def is_run_dir(path: str | os.PathLike) -> bool:
    """A training run directory: it holds ``tensorboard/`` or ``config.yaml``."""
    path = Path(path)
    return (path / "tensorboard").is_dir() or (path / "config.yaml").is_file()


def sweep_runs(sweep_dir: str | os.PathLike) -> list[Path]:
    """The run directories directly under a sweep directory, in job order (numeric names by number)."""
    children = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and is_run_dir(p)]
    return sorted(children, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def varied_config(runs: list[Run]) -> dict[str, list[Any]]:
    """Config keys whose values differ between runs (paths that only name each run's own directory ignored)."""
    flat = []
    for run in runs:
        own = (str(run.run_dir.resolve()), str(run.run_dir))
        values = {}
        for key, value in _flatten(run.config).items():
            if isinstance(value, str):
                for path in own:
                    value = value.replace(path, "<run_dir>")
            values[key] = value
        flat.append(values)
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k) for f in flat] for k in keys if len({repr(f.get(k)) for f in flat}) > 1}


def _comparison(runs: list[Run], analyses: list[Analysis]) -> tuple[list[str], list[list[Any]]]:
    """The sweep table: one row per run, varied config values then results (raw values)."""
    varied = varied_config(runs)
    header = [
        "run",
        *varied,
        "steps",
        "wall_s",
        f"{TOTAL_LOSS} tail_mean",
        f"best {PRIMARY_VAL}",
        "best epoch",
        "test map_50",
        "test map_50 ci_low",
        "test map_50 ci_high",
        "median data wait share",
    ]
    rows = []
    for i, (run, analysis) in enumerate(zip(runs, analyses, strict=True)):
        p = analysis.validation.get(PRIMARY_VAL)
        e = run.evaluation
        interval = e.intervals.get("map_50") if e else None
        rows.append(
            [
                run.name,
                *(values[i] for values in varied.values()),
                analysis.steps,
                analysis.wall_s,
                analysis.statistics.get(TOTAL_LOSS, {}).get("tail_mean"),
                p.value if p else None,
                p.epoch if p else None,
                e.headline.get("map_50") if e else None,
                interval[0] if interval else None,
                interval[1] if interval else None,
                analysis.timing.median_wait_share if analysis.timing else None,
            ]
        )
    return header, rows


def _setting(varied: dict[str, list[Any]], i: int, short: bool = False) -> str:
    """``key=value`` of run ``i`` for every varied key (``short``: last key part, first two keys, for legends)."""
    items = list(varied.items())[:2] if short else list(varied.items())
    return ", ".join(f"{k.rsplit('.', 1)[-1] if short else k}={v[i]}" for k, v in items) or "same config"


def _sweep_findings(runs: list[Run], analyses: list[Analysis], varied: dict[str, list[Any]]) -> list[str]:
    out = []
    best = {i: a.validation[PRIMARY_VAL].value for i, a in enumerate(analyses) if PRIMARY_VAL in a.validation}
    if len(best) >= 2 and max(best.values()) == min(best.values()):
        out.append(f"All {len(best)} runs reached the same best {PRIMARY_VAL}, {max(best.values()):.4f}.")
    elif len(best) >= 2:
        top, bottom = max(best, key=best.get), min(best, key=best.get)
        out.append(
            f"Best run by {PRIMARY_VAL}: {runs[top].name} ({_setting(varied, top)}) at {best[top]:.4f}; worst: "
            f"{runs[bottom].name} ({_setting(varied, bottom)}) at {best[bottom]:.4f}; "
            f"spread {best[top] - best[bottom]:.4f}."
        )
    test = {
        i: r.evaluation.headline["map_50"]
        for i, r in enumerate(runs)
        if r.evaluation and not math.isnan(r.evaluation.headline.get("map_50", math.nan))
    }
    if len(test) >= 2 and max(test.values()) == min(test.values()):
        out.append(f"All {len(test)} evaluated runs have the same test map_50, {max(test.values()):.4f}.")
    elif len(test) >= 2:
        top = max(test, key=test.get)
        agree = best and top == max(best, key=best.get)
        out.append(
            f"Best run by test map_50: {runs[top].name} at {test[top]:.4f}"
            + ("; the same run as by validation." if agree else "; not the run validation would pick.")
        )
    shares = {i: a.timing.median_wait_share for i, a in enumerate(analyses) if a.timing}
    bound = [runs[i].name for i, share in shares.items() if share >= BOTTLENECK_SHARE]
    if shares:
        out.append(
            f"{len(bound)} of {len(shares)} runs waited on data for at least {BOTTLENECK_SHARE:.0%} of the median step"
            + (f": {', '.join(bound)}." if bound else ".")
        )
    return out


def write_sweep_report(
    sweep_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    smoothing: float = TENSORBOARD_SMOOTHING,
    tail_fraction: float = 0.1,
) -> Report:
    """A report per run under ``out_dir/runs/<name>/`` and their comparison in ``out_dir``."""
    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    dirs = sweep_runs(sweep_dir)
    if not dirs:
        raise FileNotFoundError(f"{sweep_dir}: neither a run directory nor a sweep of run directories")
    runs = [load_run(d) for d in dirs]
    analyses = [analyse(run, tail_fraction) for run in runs]
    reports = {
        run.name: _run_report(run, analysis, out_dir / "runs" / run.name, smoothing)
        for run, analysis in zip(runs, analyses, strict=True)
    }
    varied = varied_config(runs)
    header, rows = _comparison(runs, analyses)
    with (out_dir / SWEEP_TABLE_NAME).open("w", newline="") as file:
        csv.writer(file).writerows([header, *[["" if v is None else v for v in row] for row in rows]])
    figures = {}
    labels = [f"{run.name}: {_setting(varied, i, short=True)}" if varied else run.name for i, run in enumerate(runs)]
    figure = plots.plot_sweep([(label, run.scalars) for label, run in zip(labels, runs, strict=True)], smoothing)
    if figure is not None:
        figures["sweep_comparison"] = plots.save(figure, out_dir / "sweep_comparison.png")
    found = _sweep_findings(runs, analyses, varied)
    table = _table(header, [[_fmt(v) if not isinstance(v, str) else v for v in row] for row in rows])
    links = [
        f"- [{name}]({r.markdown.relative_to(out_dir).as_posix()}): {r.findings[0] if r.findings else ''}"
        for name, r in reports.items()
    ]
    sections = [
        Section(
            "Executive summary",
            _bullets(
                [
                    f"Sweep `{sweep_dir}`: {len(runs)} runs; varied: "
                    + (", ".join(f"`{k}` ({', '.join(map(str, v))})" for k, v in varied.items()) or "nothing")
                    + "."
                ]
            ),
        ),
        Section("Findings", _bullets(found)),
        Section("Comparison", f"Also in `{SWEEP_TABLE_NAME}`.\n\n{table}", tuple(figures.values())),
        Section("Runs", "\n".join(links)),
    ]
    markdown = out_dir / REPORT_NAME
    markdown.write_text(_markdown(f"Sweep report: {sweep_dir.name}", sections, out_dir))
    all_rows = [row for r in reports.values() for row in r.rows]
    summary = write_summary_csv(all_rows, out_dir / SUMMARY_NAME)
    return Report(out_dir, markdown, summary, figures, sections, found, all_rows, reports)


def write_report(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    metrics: str | os.PathLike | None = None,
    smoothing: float = TENSORBOARD_SMOOTHING,
    tail_fraction: float = 0.1,
) -> Report:
    """A run report when ``path`` is a run directory, a sweep report when it holds run directories."""
    if is_run_dir(path):
        return write_run_report(path, out_dir, metrics, smoothing, tail_fraction)
    if metrics:
        raise ValueError("metrics= names one run's metrics.json; a sweep's runs each use their own")
    return write_sweep_report(path, out_dir, smoothing, tail_fraction)
