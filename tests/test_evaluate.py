"""``mammodet.evaluate``: hand-computed metrics.json in file mode, checkpoint mode equal to validation's scoring
and to file mode on its own predictions, every output file, bad inputs, the CLI, validation logging, and the
fast bootstrap AP against re-running COCOeval."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from helpers import map_statistic, random_data, tiny_overrides

from mammodet.config import compose
from mammodet.data.coco import load_records
from mammodet.errors import UserError
from mammodet.evaluate import OUTPUTS, checkpoint_datamodule, evaluate, main
from mammodet.metrics import DetectionEvaluator
from mammodet.metrics.ap_bootstrap import ap_statistic
from mammodet.metrics.plots import missed_lesions, worst_false_positives
from mammodet.metrics.results import EvalSettings, evaluate_detections
from mammodet.models import FasterRCNNModule
from mammodet.train import train

REPO = Path(__file__).resolve().parent.parent
FAST = ["n_boot=50", "num_workers=0", "batch_size=2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_run(synthetic_classic: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny detector whose best checkpoint is chosen by ``val/sens_at_1fp``; its metrics and folders."""
    work = tmp_path_factory.mktemp("evaluate_run")
    overrides = [
        *tiny_overrides(synthetic_classic, work),
        "trainer.check_val_every_n_epoch=1",
        "trainer.limit_val_batches=1.0",
        "test=false",
        "optimized_metric=val/sens_at_1fp",
    ]
    torch.manual_seed(0)
    metrics, objects = train(compose("train", overrides))
    (best,) = (work / "run" / "checkpoints").glob("best-*.ckpt")
    return {"metrics": metrics, "trainer": objects["trainer"], "best": best, "converted": work / "converted"}


# ---------------------------------------------------------------- hand-made COCO files

# Three 100x100 images, two patients. Boxes are [x, y, w, h].
A, B, C, D = [10, 10, 20, 20], [50, 50, 30, 30], [20, 20, 40, 40], [60, 10, 20, 20]
IMAGES = [
    {"id": 1, "file_name": "a.png", "width": 100, "height": 100, "patient_id": "P_00001", "key": "P_00001_LEFT_CC"},
    {"id": 2, "file_name": "b.png", "width": 100, "height": 100, "patient_id": "P_00001", "key": "P_00001_LEFT_MLO"},
    {"id": 3, "file_name": "c.png", "width": 100, "height": 100, "patient_id": "P_00002", "key": "P_00002_LEFT_CC"},
]
LESIONS = [(1, 1, A), (1, 2, B), (2, 3, C), (3, 2, D)]  # (image, class, box): calc A, mass_low B and D, mass_high C
RESULTS = [
    {"image_id": 1, "category_id": 1, "bbox": A, "score": 0.9},  # TP calcification
    {"image_id": 1, "category_id": 3, "bbox": B, "score": 0.8},  # on the mass_low B, called mass_high: FP
    {"image_id": 2, "category_id": 3, "bbox": C, "score": 0.7},  # TP mass_high
    {"image_id": 2, "category_id": 1, "bbox": [70, 70, 10, 10], "score": 0.3},  # FP below the threshold
    {"image_id": 3, "category_id": 1, "bbox": [40, 40, 20, 20], "score": 0.6},  # FP on no lesion; D is missed
]


