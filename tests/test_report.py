"""The analysis report: its numbers equal the event files and COCO files, every figure exists, evaluation
results with intervals are shown, sweeps compare their runs, and the command line works."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_sweep
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from mammodet.analysis.evaluation import load_evaluation
from mammodet.analysis.events import Series, smooth
from mammodet.analysis.findings import findings
from mammodet.analysis.run import analyse, load_run
from mammodet.analysis.summary import trend
from mammodet.analysis.writer import write_report
from mammodet.data.classes import LABEL_NAMES

REPO = Path(__file__).resolve().parent.parent
RUN_FIGURES = {
    "losses",
    "roi_accuracy",
    "learning_rate",
    "validation",
    "data_vs_compute",
    "class_distribution",
    "evaluation",
}


@pytest.fixture(scope="module")
def sweep_dir(synthetic_classic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sweep(synthetic_classic, tmp_path_factory.getbasetemp() / "report_runs")


def read_summary(path: Path) -> dict[tuple[str, str, str, str], float]:
    with path.open() as file:
        return {(r["run"], r["section"], r["metric"], r["statistic"]): float(r["value"]) for r in csv.DictReader(file)}


def accumulated(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per tag straight from every event file, read independently of mammodet.analysis."""
    points: dict[str, list[tuple[int, float]]] = {}
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={SCALARS: 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            points.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return points


def test_run_report_numbers_match_the_event_and_coco_files(sweep_dir: Path, tmp_path: Path) -> None:
    run_dir = sweep_dir / "0"
    report = write_report(run_dir, tmp_path / "report")
    summary = read_summary(report.summary_csv)
    events = accumulated(run_dir)

    train_tags = [t for t in events if t.startswith("train/")]
    assert {
        "train/loss",
        "train/loss_classifier",
        "train/loss_box_reg",
        "train/loss_objectness",
        "train/loss_rpn_box_reg",
        "train/lr",
        "train/fast_rcnn/cls_accuracy",
        "train/fast_rcnn/fg_cls_accuracy",
        "train/data_wait_s",
        "train/step_s",
    } <= set(train_tags)
    for tag in train_tags:
        points = sorted(events[tag])
        assert len({s for s, _ in points}) == len(points), tag  # one point per step in a fresh run
        values = np.array([v for _, v in points])
        assert summary[("0", "training", tag, "n")] == len(values)
        assert summary[("0", "training", tag, "final")] == values[-1]
        assert summary[("0", "training", tag, "first")] == values[0]
        assert summary[("0", "training", tag, "max")] == values.max()
        assert summary[("0", "training", tag, "mean")] == pytest.approx(values.mean(), rel=1e-12)

    val = np.array([v for _, v in sorted(events["val/map_50"])])
    assert len(val) == 2 and summary[("0", "validation", "val/map_50", "max")] == val.max()
    assert summary[("0", "validation", "val/map_50", "final")] == val[-1]
    assert summary[("0", "validation", "val/map_50", "epoch_of_max")] == int(np.argmax(val))  # one per epoch

    wait, step = dict(events["train/data_wait_s"]), dict(events["train/step_s"])
    shares = [wait[s] / (wait[s] + step[s]) for s in sorted(set(wait) & set(step))]
    assert summary[("0", "efficiency", "timing", "median_wait_share")] == pytest.approx(np.median(shares), rel=1e-12)
    assert summary[("0", "efficiency", "run", "steps")] == 8 and summary[("0", "efficiency", "run", "epochs")] == 2
    assert any(f"Data wait was {np.median(shares):.1%} of step time" in line for line in report.findings)
    peak = f"peaked at epoch {int(np.argmax(val))} (step" if val.max() > 0 else f"stayed at {val.max():.4f} over 2"
    assert any(line.startswith(f"val/map_50 {peak}") for line in report.findings)

    converted = sweep_dir.parent / "converted"  # tiny_overrides' data.image_dir
    for split in ("train", "val", "test"):
        coco = json.loads((converted / "annotations" / f"{split}.json").read_text())
        assert summary[("0", "data", split, "images")] == len(coco["images"])
        assert summary[("0", "data", split, "patients")] == len({i["patient_id"] for i in coco["images"]})
        counts = Counter(LABEL_NAMES[a["category_id"]] for a in coco["annotations"])
        for name in LABEL_NAMES.values():
            assert summary[("0", "data", f"{split}/{name}", "lesions")] == counts[name]

    test_metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert summary[("0", "evaluation", "map_50", "value")] == test_metrics["map_50"]
    for name in LABEL_NAMES.values():
        for metric in ("ap_50", "f1", "recall"):
            value = test_metrics.get(f"{metric}/{name}")
            if value is not None and value >= 0:  # -1: COCOeval's "no ground truth", reported as missing
                assert summary[("0", "evaluation", f"{name}/{metric}", "value")] == pytest.approx(value, nan_ok=True)

    assert set(report.figures) == RUN_FIGURES
    markdown = report.markdown.read_text()
    for path in report.figures.values():
        assert path.is_file() and path.stat().st_size > 10_000
        assert f"]({path.name})" in markdown
    for title in ("Executive summary", "Findings", "Training", "Data", "Efficiency", "Evaluation"):
        assert f"\n## {title}\n" in markdown
    assert f"{np.median(shares):.1%}" in markdown


def test_evaluate_metrics_with_intervals_and_figures_are_reported(sweep_dir: Path, tmp_path: Path) -> None:
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    metrics = {
        "map": 0.21,
        "map_50": 0.43,
        "map_75": 0.18,
        "f1_macro": 0.37,
        "f1_weighted": 0.41,
        "per_class": {
            name: {
                "ap_50": 0.3 + 0.1 * i,
                "precision": 0.5,
                "recall": 0.4 + 0.1 * i,
                "f1": 0.44 + 0.05 * i,
                "tp": 4 + i,
                "fp": 5,
                "fn": 6 - i,
            }
            for i, name in enumerate(("calcification", "mass_low", "mass_high"))
        },
        "froc": {
            "fps_per_image": [0.0, 0.1, 0.5, 2.0],
            "sensitivity": [0.0, 0.3, 0.6, 0.8],
            "sensitivity_at": {"0.125": 0.3, "0.5": 0.6, "2.0": 0.8},
            "cpm": 0.57,
        },
        "ci": {
            "map_50": [0.31, 0.55],
            "f1_macro": {"low": 0.25, "high": 0.49},
            "per_class": {"calcification": {"ap_50": [0.3, 0.12, 0.47]}},
            "sens_at_1fp": {"value": 0.6, "low": 0.45, "high": 0.7},
            "confidence": 0.9,
            "n_boot": 1000,
        },
    }
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    figure = Figure(figsize=(2, 2))  # stands in for a figure the evaluator writes
    figure.subplots().plot([0, 1], [0, 1])
    figure.savefig(evaluation / "froc.png")

    report = write_report(sweep_dir / "0", tmp_path / "report", metrics=evaluation / "metrics.json")
    summary = read_summary(report.summary_csv)
    assert summary[("0", "evaluation", "map_50", "value")] == 0.43
    assert (summary[("0", "evaluation", "map_50", "ci_low")], summary[("0", "evaluation", "map_50", "ci_high")]) == (
        0.31,
        0.55,
    )
    assert summary[("0", "evaluation", "calcification/ap_50", "ci_high")] == 0.47
    assert summary[("0", "evaluation", "f1_macro", "ci_low")] == 0.25
    assert summary[("0", "evaluation", "mass_low/fp", "value")] == 5
    assert summary[("0", "evaluation", "sens_at_1fp", "value")] == 0.6
    assert (report.out_dir / "evaluate" / "froc.png").is_file() and "evaluate/froc" in report.figures
    markdown = report.markdown.read_text()
    assert "| map_50 | 0.43 | 0.31–0.55 |" in markdown and "](evaluate/froc.png)" in markdown
    assert any("Test map_50 is 0.4300 (90% CI 0.3100–0.5500, width 0.240: wide" in f for f in report.findings)
    assert any("Weakest class by test ap_50: calcification (0.300, 90% CI 0.120–0.470)" in f for f in report.findings)
    assert load_evaluation(evaluation / "metrics.json").froc["sensitivity_at"] == {0.125: 0.3, 0.5: 0.6, 2.0: 0.8}


def test_sweep_report_compares_its_runs(sweep_dir: Path, tmp_path: Path) -> None:
    report = write_report(sweep_dir, tmp_path / "sweep_report")
    with (report.out_dir / "sweep_comparison.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [r["run"] for r in rows] == ["0", "1"] and [r["model.lr"] for r in rows] == ["0.01", "0.02"]
    summary = read_summary(report.summary_csv)
    for row in rows:
        best = max(v for _, v in accumulated(sweep_dir / row["run"])["val/map_50"])
        assert float(row["best val/map_50"]) == best == summary[(row["run"], "validation", "val/map_50", "max")]
    assert report.figures["sweep_comparison"].is_file()
    assert set(report.runs) == {"0", "1"}
    for run in report.runs.values():
        assert set(run.figures) == RUN_FIGURES and run.markdown.is_file()
    markdown = report.markdown.read_text()
    assert "](sweep_comparison.png)" in markdown and "](runs/0/analysis_report.md)" in markdown
    assert "`model.lr` (0.01, 0.02)" in markdown
    assert any(f.startswith(("Best run by val/map_50: ", "All 2 runs reached the same")) for f in report.findings)


def test_command_line(sweep_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "mammodet.report", f"run_dir={sweep_dir / '1'}", f"out_dir={out}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "analysis_report.md").is_file() and (out / "project_summary.csv").is_file()
    assert "Data wait was" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli"]  # Hydra wrote nothing else


def test_data_rewritten_after_the_run_is_flagged(sweep_dir: Path) -> None:
    run = load_run(sweep_dir / "0")
    analysis = analyse(run)
    assert run.data_written < analysis.started
    assert not any("after this run started" in line for line in findings(run, analysis))
    rewritten = replace(run, data_written=analysis.started + 60)
    assert any("after this run started" in line for line in findings(rewritten, analysis))


def test_a_run_without_event_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("task_name: x\n")
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        write_report(tmp_path, tmp_path / "report")


def test_smoothing_and_trend() -> None:
    values = np.array([1.0, 2.0, np.nan, 4.0])
    expected, last, count = [], 0.0, 0
    for v in values:  # TensorBoard's debiased EMA, non-finite points skipped
        if np.isfinite(v):
            last, count = last * 0.6 + 0.4 * v, count + 1
        expected.append(last / (1 - 0.6**count))
    assert np.allclose(smooth(values, 0.6), expected)
    steps = np.arange(100)
    falling = Series(steps, 10 - 0.05 * steps, steps.astype(float))
    noisy = Series(steps, np.random.default_rng(0).normal(1.0, 0.1, 100), steps.astype(float))
    assert trend({"t": falling}, "t", 0.1).direction == "falling"
    assert trend({"t": noisy}, "t", 0.1).direction == "flat"
