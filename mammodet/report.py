"""``python -m mammodet.report run_dir=DIR [out_dir=DIR] [metrics=FILE]``: the analysis report of a training
run, or of every run of a multirun sweep (figures, ``analysis_report.md``, ``project_summary.csv``)."""

from __future__ import annotations

from omegaconf import DictConfig

from mammodet.analysis.writer import write_report
from mammodet.cli import command


@command("report")
def main(cfg: DictConfig) -> None:
    """Write the report and print where it is and what it found."""
    report = write_report(cfg.run_dir, cfg.out_dir, cfg.metrics, cfg.smoothing, cfg.tail_fraction)
    print(f"{report.markdown}\n{report.summary_csv}")
    for path in report.figures.values():
        print(path)
    for line in report.findings:
        print(f"- {line}")


if __name__ == "__main__":
    main()
