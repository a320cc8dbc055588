"""Density-stratified keys: ``density/<A-D>/ap_50`` and ``density/<A-D>/sens_at_1fp`` in metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mammodet.config import compose
from mammodet.evaluate import evaluate
from mammodet.metrics.strata import density_letter, density_values
from mammodet.synthetic import vindr_mammo as synth_vindr

CLASSES = ("calcification", "mass_low", "mass_high")


def test_density_letter_reads_letters_and_cbis_numbers() -> None:
    assert [density_letter(v) for v in ("C", "b", 1, 4, 5, None, True, "DENSITY C")] == [
        "C", "B", "A", "D", None, None, None, None,
    ]  # fmt: skip


def test_each_density_is_scored_on_its_own_images_and_absent_ones_have_no_keys() -> None:
    lesion = np.array([[10.0, 10.0, 40.0, 40.0]])
    targets = [{"boxes": lesion, "labels": np.array([3])} for _ in range(3)]
    found = {"boxes": lesion, "labels": np.array([3]), "scores": np.array([0.9])}
    missed = {"boxes": np.array([[200.0, 200.0, 230.0, 230.0]]), "labels": np.array([3]), "scores": np.array([0.9])}
    values = density_values([found, missed, missed], targets, ["A", 3, None], CLASSES)
    assert values == {
        "density/A/ap_50": pytest.approx(1.0),
        "density/A/sens_at_1fp": 1.0,
        "density/C/ap_50": 0.0,
        "density/C/sens_at_1fp": 0.0,
    }


def test_evaluate_writes_density_keys_for_a_converted_dataset(tmp_path: Path) -> None:
    from mammodet.convert import convert_registered
    from mammodet.data.conversion import ConvertSettings

    tree = synth_vindr.generate(tmp_path / "tree")
    cfg = compose("convert", ["dataset=vindr_mammo", f"data.root={tree}", f"out_dir={tmp_path / 'out'}"])
    convert_registered(cfg, ConvertSettings(), workers=0)
    annotations = tmp_path / "out" / "annotations" / "test.json"
    coco = json.loads(annotations.read_text())
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in coco["annotations"]
        if not a["iscrowd"]
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    overrides = [f"annotations={annotations}", f"predictions={tmp_path / 'results.json'}", f"out_dir={tmp_path / 'e'}"]
    metrics = evaluate(compose("evaluate", [*overrides, "n_boot=10"]))
    present = sorted({i["density"] for i in coco["images"]})
    assert present == ["B", "C"]  # the test studies (3rd and 6th) of the synthetic tree
    keys = sorted(k for k in metrics if k.startswith("density/"))
    assert keys == [f"density/{d}/{m}" for d in present for m in ("ap_50", "sens_at_1fp")]
    assert [metrics[k] for k in keys] == pytest.approx([1.0] * 4)
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["density/C/ap_50"] == metrics["density/C/ap_50"]


@pytest.mark.slow
def test_a_cbis_checkpoint_evaluates_a_converted_vindr_test_split(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from mammodet.convert import convert_registered
    from mammodet.data.conversion import ConvertSettings

    tree = synth_vindr.generate(tmp_path / "tree")
    out = tmp_path / "vindr"
    convert_registered(
        compose("convert", ["dataset=vindr_mammo", f"data.root={tree}", f"out_dir={out}"]), ConvertSettings(), 0
    )
    overrides = [f"ckpt_path={tiny_checkpoint}", f"data.image_dir={out}", "split=test", f"out_dir={tmp_path / 'e'}"]
    metrics = evaluate(compose("evaluate", [*overrides, "n_boot=10", "num_workers=0", "device=cpu"]))
    assert metrics["source"]["annotations"] == str(out / "annotations" / "test.json")
    assert metrics["num_images"] == 8
    assert sorted(k for k in metrics if k.startswith("density/")) == [
        f"density/{d}/{m}" for d in ("B", "C") for m in ("ap_50", "sens_at_1fp")
    ]
