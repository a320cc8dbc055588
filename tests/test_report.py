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
from mammodet.analysis.events import Series, epoch_at, smooth
from mammodet.analysis.findings import findings
from mammodet.analysis.plots import plot_validation
from mammodet.analysis.run import analyse, load_run
from mammodet.analysis.summary import trend
from mammodet.analysis.verdict import training_verdict
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
    assert summary[("0", "validation", "val/map_50", "epoch_of_max")] == int(np.argmax(val)) + 1  # one per epoch

    wait, step = dict(events["train/data_wait_s"]), dict(events["train/step_s"])
    shares = [wait[s] / (wait[s] + step[s]) for s in sorted(set(wait) & set(step))]
    assert summary[("0", "efficiency", "timing", "median_wait_share")] == pytest.approx(np.median(shares), rel=1e-12)
    assert summary[("0", "efficiency", "run", "steps")] == 8 and summary[("0", "efficiency", "run", "epochs")] == 2
    assert any(f"Data wait was {np.median(shares):.1%} of step time" in line for line in report.findings)
    peak = (
        f"peaked at epoch {int(np.argmax(val)) + 1}/2 (step" if val.max() > 0 else f"stayed at {val.max():.4f} over 2"
    )
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


def logged_run(
    run_dir: Path, loss: np.ndarray, val_map_50: list[float], evaluation: dict | None = None, name: str = "x"
) -> Path:
    """A run directory as training leaves it, written without training: ``train/loss`` and Lightning's 0-based
    ``epoch`` at every step, ``val/map_50`` at the end of each epoch, ``config.yaml`` with ``trainer.max_epochs``,
    and ``evaluation`` as ``metrics.json`` (an evaluate file, keys with dots) or ``test_metrics.json``."""
    from torch.utils.tensorboard import SummaryWriter

    epochs = len(val_map_50)
    per_epoch = len(loss) // epochs
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    for step, value in enumerate(loss):
        writer.add_scalar("train/loss", float(value), step)
        writer.add_scalar("epoch", float(step // per_epoch), step)
    for epoch, value in enumerate(val_map_50):
        writer.add_scalar("val/map_50", value, (epoch + 1) * per_epoch - 1)
    writer.close()
    (run_dir / "config.yaml").write_text(f"task_name: {name}\ntrainer:\n  max_epochs: {epochs}\n")
    if evaluation is not None:
        file = "metrics.json" if "per_class" in evaluation else "test_metrics.json"
        (run_dir / file).write_text(json.dumps(evaluation))
    return run_dir


@pytest.mark.parametrize("outcome", ["train longer", "converged"])
def test_one_rule_says_train_longer_or_converged_never_both(outcome: str, tmp_path: Path) -> None:
    steps = np.arange(400)
    noise = np.random.default_rng(0).normal(0, 0.01, steps.size)
    if outcome == "train longer":  # loss still falling, validation best at the end
        loss, val = 2.0 - 0.004 * steps + noise, [0.1, 0.2, 0.3, 0.4]
    else:  # flat loss, validation peaked at epoch 2 and ended 2% below it
        loss, val = 0.5 + noise, [0.3, 0.5, 0.495, 0.49]
    run_dir = logged_run(tmp_path / "run", loss, val)
    report = write_report(run_dir, tmp_path / "report")
    markdown = report.markdown.read_text()
    other = {"train longer": "converged", "converged": "train longer"}[outcome]
    assert outcome in markdown and other not in markdown
    assert "more epochs" not in markdown and "more steps" not in markdown and "stopped earlier" not in markdown
    if outcome == "train longer":
        verdict = (
            "Verdict: train longer: train/loss was still falling over the last 10% of steps and val/map_50 was at "
            "its best at the last validation."
        )
        assert (
            "- val/map_50 peaked at epoch 4/4 (step 399) at 0.4000 over 4 validations; the last validation was "
            "the best.\n"
        ) in markdown
    else:
        verdict = (
            "Verdict: converged: train/loss was flat over the last 10% of steps and val/map_50 peaked at epoch 2/4 "
            "(step 199), before the last validation."
        )
        assert (
            "- val/map_50 peaked at epoch 2/4 (step 199) at 0.5000 over 4 validations; the last validation, "
            "epoch 4/4 (step 399), gave 0.4900 (2% below the peak).\n"
        ) in markdown
    assert markdown.count(verdict) == 2  # the executive summary and the findings say the same
    assert f"- {verdict}\n" in markdown.split("## Findings")[0]


def test_a_run_past_its_peak_and_a_rising_loss_are_neither(tmp_path: Path) -> None:
    steps = np.arange(400)
    noise = np.random.default_rng(0).normal(0, 0.01, steps.size)
    past = analyse(load_run(logged_run(tmp_path / "past", 2.0 - 0.004 * steps + noise, [0.2, 0.5, 0.4, 0.3])))
    assert training_verdict(past).text() == (
        "Verdict: converged: val/map_50 peaked at epoch 2/4 (step 199) and the last validation was 40% below it: "
        "use the best checkpoint."
    )
    rising = analyse(load_run(logged_run(tmp_path / "rising", 0.5 + 0.004 * steps + noise, [0.1, 0.2, 0.3, 0.4])))
    assert training_verdict(rising).text() == (
        "Verdict: unstable: train/loss rose over the last 10% of steps (check the learning rate)."
    )


def test_epochs_are_counted_from_1_as_the_progress_log(tmp_path: Path) -> None:
    """The progress log writes ``epoch {current_epoch + 1}/{max_epochs}`` (tests/test_train.py); the report, its
    CSV and its validation plot count the same way from Lightning's 0-based ``epoch`` scalar."""
    run_dir = logged_run(tmp_path / "run", np.linspace(1, 0.5, 40), [0.1, 0.3, 0.2, 0.25])
    run = load_run(run_dir)
    analysis = analyse(run)
    assert (analysis.epochs, analysis.max_epochs) == (4, 4)
    assert epoch_at(run.scalars, 0) == 1 and epoch_at(run.scalars, 39) == 4
    report = write_report(run_dir, tmp_path / "report")
    markdown = report.markdown.read_text()
    assert "- Best val/map_50: 0.3000 at epoch 2/4 (step 19).\n" in markdown
    assert "| `val/map_50` | 0.3 | epoch 2/4 (step 19) | 0.25 | 4 |" in markdown
    assert "epoch 0" not in markdown and "epoch 5" not in markdown
    assert "; 39 steps, 4 epochs, " in markdown
    summary = read_summary(report.summary_csv)
    assert summary[("run", "validation", "val/map_50", "epoch_of_max")] == 2
    assert summary[("run", "efficiency", "run", "epochs")] == 4
    figure = plot_validation(run.scalars)
    assert list(figure.axes[0].lines[0].get_xdata()) == [1, 2, 3, 4] and figure.axes[0].get_xlabel() == "epoch"


def test_a_class_without_ground_truth_or_detections_is_named_never_ranked(tmp_path: Path) -> None:
    per_class = {
        "calcification": {
            "ap_50": None,
            "precision": 0.0,
            "recall": 0.0,
            "f1": 0.0,
            "tp": 0,
            "fp": 4,
            "fn": 0,
            "support": 0,
        },
        "mass_low": {"ap_50": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 3, "support": 3},
        "mass_high": {
            "ap_50": 0.4,
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
            "tp": 2,
            "fp": 2,
            "fn": 2,
            "support": 4,
        },
    }
    metrics = {"map_50": 0.2, "score_threshold": 0.5, "per_class": per_class}
    run_dir = logged_run(tmp_path / "evaluated", np.linspace(1, 0.5, 40), [0.1, 0.2], metrics)
    lines = findings(load_run(run_dir), analyse(load_run(run_dir)))
    assert lines[-2:] == [
        "Class calcification: no ground truth in this split; not ranked.",
        "Class mass_low: no detections at score >= 0.5; not ranked.",
    ]
    assert not any("strongest" in line or "Weakest" in line or "(0.000)" in line for line in lines)

    per_class["calcification"] = {**per_class["mass_high"], "ap_50": 0.1, "tp": 1}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    lines = findings(load_run(run_dir), analyse(load_run(run_dir)))
    assert lines[-2:] == [
        "Class mass_low: no detections at score >= 0.5; not ranked.",
        "Weakest class by test ap_50: calcification (0.100); strongest: mass_high (0.400).",
    ]

    test_metrics = {  # training's test_metrics.json: -1 AP without lesions, no counts
        "map_50": 0.2,
        "ap_50/calcification": -1.0,
        "ap_50/mass_low": 0.0,
        "precision/mass_low": 0.0,
        "recall/mass_low": 0.0,
        "ap_50/mass_high": 0.4,
        "precision/mass_high": 0.5,
        "recall/mass_high": 0.5,
    }
    run_dir = logged_run(tmp_path / "trained", np.linspace(1, 0.5, 40), [0.1, 0.2], test_metrics)
    lines = findings(load_run(run_dir), analyse(load_run(run_dir)))
    assert lines[-2:] == [
        "Class calcification: no ground truth in this split; not ranked.",
        "Class mass_low: no detection matched a lesion at the score threshold; not ranked.",
    ]
    assert not any("strongest" in line or "Weakest" in line for line in lines)
