"""Run analysis: TensorBoard scalars, dataset statistics and evaluation results turned into figures, a
markdown report and a CSV summary (``python -m mammodet.report``, ``notebooks/results_analysis.ipynb``)."""

from mammodet.analysis.events import load_scalars
from mammodet.analysis.run import analyse, load_run
from mammodet.analysis.run_writer import Report
from mammodet.analysis.writer import write_report

__all__ = ["Report", "analyse", "load_run", "load_scalars", "write_report"]
