"""DetectionEvaluator: one flat dict, merged states, the vectorised FROC bootstrap against the curve and against
MONAI's CAMELYON16 algorithm, and file-mode evaluate importing neither torch nor Lightning."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_data

from mammodet.data.classes import CLASSES
from mammodet.metrics import (
    CAMELYON_FP_RATES,
    FROC_FP_RATES,
    DetectionEvaluator,
    froc,
    froc_statistic,
    lesion_records,
    mean_average_precision,
)
from mammodet.metrics.froc import froc_sensitivity
from mammodet.metrics.results import EvalSettings, evaluate_detections, json_ready

REPO = Path(__file__).resolve().parent.parent


def tied(preds: list[dict]) -> list[dict]:
    """The predictions with scores rounded to one decimal (0.1 at least): many ties between lesions and false
    positives."""
    return [{**p, "scores": (torch.round(p["scores"] * 10) / 10).clamp(min=0.1)} for p in preds]


def test_one_flat_dict_with_every_logged_key() -> None:
    a, b = [10.0, 10.0, 40.0, 40.0], [60.0, 60.0, 90.0, 100.0]
    target = {"boxes": torch.tensor([a, b]), "labels": torch.tensor([1, 3])}
    prediction = {"boxes": torch.tensor([a, b]), "scores": torch.tensor([0.8, 0.9]), "labels": torch.tensor([2, 3])}
    evaluator = DetectionEvaluator()
    evaluator.update([prediction], [target])
    values = evaluator.compute()
    assert values["ap_50/calcification"] == 0.0  # its only box was called mass_low
    assert values["ap_50/mass_high"] == pytest.approx(1.0)  # COCO: tp / (tp + fp + eps)
    assert math.isnan(values["ap_50/mass_low"])  # no ground truth: undefined
    assert values["map_50"] == pytest.approx(0.5) and values["f1/mass_high"] == 1.0 and values["sens_at_1fp"] == 1.0
    keys = {"map", "map_50", "map_75", "mar_100", "ap_10", "ap_25", "f1_macro", "f1_weighted", "f1_micro"}
    keys |= {"froc_cpm"} | {f"sens_at_{r:g}fp" for r in FROC_FP_RATES}
    for name in CLASSES:
        keys |= {f"{k}/{name}" for k in ("ap", "ap_50", "ap_75", "ap_10", "ap_25", "precision", "recall", "f1")}
        keys |= {f"froc_cpm/{name}", f"sens_at_1fp/{name}"}
    assert set(values) == keys and all(isinstance(v, float) for v in values.values())


def test_merged_states_equal_one_evaluator() -> None:
    preds, targets = random_data(seed=4, num_images=24)
    whole = DetectionEvaluator(score_threshold=0.4)
    whole.update(preds, targets)
    parts = [DetectionEvaluator(score_threshold=0.4) for _ in range(3)]
    for k, part in enumerate(parts):
        part.update(preds[8 * k : 8 * k + 8], targets[8 * k : 8 * k + 8])
    merged = DetectionEvaluator(score_threshold=0.4)
    merged.merge_states([part.state() for part in parts])
    expected, got = whole.compute(), merged.compute()
    assert got.keys() == expected.keys()
    assert all(got[k] == expected[k] or (math.isnan(got[k]) and math.isnan(expected[k])) for k in got)
    assert got["map_50"] == mean_average_precision(preds, targets)["map_50"]


@pytest.mark.parametrize("interpolation", ["step", "linear"])
@pytest.mark.parametrize("label", [None, 1, 2])
def test_froc_bootstrap_equals_the_curve(interpolation: str, label: int | None) -> None:
    """All-ones weights give the curve's sensitivities; integer weights give the curve of repeated images."""
    preds, targets = random_data(seed=5, num_images=30)
    preds = tied(preds)
    records = lesion_records(preds, targets)
    rates = (0.05, *FROC_FP_RATES, 20.0)
    weights = np.concatenate([np.ones((1, 30)), np.random.default_rng(1).integers(0, 3, (4, 30))]).astype(float)
    got = froc_sensitivity(records, weights, rates, label, interpolation)
    for row, w in zip(got, weights, strict=True):
        images = np.repeat(np.arange(30), w.astype(int))
        result = froc(
            [preds[i] for i in images], [targets[i] for i in images], fp_rates=rates, interpolation=interpolation
        )
        curve = result if label is None else result["per_class"][CLASSES[label - 1]]
        np.testing.assert_allclose(row, list(curve["sensitivity_at"].values()), rtol=0, atol=1e-12)


