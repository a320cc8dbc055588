"""``python -m mammodet.report eval_dirs=[A,B] out_dir=OUT``: the cross-dataset table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mammodet.analysis.cross_dataset import write_cross_dataset
from mammodet.errors import UserError


def _eval_dir(folder: Path, dataset: str | None, map_50: float, densities: dict[str, float]) -> Path:
    folder.mkdir(parents=True)
    annotations = folder / "test.json"
    images = [{"id": 1, "dataset": dataset}] if dataset else [{"id": 1}]
    annotations.write_text(json.dumps({"images": images}))
    metrics = {
        "num_images": 10,
        "num_lesions": 7,
        "map_50": map_50,
        "ci": {
            "map_50": {"value": map_50, "low": map_50 - 0.1, "high": map_50 + 0.05},
            "sens_at_1fp": {"value": 0.5, "low": 0.25, "high": 0.75},
            "f1_macro": {"value": 0.4, "low": 0.3, "high": 0.5},
        },
        "source": {"mode": "checkpoint", "split": "test", "annotations": str(annotations)},
        **{f"density/{d}/ap_50": v for d, v in densities.items()},
        **{f"density/{d}/sens_at_1fp": v / 2 for d, v in densities.items()},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_one_row_per_dataset_with_intervals_and_density_strata(tmp_path: Path) -> None:
    cbis = _eval_dir(tmp_path / "cbis_eval", None, 0.6, {"B": 0.5})
    vindr = _eval_dir(tmp_path / "vindr_eval", "vindr_mammo", 0.45, {"B": 0.4, "D": 0.25})
    paths = write_cross_dataset([cbis, vindr], tmp_path / "out")
    lines = paths["markdown"].read_text().splitlines()
    assert lines[2].startswith("| dataset | split | images | lesions | mAP50 [95% CI] |")
    assert lines[2].endswith("| density B: AP50 / sens@1FP | density D: AP50 / sens@1FP |")
    assert lines[4] == (
        "| cbis_eval | test | 10 | 7 | 0.600 [0.500, 0.650] | 0.500 [0.250, 0.750] | 0.400 [0.300, 0.500] "
        "| 0.500 / 0.250 | - / - |"
    )
    assert lines[5].startswith("| vindr_mammo | test | 10 | 7 | 0.450 [0.350, 0.500] |")
    assert lines[5].endswith("| 0.400 / 0.200 | 0.250 / 0.125 |")
    assert paths["csv"].read_text().splitlines()[0].startswith("dataset,split,images,lesions,map_50,map_50_low")
    assert paths["figure"].stat().st_size > 0


def test_a_folder_without_metrics_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nothing/metrics.json: not found"):
        write_cross_dataset([tmp_path / "nothing"], tmp_path / "out")
