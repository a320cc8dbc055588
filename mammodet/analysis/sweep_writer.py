"""The report of a multirun sweep: a report per run under ``runs/<name>/``, and their comparison (varied
config values against results) as ``sweep_comparison.csv``, a figure and ``analysis_report.md``."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import mammodet.analysis.plots as plots
from mammodet.analysis.events import TENSORBOARD_SMOOTHING
from mammodet.analysis.findings import BOTTLENECK_SHARE
from mammodet.analysis.markdown import Section, bullets, document, number_text, table
from mammodet.analysis.run import Analysis, Run, analyse, is_run_dir, load_run
from mammodet.analysis.run_writer import REPORT_NAME, SUMMARY_NAME, Report, write_analysed_run, write_summary_csv
from mammodet.analysis.summary import PRIMARY_VAL, TOTAL_LOSS

SWEEP_TABLE_NAME = "sweep_comparison.csv"


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
        run.name: write_analysed_run(run, analysis, out_dir / "runs" / run.name, smoothing)
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
    table_text = table(header, [[number_text(v) if not isinstance(v, str) else v for v in row] for row in rows])
    links = [
        f"- [{name}]({r.markdown.relative_to(out_dir).as_posix()}): {r.findings[0] if r.findings else ''}"
        for name, r in reports.items()
    ]
    sections = [
        Section(
            "Executive summary",
            bullets(
                [
                    f"Sweep `{sweep_dir}`: {len(runs)} runs; varied: "
                    + (", ".join(f"`{k}` ({', '.join(map(str, v))})" for k, v in varied.items()) or "nothing")
                    + "."
                ]
            ),
        ),
        Section("Findings", bullets(found)),
        Section("Comparison", f"Also in `{SWEEP_TABLE_NAME}`.\n\n{table_text}", tuple(figures.values())),
        Section("Runs", "\n".join(links)),
    ]
    markdown = out_dir / REPORT_NAME
    markdown.write_text(document(f"Sweep report: {sweep_dir.name}", sections, out_dir))
    all_rows = [row for r in reports.values() for row in r.rows]
    summary = write_summary_csv(all_rows, out_dir / SUMMARY_NAME)
    return Report(out_dir, markdown, summary, figures, sections, found, all_rows, reports)