def write_coco(folder: Path, results: Any = RESULTS, images: list[dict] = IMAGES) -> tuple[Path, Path]:
    """The hand-made annotations, results and PNG images under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    coco = {
        "images": images,
        "annotations": [
            {"id": i, "image_id": image, "category_id": label, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
            for i, (image, label, box) in enumerate(LESIONS, start=1)
        ],
        "categories": [
            {"id": 1, "name": "calcification"},
            {"id": 2, "name": "mass_low"},
            {"id": 3, "name": "mass_high"},
        ],
    }
    for image in images:
        cv2.imwrite(str(folder / image["file_name"]), np.full((100, 100), 90 + 40 * image["id"], np.uint8))
    (folder / "annotations.json").write_text(json.dumps(coco))
    (folder / "results.json").write_text(json.dumps(results))
    return folder / "annotations.json", folder / "results.json"


def file_cfg(annotations: Path, predictions: Path, out_dir: Path, *extra: str) -> Any:
    return compose(
        "evaluate", [f"annotations={annotations}", f"predictions={predictions}", f"out_dir={out_dir}", *FAST, *extra]
    )


def test_file_mode_hand_computed_metrics_and_every_file(tmp_path: Path) -> None:
    annotations, predictions = write_coco(tmp_path / "coco")
    out = tmp_path / "out"
    metrics = evaluate(file_cfg(annotations, predictions, out, f"image_dir={tmp_path / 'coco'}"))

    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(OUTPUTS)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    # calcification: AP 1; mass_low: no detection; mass_high: the FP (0.8) outranks the TP (0.7): AP 0.5.
    # Boxes are exact, so every IoU threshold gives the same AP.
    for key in ("map", "map_50", "map_75", "ap_10", "ap_25"):
        assert metrics[key] == pytest.approx(0.5)
    # At score >= 0.5: calcification TP 1 FP 1; mass_low FN 2; mass_high TP 1 FP 1.
    assert metrics["f1_macro"] == pytest.approx(4 / 9)
    assert metrics["f1_weighted"] == pytest.approx((2 / 3 + 2 / 3) / 4)
    assert metrics["f1_micro"] == pytest.approx(4 / 8)
    calc, mass_low, mass_high = (metrics["per_class"][c] for c in ("calcification", "mass_low", "mass_high"))
    assert {k: calc[k] for k in ("ap_50", "precision", "recall", "tp", "fp", "fn")} == pytest.approx(
        {"ap_50": 1.0, "precision": 0.5, "recall": 1.0, "tp": 1, "fp": 1, "fn": 0}
    )
    assert calc["f1"] == pytest.approx(2 / 3) and calc["best_threshold"] == pytest.approx(0.9)
    assert (mass_low["tp"], mass_low["fp"], mass_low["fn"], mass_low["f1"]) == (0, 0, 2, 0.0)
    assert mass_low["ap_50"] == 0.0 and mass_low["best_threshold"] is None  # no prediction: null, not NaN
    assert (mass_high["ap_50"], mass_high["precision"], mass_high["best_f1"]) == pytest.approx((0.5, 0.5, 2 / 3))
    # FROC, class-agnostic: A, B, C hit at 0 FPs, D never: 3/4 at every rate.
    assert metrics["froc"]["sensitivity_at"] == pytest.approx(
        {r: 0.75 for r in ("0.125", "0.25", "0.5", "1", "2", "4", "8")}
    )
    assert metrics["froc"]["cpm"] == pytest.approx(0.75)
    # The curve's corners: A, B, C detected at 0 FPs, then the two FPs (2 per 3 images).
    assert metrics["froc"]["fps_per_image"] == pytest.approx([0, 0, 0, 0, 2 / 3])
    assert metrics["froc"]["sensitivity"] == pytest.approx([0, 0.25, 0.5, 0.75, 0.75])
    # mass_high: its one FP per 3 images (0.8) comes before its TP, so 0 below 1/3 FP per image.
    per_class = metrics["froc"]["per_class"]
    assert per_class["mass_high"]["cpm"] == pytest.approx(5 / 7) and per_class["mass_low"]["num_lesions"] == 2
    assert (calc["sens_at_1fp"], mass_low["sens_at_1fp"], mass_high["sens_at_1fp"]) == (1.0, 0.0, 1.0)
    # Rows ground truth, columns predicted, 0 = background.
    assert metrics["confusion_matrix"]["counts"] == [[0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 1]]
    assert (metrics["num_images"], metrics["num_patients"], metrics["num_lesions"], metrics["num_predictions"]) == (
        3,
        2,
        4,
        5,
    )
    ci = metrics["ci"]
    for key, value in (("map_50", 0.5), ("f1_macro", 4 / 9), ("sens_at_1fp", 0.75)):
        assert ci[key]["value"] == pytest.approx(value) and ci[key]["low"] <= value <= ci[key]["high"]
    assert (ci["n_boot"], ci["resampled"], metrics["source"]["mode"]) == (50, "patients", "files")
    assert "| calcification | 1 | 1.000 |" in (out / "metrics.md").read_text()
    written = json.loads((out / "predictions.json").read_text())
    assert sorted(written, key=lambda r: -r["score"]) == sorted(RESULTS, key=lambda r: -r["score"])


def test_gallery_selection(tmp_path: Path) -> None:
    annotations, _ = write_coco(tmp_path)
    records = load_records(annotations)
    preds = [
        {
            "boxes": np.array(
                [[b[0], b[1], b[0] + b[2], b[1] + b[3]] for r in RESULTS if r["image_id"] == i for b in [r["bbox"]]]
            ).reshape(-1, 4),
            "scores": np.array([r["score"] for r in RESULTS if r["image_id"] == i]),
            "labels": np.array([r["category_id"] for r in RESULTS if r["image_id"] == i]),
        }
        for i in (1, 2, 3)
    ]
    targets = [{"boxes": r.boxes, "labels": r.labels} for r in records]
    names = ("calcification", "mass_low", "mass_high")
    evaluation = evaluate_detections(preds, targets, [r.patient_id for r in records], names, EvalSettings(n_boot=5))

    false_pos = worst_false_positives(evaluation.matches, preds, records, names, n=2)
    assert [item.caption for item in false_pos] == [
        "P_00001_LEFT_CC\nmass_high 0.80 on mass_low",
        "P_00002_LEFT_CC\ncalcification 0.60",
    ]
    assert false_pos[0].box.tolist() == [50, 50, 80, 80] and false_pos[1].box.tolist() == [40, 40, 60, 60]
    missed = missed_lesions(evaluation.lesions, targets, records, names, 0.5, n=5)
    assert [item.box.tolist() for item in missed] == [[50, 50, 80, 80], [60, 10, 80, 30]]  # B and D
    assert missed[0].caption == "P_00001_LEFT_CC\nmass_low, no hit"


def test_file_mode_without_images_skips_only_galleries(tmp_path: Path) -> None:
    annotations, predictions = write_coco(tmp_path / "coco")
    evaluate(file_cfg(annotations, predictions, tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(o for o in OUTPUTS if "gallery" not in o)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing annotations", "no such file; expected a COCO instances json"),
        ("no images", "COCO annotations hold no images"),
        ("unknown image ids", "predictions for 2 image ids not in the annotations: 7, 9"),
        ("not a list", "predictions must be a COCO results list"),
        ("bad category", "entry 0 has category_id 4"),
        ("negative width", "entry 1 needs bbox [x, y, w, h] with w, h >= 0"),
        ("text score", "entry 0 needs a finite score"),
        ("invalid json", "predictions file is not valid JSON"),
    ],
)
def test_bad_input_errors_name_the_file(case: str, message: str, tmp_path: Path) -> None:
    annotations, predictions = write_coco(tmp_path)
    named = predictions
    if case == "missing annotations":
        annotations = tmp_path / "missing.json"
        named = f"annotations={annotations}"
    elif case == "no images":
        annotations.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
        named = annotations
    elif case == "unknown image ids":
        predictions.write_text(json.dumps([{**RESULTS[0], "image_id": 9}, {**RESULTS[0], "image_id": 7}]))
    elif case == "not a list":
        predictions.write_text(json.dumps({"annotations": RESULTS}))
    elif case == "bad category":
        predictions.write_text(json.dumps([{**RESULTS[0], "category_id": 4}]))
    elif case == "negative width":
        predictions.write_text(json.dumps([RESULTS[0], {**RESULTS[1], "bbox": [1, 1, -2, 3]}]))
    elif case == "text score":
        predictions.write_text(json.dumps([{**RESULTS[0], "score": "0.9"}]))
    else:
        predictions.write_text("[{")
    with pytest.raises(UserError, match=re.escape(f"{named}: {message}")):
        evaluate(file_cfg(annotations, predictions, tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # nothing is created before the inputs are read


def test_default_out_dir_is_beside_the_run_or_in_the_log_dir() -> None:
    ckpt = compose("evaluate", ["ckpt_path=logs/demo/runs/r1/checkpoints/best.ckpt", "split=val"]).out_dir
    assert re.fullmatch(r"logs/demo/runs/r1/evaluate_val_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", ckpt)
    assert re.fullmatch(r"elsewhere/evaluate/[\d_-]+", compose("evaluate", ["paths.log_dir=elsewhere"]).out_dir)


def test_mode_must_be_one_or_the_other(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="either ckpt_path"):
        evaluate(compose("evaluate", [f"out_dir={tmp_path}"]))
    with pytest.raises(UserError, match="either ckpt_path"):
        evaluate(compose("evaluate", [f"out_dir={tmp_path}", "ckpt_path=x.ckpt", "predictions=p.json"]))
    with pytest.raises(UserError, match=re.escape(f"ckpt_path={tmp_path / 'x.ckpt'}: no such file")):
        evaluate(compose("evaluate", [f"out_dir={tmp_path}", f"ckpt_path={tmp_path / 'x.ckpt'}"]))


def test_cli_prints_the_table(tmp_path: Path) -> None:
    annotations, predictions = write_coco(tmp_path / "coco")
    args = [f"annotations={annotations}", f"predictions={predictions}", f"out_dir={tmp_path / 'out'}", "n_boot=20"]
    result = subprocess.run(
        [sys.executable, "-m", "mammodet.evaluate", *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| mass_high | 1 | 0.500 |" in result.stdout
    assert (tmp_path / "out" / "metrics.json").is_file() and (tmp_path / "out" / ".hydra" / "config.yaml").is_file()


def test_cli_exits_with_the_error_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    annotations, _ = write_coco(tmp_path)
    missing = tmp_path / "nope.json"
    # Hydra's main passes a given config straight to the function.
    with pytest.raises(SystemExit) as info:
        main(file_cfg(annotations, missing, tmp_path / "out"))
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: predictions={missing}: no such file; expected a COCO results json\n"


# ---------------------------------------------------------------- checkpoint mode and validation


def test_validation_logs_the_evaluate_metrics_and_picks_the_best_by_any(tiny_run: dict[str, Any]) -> None:
    metrics = tiny_run["metrics"]
    expected = {"val/map_50", "val/mar_100", "val/f1_macro", "val/f1_weighted", "val/froc_cpm", "val/sens_at_1fp"}
    assert expected | {"val/sens_at_0.125fp", "val/f1/calcification", "val/recall/mass_high"} <= set(metrics)
    assert tiny_run["trainer"].checkpoint_callback.monitor == "val/sens_at_1fp"
    assert tiny_run["best"].name.startswith("best-")


def test_checkpoint_mode_scores_like_validation_and_like_file_mode(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    cfg = compose("evaluate", [f"ckpt_path={tiny_run['best']}", "split=test", f"out_dir={out}", *FAST])
    metrics = evaluate(cfg)
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(OUTPUTS)
    assert metrics["source"] == {
        "mode": "checkpoint",
        "checkpoint": str(tiny_run["best"]),
        "split": "test",
        "annotations": str(tiny_run["converted"] / "annotations" / "test.json"),
    }

    # Validation's scoring: whole images shrunk to max_side, boxes in those pixels.
    datamodule = checkpoint_datamodule(tiny_run["best"], {})
    datamodule.setup()
    model = FasterRCNNModule.load_from_checkpoint(tiny_run["best"], map_location="cpu").eval()
    evaluator = DetectionEvaluator()
    dataset = datamodule.eval_dataset("test")
    with torch.no_grad():
        for i in range(len(dataset)):
            image, target = dataset[i]
            (pred,) = model.predict_step([image], i)
            evaluator.update([pred], [{"boxes": target["boxes"], "labels": target["labels"]}])
    validation = evaluator.compute()
    assert metrics["num_predictions"] > 0
    # Boxes differ by the float32 rounding of validation's pixels: equal to well below a rank change.
    assert metrics["map_50"] == pytest.approx(validation["map_50"], abs=1e-6)
    assert metrics["f1_macro"] == pytest.approx(validation["f1_macro"], abs=1e-9, nan_ok=True)
    assert metrics["froc"]["cpm"] == pytest.approx(validation["froc_cpm"], abs=1e-9)

    # Re-scoring the written predictions as any detector's output gives the same metrics.json.
    again = evaluate(
        file_cfg(
            metrics["source"]["annotations"],
            out / "predictions.json",
            tmp_path / "files",
            f"image_dir={tiny_run['converted']}",
        )
    )
    assert {k: v for k, v in again.items() if k != "source"} == {k: v for k, v in metrics.items() if k != "source"}


def test_checkpoint_mode_data_override_names_the_missing_annotations(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    cfg = compose("evaluate", [f"ckpt_path={tiny_run['best']}", f"data.image_dir={tmp_path}", f"out_dir={tmp_path}"])
    with pytest.raises(UserError, match=re.escape(f"split=test: {tmp_path / 'annotations' / 'test.json'} does not")):
        evaluate(cfg)


# ---------------------------------------------------------------- fast bootstrap AP


@pytest.mark.parametrize("label", [None, 1, 3])
def test_weighted_ap_equals_rerunning_cocoeval_on_repeated_images(label: int | None) -> None:
    preds, targets = random_data(seed=3, num_images=30)
    weights = np.concatenate([np.ones((1, 30)), np.random.default_rng(0).integers(0, 3, (5, 30))]).astype(float)
    key = "map_50" if label is None else f"ap_50/{('calcification', 'mass_low', 'mass_high')[label - 1]}"
    expected = map_statistic(preds, targets, key=key)(weights)
    np.testing.assert_allclose(ap_statistic(preds, targets, 0.5, label)(weights), expected, atol=1e-12)
