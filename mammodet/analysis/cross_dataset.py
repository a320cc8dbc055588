"""The cross-dataset comparison of several evaluations (``python -m mammodet.report eval_dirs=[A,B] out_dir=OUT``):
one row per ``metrics.json`` (dataset x metric, with its patient-bootstrap intervals and density strata) as
``cross_dataset.md``, ``cross_dataset.csv`` and ``cross_dataset.png``."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from mammodet.errors import UserError

HEADLINE = ("map_50", "sens_at_1fp", "f1_macro")
DENSITIES = ("A", "B", "C", "D")


def _dataset(metrics: dict[str, Any], folder: Path) -> str:
    """The ``dataset`` of the evaluated COCO file's images (converted datasets), else the folder's name."""
    try:
        images = json.loads(Path(metrics["source"]["annotations"]).read_text())["images"]
        return str(images[0].get("dataset") or folder.name)
    except (KeyError, IndexError, OSError, ValueError):
        return folder.name


def read_rows(eval_dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """One row per evaluation folder: dataset, split, images, headline values with intervals, density strata."""
    rows = []
    for folder in map(Path, eval_dirs):
        path = folder / "metrics.json"
        if not path.is_file():
            raise UserError(f"{path}: not found (eval_dirs lists folders written by python -m mammodet.evaluate)")
        metrics = json.loads(path.read_text())
        row: dict[str, Any] = {
            "dataset": _dataset(metrics, folder),
            "split": metrics.get("source", {}).get("split", ""),
            "images": metrics["num_images"],
            "lesions": metrics["num_lesions"],
        }
        for key in HEADLINE:
            interval = metrics.get("ci", {}).get(key, {})
            row[key] = interval.get("value", metrics.get(key))
            row[f"{key}_low"], row[f"{key}_high"] = interval.get("low"), interval.get("high")
        for letter in DENSITIES:
            for key in ("ap_50", "sens_at_1fp"):
                row[f"density/{letter}/{key}"] = metrics.get(f"density/{letter}/{key}")
        rows.append(row)
    return rows


def _cell(value: Any, low: Any = None, high: Any = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if low is not None and high is not None else f"{value:.3f}"


def write_cross_dataset(eval_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the table (markdown and CSV) and the figure under ``out_dir``; returns their paths."""
    rows, out = read_rows(eval_dirs), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    strata = [d for d in DENSITIES if any(r[f"density/{d}/ap_50"] is not None for r in rows)]
    header = ["dataset", "split", "images", "lesions", "mAP50 [95% CI]", "sens@1FP [95% CI]", "F1 macro [95% CI]"]
    header += [f"density {d}: AP50 / sens@1FP" for d in strata]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["dataset"], r["split"], str(r["images"]), str(r["lesions"])]
        cells += [_cell(r[k], r[f"{k}_low"], r[f"{k}_high"]) for k in HEADLINE]
        cells += [f"{_cell(r[f'density/{d}/ap_50'])} / {_cell(r[f'density/{d}/sens_at_1fp'])}" for d in strata]
        lines.append("| " + " | ".join(cells) + " |")
    paths = {
        "markdown": out / "cross_dataset.md",
        "csv": out / "cross_dataset.csv",
        "figure": out / "cross_dataset.png",
    }
    paths["markdown"].write_text("# Cross-dataset comparison\n\n" + "\n".join(lines) + "\n")
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["dataset"])
        writer.writeheader()
        writer.writerows(rows)
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    for axis, key, title in zip(axes, ("map_50", "sens_at_1fp"), ("mAP@0.5", "sensitivity at 1 FP/image"), strict=True):
        labels = [f"{r['dataset']}\n{r['split']}" for r in rows]
        values = [r[key] or 0.0 for r in rows]
        errors = [
            [v - (r[f"{key}_low"] if r[f"{key}_low"] is not None else v) for v, r in zip(values, rows, strict=True)],
            [(r[f"{key}_high"] if r[f"{key}_high"] is not None else v) - v for v, r in zip(values, rows, strict=True)],
        ]
        axis.bar(labels, values, yerr=errors, capsize=4, color="#4c72b0")
        axis.set_ylim(0, 1)
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(paths["figure"], dpi=100)
    return paths
