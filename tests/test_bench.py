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
    command = [sys.executable, str(REPO / "bench" / "data_pipeline.py"), "--quick", "--seconds", "0.3",
               "--workers", "1", "--data-dir", str(tmp_path / "data"), "--json", str(out)]
    printed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    results = json.loads(out.read_text())
    assert set(results) == {"dicom", "jpeg", "cache"}
    for source, row in results.items():
        for key in ("images_per_s", "images_per_s_no_augment", "whole_images_per_s"):
            assert row[key] > 0, (source, key)
        assert (row["workers"], row["crop_size"], row["max_side"]) == (1, 256, 512)
        assert f"| {source} | {row['images_per_s']:.1f}" in printed  # the printed table holds the same figures
    assert results["cache"]["cache_build_or_resume_s"] >= 0
