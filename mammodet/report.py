"""``python -m mammodet.report run_dir=DIR [out_dir=DIR] [metrics=FILE]``: the analysis report of a training
run, or of every run of a multirun sweep (figures, ``analysis_report.md``, ``project_summary.csv``);
``python -m mammodet.report eval_dirs=[A,B,C] out_dir=OUT``: the cross-dataset table and plot of evaluations."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from mammodet.analysis.cross_dataset import write_cross_dataset
from mammodet.analysis.writer import write_report
from mammodet.cli import command
from mammodet.errors import UserError


@command("report")
def main(cfg: DictConfig) -> None:
    """Write the report and print where it is and what it found; a run folder with nothing to report is an error
    naming it."""
    if cfg.get("eval_dirs"):
        for path in write_cross_dataset(list(cfg.eval_dirs), cfg.out_dir).values():
            print(path)
        return
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise UserError(
            f"run_dir={run_dir}: no such folder; expected a training run (logs/<task>/runs/<time>) or a sweep of "
            "runs (logs/<task>/multiruns/<time>)"
        )
    if cfg.metrics and not Path(cfg.metrics).is_file():
        raise UserError(f"metrics={cfg.metrics}: no such file; expected an evaluator's metrics.json")
    try:
        report = write_report(run_dir, cfg.out_dir, cfg.metrics, cfg.smoothing, cfg.tail_fraction)
    except FileNotFoundError as error:  # the analysis names what the folder lacks (event files, runs)
        raise UserError(f"run_dir={run_dir}: {str(error).removeprefix(f'{run_dir}: ')}") from error
    print(f"{report.markdown}\n{report.summary_csv}")
    for path in report.figures.values():
        print(path)
    for line in report.findings:
        print(f"- {line}")


if __name__ == "__main__":
    main()
