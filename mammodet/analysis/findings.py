"""What a run's report says in words: findings computed from the numbers (bottleneck, validation peak,
convergence, loss make-up, accuracy, data, test) and the executive summary."""

from __future__ import annotations

import math
from datetime import datetime

from mammodet.analysis.dataset import SplitStats
from mammodet.analysis.evaluation import Evaluation
from mammodet.analysis.markdown import duration_text, epoch_text, interval_text
from mammodet.analysis.run import Analysis, Run
from mammodet.analysis.summary import ACCURACY_PREFIX, LOSS_TAGS, NONFINITE_TAG, PRIMARY_VAL, TOTAL_LOSS
from mammodet.analysis.verdict import PAST_PEAK, training_verdict

BOTTLENECK_SHARE = 0.2
"""A median data-wait share of step time from which the input pipeline is called the bottleneck."""
WIDE_INTERVAL = 0.2
"""An interval wider than this (on a 0..1 metric) is called wide."""


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
            f"{PRIMARY_VAL} stayed at {p.value:.4f} over {p.evaluations} validations: the detector did not learn "
            "to find lesions."
        )
    elif p is not None:
        text = (
            f"{PRIMARY_VAL} peaked at {epoch_text(p.epoch, p.step, analysis.max_epochs)} at {p.value:.4f} over "
            f"{p.evaluations} validations"
        )
        if p.final_step != p.step:
            drop = (p.value - p.final) / p.value
            last = epoch_text(p.final_epoch, p.final_step, analysis.max_epochs)
            text += f"; the last validation, {last}, gave {p.final:.4f} ({drop:.0%} below the peak)"
        else:
            text += "; the last validation was the best"
        out.append(text + ".")
    if (tr := analysis.loss_trend) is not None:
        change = (
            f"{tr.previous_mean:.4f} -> {tr.tail_mean:.4f} ({tr.relative_change:+.1%}, "
            f"standard error {tr.standard_error:.4f})"
        )
        direction = {"falling": "falling", "rising": "rising", "flat": "flat within noise"}[tr.direction]
        out.append(f"{TOTAL_LOSS} mean over {tail} vs the {fraction:.0%} before: {change}: {direction}.")
        val = analysis.validation.get(PRIMARY_VAL)
        if tr.direction == "falling" and val is not None and val.final <= (1 - PAST_PEAK) * val.value:
            out.append(
                f"Training loss kept falling while {PRIMARY_VAL} ended {val.value - val.final:.4f} below its peak: "
                "a sign of overfitting."
            )
    if (verdict := training_verdict(analysis)) is not None:
        out.append(verdict.text())
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
    if (stale := stale_data_note(run, analysis)) is not None:
        out.append(stale)
    out += _data_findings(run.splits)
    out += _evaluation_findings(run.evaluation, analysis)
    return out


def stale_data_note(run: Run, analysis: Analysis) -> str | None:
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
    statuses = {name: status for name, c in evaluation.per_class.items() if (status := class_status(c, evaluation))}
    out += [f"Class {name}: {status}; not ranked." for name, status in statuses.items()]
    for metric in ("ap_50", "f1", "recall"):
        values = {
            n: c[metric]
            for n, c in evaluation.per_class.items()
            if n not in statuses and metric in c and not math.isnan(c[metric])
        }
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


def class_status(values: dict[str, float], evaluation: Evaluation) -> str | None:
    """Why a class cannot be called the strongest or weakest: ``no ground truth in this split`` (no lesion, or its
    AP undefined), ``no detections`` (no kept prediction), or no detection matching a lesion when only precision
    and recall are known (training's ``test_metrics.json``); None when it can be ranked."""
    if values.get("support") == 0 or math.isnan(values.get("ap_50", 0.0)):
        return "no ground truth in this split"
    threshold = evaluation.score_threshold
    at = f" at score >= {threshold:g}" if threshold is not None else " at the score threshold"
    tp, fp = values.get("tp"), values.get("fp")
    if tp is not None and fp is not None:
        return f"no detections{at}" if tp + fp == 0 else None
    if values.get("precision") == 0 and values.get("recall") == 0:
        return f"no detection matched a lesion{at}"
    return None


def executive_summary(run: Run, analysis: Analysis) -> list[str]:
    """A few bullet lines: what was trained, for how long, how well, how fast."""
    model, data = run.config.get("model") or {}, run.config.get("data") or {}
    lines = []
    what = f"{model.get('model_name') or model.get('arch', 'detector')}"
    if run.splits:
        what += " on " + ", ".join(f"{s.images} {s.split}" for s in run.splits) + " images"
    when = []
    if analysis.steps is not None:
        when.append(f"{analysis.steps} steps")
    if analysis.epochs is not None:
        when.append(f"{analysis.epochs} epochs")
    if analysis.wall_s is not None:
        when.append(f"{duration_text(analysis.wall_s)} of training")
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
        lines.append(f"Best {PRIMARY_VAL}: {p.value:.4f} at {epoch_text(p.epoch, p.step, analysis.max_epochs)}.")
    if (verdict := training_verdict(analysis)) is not None:
        lines.append(verdict.text())
    if run.evaluation is not None:
        parts = [
            f"{k} {v:.4f}"
            + (
                f" ({run.evaluation.confidence:.0%} CI {interval_text(run.evaluation, k)})"
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