def monai_froc_score(fp_probs, tp_probs, num_targets, num_images, eval_thresholds):
    """MONAI's ``compute_froc_curve_data`` and ``compute_froc_score`` (from the CAMELYON16 evaluation code)."""
    total_fps, total_tps = [], []
    all_probs = sorted(set(list(fp_probs) + list(tp_probs)))
    for thresh in all_probs[1:]:
        total_fps.append((fp_probs >= thresh).sum())
        total_tps.append((tp_probs >= thresh).sum())
    total_fps.append(0)
    total_tps.append(0)
    fps_per_image = np.asarray(total_fps) / float(num_images)
    total_sensitivity = np.asarray(total_tps) / float(num_targets)
    return np.mean(np.interp(eval_thresholds, fps_per_image[::-1], total_sensitivity[::-1]))


def test_linear_camelyon_cpm_equals_monai() -> None:
    """With a missed lesion (MONAI's probability 0), both curves have the same points and the CPMs agree."""
    preds, targets = random_data(seed=6, num_images=40)
    preds = [p if i % 7 else {k: v[:0] for k, v in p.items()} for i, p in enumerate(tied(preds))]  # some missed
    records = lesion_records(preds, targets)
    assert np.isinf(records.lesion_score_any).any()
    fp_probs = records.fp_score[records.fp_any]
    tp_probs = np.where(np.isfinite(records.lesion_score_any), records.lesion_score_any, 0.0)
    expected = monai_froc_score(fp_probs, tp_probs, tp_probs.size, 40, CAMELYON_FP_RATES)
    result = froc(preds, targets, fp_rates=CAMELYON_FP_RATES, interpolation="linear")
    assert result["cpm"] == pytest.approx(expected, rel=0, abs=1e-12)
    step = froc(preds, targets, fp_rates=CAMELYON_FP_RATES)
    assert step["cpm"] != result["cpm"]  # the option changes the number


def test_intervals_follow_the_image_ids(tmp_path: Path) -> None:
    """Shuffled COCO ids: the point of every interval is the reported value, in both FROC modes."""
    preds, targets = random_data(seed=7, num_images=18)
    ids = np.random.default_rng(0).permutation(100)[:18].tolist()
    groups = [f"P_{i // 2}" for i in range(18)]
    for interpolation in ("step", "linear"):
        settings = EvalSettings(n_boot=20, froc_interpolation=interpolation)
        metrics = evaluate_detections(preds, targets, groups, CLASSES, settings, ids).metrics
        assert metrics["ci"]["map_50"]["value"] == pytest.approx(metrics["map_50"], rel=0, abs=1e-12)
        assert metrics["ci"]["f1_macro"]["value"] == metrics["f1_macro"]
        assert metrics["ci"]["sens_at_1fp"]["value"] == metrics["froc"]["sensitivity_at"]["1"]
        assert metrics["froc"]["interpolation"] == interpolation
        # metrics.json carries the evaluator's flat dict, the one validation logs, under "values".
        evaluator = settings.evaluator(CLASSES)
        evaluator.update(preds, targets, ids)
        assert metrics["values"] == json_ready(evaluator.compute())
        assert metrics["values"]["map_50"] == metrics["map_50"] and metrics["values"]["f1_macro"] == metrics["f1_macro"]
    statistic = froc_statistic(preds, targets, interpolation="linear")
    assert statistic(np.ones((1, 18)))[0] == metrics["froc"]["sensitivity_at"]["1"]


def test_file_mode_imports_neither_torch_nor_lightning(tmp_path: Path) -> None:
    """``evaluate`` on COCO files stays light: no Lightning, torchvision, torch._dynamo, torchmetrics or torch."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in (1, 2)]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0}]
    categories = [{"id": i, "name": n} for i, n in enumerate(CLASSES, start=1)]
    (tmp_path / "gt.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    results = [{"image_id": 1, "category_id": 1, "bbox": [11, 10, 20, 20], "score": 0.9}]
    (tmp_path / "dt.json").write_text(json.dumps(results))
    script = (
        "import sys\n"
        "from mammodet.config import compose\n"
        "from mammodet.evaluate import evaluate\n"
        f"cfg = compose('evaluate', ['annotations={tmp_path / 'gt.json'}', 'predictions={tmp_path / 'dt.json'}',"
        f" 'out_dir={tmp_path / 'out'}', 'n_boot=10'])\n"
        "metrics = evaluate(cfg)\n"
        "heavy = ('lightning', 'torchvision', 'torch._dynamo', 'torchmetrics', 'torch')\n"
        "print('IMPORTED', [m for m in heavy if m in sys.modules], metrics['map_50'])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert "IMPORTED [] 0.99" in out.stdout, out.stdout + out.stderr
