"""The report of one run: its markdown sections (training, data, efficiency, evaluation), figures, and
``project_summary.csv`` (long-form: ``run, section, metric, statistic, value``), written by
:func:`write_run_report` and returned as a :class:`Report`."""

from __future__ import annotations

import csv
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import mammodet.analysis.plots as plots
from mammodet.analysis.events import TENSORBOARD_SMOOTHING
from mammodet.analysis.findings import executive_summary, findings, stale_data_note
from mammodet.analysis.markdown import (
    Section,
    bullets,
    document,
    duration_text,
    epoch_text,
    interval_text,
    number_text,
    table,
)
from mammodet.analysis.run import Analysis, Run, analyse, load_run
from mammodet.analysis.summary import ACCURACY_PREFIX, LOSS_TAGS, STATISTICS, TOTAL_LOSS

REPORT_NAME = "analysis_report.md"
SUMMARY_NAME = "project_summary.csv"
SUMMARY_COLUMNS = ("run", "section", "metric", "statistic", "value")

Row = tuple[str, str, str, str, float]


def _statistics_table(analysis: Analysis, tags: list[str]) -> str:
    header = ["tag", "first", "final", "mean", "min", "max", f"mean last {analysis.tail_fraction:.0%}"]
    rows = [
        [
            f"`{t}`",
            *(number_text(analysis.statistics[t][k]) for k in ("first", "final", "mean", "min", "max", "tail_mean")),
        ]
        for t in tags
        if t in analysis.statistics
    ]
    return table(header, rows)


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
            [
                f"`{t}`",
                number_text(p.value),
                epoch_text(p.epoch, p.step, analysis.max_epochs),
                number_text(p.final),
                str(p.evaluations),
            ]
            for t, p in analysis.validation.items()
        ]
        text += ["", "Validation metrics (-1: no ground truth of that class):", ""]
        text.append(table(["tag", "best", "at", "last", "validations"], rows))
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
            f"{number_text(s.median_box_width, 3)} x {number_text(s.median_box_height, 3)}",
        ]
        for s in run.splits
    ]
    text = f"From the COCO files under `{run.image_dir}`.\n\n" + table(header, rows)
    if (stale := stale_data_note(run, analysis)) is not None:
        text += f"\n\n**Note:** {stale}"
    return Section("Data", text, tuple(figures[k] for k in ("class_distribution",) if k in figures))


def _efficiency_section(analysis: Analysis, figures: dict[str, Path]) -> Section:
    t = analysis.timing
    if t is None:
        return Section("Efficiency", "`train/data_wait_s` and `train/step_s` were not logged.")
    rows = [
        [
            "median per step",
            number_text(t.median_wait_s),
            number_text(t.median_compute_s),
            f"{t.median_wait_share:.1%}",
        ],
        ["mean per step", number_text(t.mean_wait_s), number_text(t.mean_compute_s), f"{t.total_wait_share:.1%}"],
    ]
    text = [
        f"Data wait (`train/data_wait_s`: time from the end of one step to the start of the next) against compute "
        f"(`train/step_s`: forward, backward, optimizer) at the {t.steps} logged steps where both were recorded.",
        "",
        table(["", "data wait (s)", "compute (s)", "wait share"], rows),
    ]
    if t.images_per_s:
        text += ["", f"Throughput: {t.images_per_s:.2f} images/s (batch size / median step time)."]
    if analysis.wall_s is not None:
        text += ["", f"Training wall time (first to last logged training point): {duration_text(analysis.wall_s)}."]
    return Section("Efficiency", "\n".join(text), tuple(figures[k] for k in ("data_vs_compute",) if k in figures))


def _evaluation_section(run: Run, figures: dict[str, Path]) -> Section:
    evaluation = run.evaluation
    if evaluation is None:
        return Section("Evaluation", "No `metrics.json` nor `test_metrics.json`: the run was not evaluated.")
    text = [f"From `{evaluation.source}`."]
    if not evaluation.intervals:
        text[0] += " No intervals: run `python -m mammodet.evaluate` for bootstrap confidence intervals."
    rows = [[k, number_text(v), interval_text(evaluation, k)] for k, v in evaluation.headline.items()]
    text += ["", table(["metric", "value", f"{evaluation.confidence:.0%} CI"], rows)]
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
                cell = number_text(values.get(k))
                if f"per_class.{name}.{k}" in evaluation.intervals:
                    cell += f" ({interval_text(evaluation, f'per_class.{name}.{k}')})"
                cells.append(cell)
            rows.append([name, *cells])
        text += [
            "",
            f"Per class ({evaluation.confidence:.0%} CI in brackets where computed):",
            "",
            table(["class", *keys], rows),
        ]
    if evaluation.froc and evaluation.froc.get("sensitivity_at"):
        at = evaluation.froc["sensitivity_at"]
        text += [
            "",
            "FROC sensitivity at FPs per image:",
            "",
            table(
                ["FPs/image", *(number_text(r) for r in at)],
                [["sensitivity", *(number_text(v, 3) for v in at.values())]],
            ),
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


def write_analysed_run(run: Run, analysis: Analysis, out_dir: Path, smoothing: float) -> Report:
    """Figures, markdown and CSV of one analysed run into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _figures(run, out_dir, smoothing)
    found = findings(run, analysis)
    sections = [
        Section("Executive summary", bullets(executive_summary(run, analysis))),
        Section("Findings", bullets(found)),
        _training_section(run, analysis, figures),
        _data_section(run, analysis, figures),
        _efficiency_section(analysis, figures),
        _evaluation_section(run, figures),
    ]
    rows = summary_rows(run, analysis)
    markdown = out_dir / REPORT_NAME
    markdown.write_text(document(f"Analysis report: {run.name}", sections, out_dir))
    return Report(out_dir, markdown, write_summary_csv(rows, out_dir / SUMMARY_NAME), figures, sections, found, rows)


def write_run_report(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    metrics: str | os.PathLike | None = None,
    smoothing: float = TENSORBOARD_SMOOTHING,
    tail_fraction: float = 0.1,
) -> Report:
    """The report of one run directory into ``out_dir``."""
    run = load_run(run_dir, metrics)
    return write_analysed_run(run, analyse(run, tail_fraction), Path(out_dir), smoothing)
