"""A synthetic VinDr-Mammo tree in the published format: ``finding_annotations.csv``,
``breast-level_annotations.csv`` and ``images/<study_id>/<image_id>.dicom``.

The quirks of the real files are reproduced: ``finding_categories`` is a Python-list string (one box may name
several findings), "No Finding" rows have empty coordinates, BI-RADS and density are strings ("BI-RADS 4",
"DENSITY C"), coordinates are floats, an image has several rows, the CSVs are CRLF, some DICOMs are
MONOCHROME1, one has no pixel spacing. Every DICOM carries planted identifiers that must never reach an
output. ``synth_truth.json`` holds what each image must come back as: findings in source pixels, split,
density, spacing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from mammodet.synthetic.cbis import PLANTED_IDENTIFIERS
from mammodet.synthetic.dicom_write import write_dicom
from mammodet.synthetic.scene import render_scene

FINDING_COLUMNS = [
    "study_id", "series_id", "image_id", "laterality", "view_position", "height", "width", "breast_birads",
    "breast_density", "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax", "split",
]  # fmt: skip
BREAST_COLUMNS = [*FINDING_COLUMNS[:9], "split"]
PLANTED_PATIENT_ID = "VN-8842-1177"
"""The PatientID planted in every synthetic VinDr DICOM (VinDr's real files have it removed)."""
SPACING_MM = 0.085
DENSITY_FRACTIONS = {"A": 0.08, "B": 0.28, "C": 0.5, "D": 0.72}


def _hex(*parts: object) -> str:
    """A 32-digit hex id like VinDr's (deterministic from ``parts``)."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def generate(
    out_dir: str | os.PathLike, n_studies: int = 6, height: int = 320, width: int = 256, seed: int = 0
) -> Path:
    """Write the tree under ``out_dir`` and ``synth_truth.json``; returns ``out_dir``."""
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 21])
    finding_rows, breast_rows, truth = [], [], {}
    ordinal = 0
    for study_index in range(n_studies):
        study, split = _hex(seed, "study", study_index), "test" if study_index % 3 == 2 else "training"
        density = "ABCD"[study_index % 4]
        for side in ("LEFT", "RIGHT"):
            for view in ("CC", "MLO"):
                image_id, series = _hex(seed, study, side, view), _hex(seed, study, side)
                kinds, names, grades = _findings(rng, ordinal)
                scene = render_scene(rng, height, width, side, view, kinds, density=DENSITY_FRACTIONS[density])
                monochrome1 = ordinal % 3 == 1
                stored = (4095 - scene.pixels.astype(np.int32)).astype(np.uint16) if monochrome1 else scene.pixels
                spacing = (
                    {} if ordinal == 5 else {"ImagerPixelSpacing" if ordinal % 2 else "PixelSpacing": [SPACING_MM] * 2}
                )
                write_dicom(
                    out / "images" / study / f"{image_id}.dicom",
                    stored,
                    photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2",
                    patient_id=PLANTED_PATIENT_ID,
                    laterality=side,
                    view=view,
                    extra={**PLANTED_IDENTIFIERS, **spacing, "BitsStored": 12, "HighBit": 11},
                )
                common = {
                    "study_id": study, "series_id": series, "image_id": image_id, "laterality": side[0],
                    "view_position": view, "height": height, "width": width,
                    "breast_birads": f"BI-RADS {max([1] + [int(g) for g in grades if g])}",
                    "breast_density": f"DENSITY {density}", "split": split,
                }  # fmt: skip
                breast_rows.append({k: common[k] for k in BREAST_COLUMNS})
                findings = []
                if not names:
                    finding_rows.append(common | {"finding_categories": "['No Finding']", "finding_birads": ""})
                for box, row_names, grade in zip(scene.boxes, names, grades, strict=True):
                    fractions = rng.choice([0.0, 0.25, 0.5, 0.75], size=4)
                    coords = [
                        box[0] - fractions[0],
                        box[1] - fractions[1],
                        box[2] + fractions[2],
                        box[3] + fractions[3],
                    ]
                    finding_rows.append(
                        common
                        | {
                            "finding_categories": repr(row_names),
                            "finding_birads": f"BI-RADS {grade}" if grade else "",
                            **dict(
                                zip(("xmin", "ymin", "xmax", "ymax"), (repr(float(v)) for v in coords), strict=True)
                            ),
                        }
                    )
                    for name in row_names:
                        findings.append({"finding": name, "label": _expected_label(name, grade), "box": coords})
                truth[image_id] = {
                    "study_id": study,
                    "publisher_split": split,
                    "laterality": side,
                    "view": view,
                    "density": density,
                    "pixel_spacing_mm": SPACING_MM if spacing else None,
                    "monochrome1": monochrome1,
                    "findings": _one_per_class(findings),
                }
                ordinal += 1
    _write_csv(out / "finding_annotations.csv", FINDING_COLUMNS, finding_rows)
    _write_csv(out / "breast-level_annotations.csv", BREAST_COLUMNS, breast_rows)
    (out / "synth_truth.json").write_text(json.dumps({"dataset": "vindr_mammo", "images": truth}, indent=1))
    return out


def _findings(rng: np.random.Generator, ordinal: int) -> tuple[list[str], list[list[str]], list[str]]:
    """Lesion kinds to render, the category list of each box and its finding BI-RADS: none every 4th image, a
    mass and a calcification cluster, a box naming two mapped findings, an unmapped finding."""
    pattern = ordinal % 4
    if pattern == 0:
        return [], [], []
    if pattern == 1:
        return ["mass", "calcification"], [["Mass"], ["Suspicious Calcification"]], [str(rng.choice(["3", "4"])), "4"]
    if pattern == 2:
        return ["mass"], [["Mass", "Suspicious Calcification"]], ["5"]
    return ["mass", "mass"], [["Architectural Distortion"], ["Mass"]], ["4", "2"]


def _expected_label(name: str, grade: str) -> str | None:
    """The class the default VinDr class map gives (None: an ignore region)."""
    if name == "Suspicious Calcification":
        return "calcification"
    if name == "Mass":
        return "mass_low" if grade in ("2", "3") else "mass_high"
    return None


def _one_per_class(findings: list[dict]) -> list[dict]:
    """Findings with the same box and class once (a box naming several findings of one class)."""
    seen, kept = set(), []
    for finding in findings:
        key = (tuple(finding["box"]), finding["label"] or finding["finding"])
        if key not in seen:
            seen.add(key)
            kept.append(finding)
    return kept


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Write ``rows`` as a CSV with CRLF line ends (as the published files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
