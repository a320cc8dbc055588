"""``python -m mammodet.report run_dir=DIR [out_dir=DIR] [metrics=FILE]``: the analysis report of a training
run, or of every run of a multirun sweep (figures, ``analysis_report.md``, ``project_summary.csv``);
``python -m mammodet.report eval_dirs=[A,B,C] out_dir=OUT``: the cross-dataset table and plot of evaluations."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mammodet.analysis.cross_dataset import write_cross_dataset
from mammodet.analysis.writer import write_report
from mammodet.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="report")
def main(cfg: DictConfig) -> None:
    """Write the report and print where it is and what it found."""
    if cfg.get("eval_dirs"):
        for path in write_cross_dataset(list(cfg.eval_dirs), cfg.out_dir).values():
            print(path)
        return
    report = write_report(cfg.run_dir, cfg.out_dir, cfg.metrics, cfg.smoothing, cfg.tail_fraction)
    print(f"{report.markdown}\n{report.summary_csv}")
    for path in report.figures.values():
        print(path)
    for line in report.findings:
        print(f"- {line}")


if __name__ == "__main__":
    main()
