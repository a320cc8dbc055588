"""The analysis report of a training run (or of every run of a sweep): figures, ``analysis_report.md`` and
``project_summary.csv``, every number computed from the run's event files, config and evaluation results.

``write_report(path, out_dir)`` picks the mode: a run directory (``tensorboard/``, ``config.yaml``) gets one
report; a multirun sweep directory (``<ts>/<n>/`` runs) gets a report per run under ``runs/<n>/`` plus a
comparison table and figure. ``project_summary.csv`` is long-form: ``run, section, metric, statistic, value``.
"""

from __future__ import annotations

import os

from mammodet.analysis.events import TENSORBOARD_SMOOTHING
from mammodet.analysis.run import is_run_dir
from mammodet.analysis.run_writer import Report, write_run_report
from mammodet.analysis.sweep_writer import write_sweep_report


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
