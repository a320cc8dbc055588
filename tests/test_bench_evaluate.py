"""bench/evaluate_metrics.py runs end to end on a small set: both commands, equal map_50, the JSON and the table."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_evaluate_bench_small_set(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(REPO / "bench" / "evaluate_metrics.py"),
        "--images",
        "30",
        "--per-image",
        "8",
        "--repeats",
        "1",
        "--n-boot",
        "20",
        "--json",
        str(out),
    ]
    printed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["images"], row["detections_per_image"]) == (30, 8)
    assert row["map_50_evaluate"] == row["map_50_pycocotools"]  # exactly pycocotools
    assert row["pycocotools_cpu_median_s"] > 0 and row["evaluate_cpu_median_s"] > 0
    # Like with like: the medians of the stored runs and their ratio, exactly (no timing noise in the test).
    assert row["pycocotools_cpu_median_s"] == statistics.median(row["pycocotools_cpu_s"])
    assert row["evaluate_cpu_median_s"] == statistics.median(row["evaluate_cpu_s"])
    assert row["ratio"] == row["evaluate_cpu_median_s"] / row["pycocotools_cpu_median_s"]
    assert f"| 8 | {row['pycocotools_cpu_median_s']:.2f} | {row['evaluate_cpu_median_s']:.2f} |" in printed
