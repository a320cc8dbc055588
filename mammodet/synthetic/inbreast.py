"""A synthetic INbreast tree in the published format: ``INbreast.csv`` (semicolon-separated),
``AllDICOMs/<FileName>_<hash>_MG_<L|R>_<CC|ML>_ANON.dcm`` and ``AllXML/<FileName>.xml``.

The XMLs are Apple property lists whose ROI points are strings ``"(x, y)"``; Bi-Rads has 4a/4b/4c, density
is ACR 1-4, some calcification ROIs are one point, some ROI names are outside the class map, images
without findings have no XML, and the CSV's patient and date columns hold values that must never reach an
output. ``synth_truth.json`` holds what each image must come back as.
"""

from __future__ import annotations

import hashlib
import json
import os
import plistlib
from pathlib import Path

import cv2
import numpy as np

from mammodet.synthetic.cbis import PLANTED_IDENTIFIERS
from mammodet.synthetic.dicom_write import write_dicom
from mammodet.synthetic.scene import render_scene

CSV_HEADER = "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"
PLANTED_PATIENT_ID = "IN-5521-0093"
"""The PatientID planted in every synthetic INbreast DICOM and CSV row (it must never reach an output)."""
PLANTED_DATE = "201003"
SPACING_MM = 0.07
POINT_ROI_SIDE_MM = 3.0
ACR_FRACTIONS = {1: 0.08, 2: 0.28, 3: 0.5, 4: 0.72}
_BIRADS = ("1", "2", "3", "4a", "4b", "4c", "5", "6")


def generate(
    out_dir: str | os.PathLike, n_patients: int = 8, height: int = 320, width: int = 256, seed: int = 0
) -> Path:
    """Write the tree under ``out_dir`` and ``synth_truth.json``; returns ``out_dir``."""
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 22])
    lines, truth, ordinal = [CSV_HEADER], {}, 0
    for patient_index in range(n_patients):
        patient_hash = hashlib.sha1(f"{seed}/{patient_index}".encode()).hexdigest()[:16]
        acr = 1 + patient_index % 4
        for side, view in (("LEFT", "CC"), ("RIGHT", "MLO")):
            file_name = str(20586908 + 137 * ordinal)
            birads = _BIRADS[ordinal % len(_BIRADS)]
            kinds, names, single = _rois(ordinal)
            scene = render_scene(rng, height, width, side, view, kinds, density=ACR_FRACTIONS[acr])
            spacing = {} if ordinal == 3 else {"PixelSpacing": [SPACING_MM, SPACING_MM]}
            dicom_name = f"{file_name}_{patient_hash}_MG_{side[0]}_{'ML' if view == 'MLO' else 'CC'}_ANON.dcm"
            write_dicom(
                out / "AllDICOMs" / dicom_name,
                scene.pixels,
                patient_id=PLANTED_PATIENT_ID,
                laterality=side,
                view=view,
                extra={**PLANTED_IDENTIFIERS, **spacing, "BitsStored": 12, "HighBit": 11},
            )
            lines.append(
                f"{PLANTED_PATIENT_ID};{PLANTED_DATE[:2]};{side[0]};{view};{PLANTED_DATE};{file_name};{acr};{birads}"
            )
            rois, findings = [], []
            rows = zip(names, single, scene.masks, scene.lesions, strict=True)
            for index, (name, one_point, mask, lesion) in enumerate(rows):
                if one_point:  # a single calcification: one point
                    points = [(float(round(lesion.center[0], 2)), float(round(lesion.center[1], 2)))]
                    half = POINT_ROI_SIDE_MM / SPACING_MM / 2
                    ((x, y),) = points
                    box = [x - half, y - half, x + half, y + half]
                else:
                    points = _outline(mask)
                    xs, ys = [p[0] for p in points], [p[1] for p in points]
                    box = [min(xs), min(ys), max(xs), max(ys)]
                rois.append(_roi(name, points, index))
                label = _expected_label(name, birads)
                findings.append({"finding": name, "label": label, "box": box})
            if rois:
                _write_plist(out / "AllXML" / f"{file_name}.xml", rois)
            truth[file_name] = {
                "patient": patient_hash,
                "laterality": side,
                "view": view,
                "density": "ABCD"[acr - 1],
                "birads": birads,
                "pixel_spacing_mm": SPACING_MM,
                "pixel_spacing_source": "dicom" if spacing else "publisher",
                "findings": findings,
            }
            ordinal += 1
    (out / "INbreast.csv").write_text("\n".join(lines) + "\n")
    (out / "synth_truth.json").write_text(json.dumps({"dataset": "inbreast", "images": truth}, indent=1))
    return out


def _rois(ordinal: int) -> tuple[list[str], list[str], list[bool]]:
    """Lesion kinds to render, their ROI names and which are one point: none every third image, else masses,
    clusters, single calcifications (one point) and an ROI name outside the class map."""
    pattern = ordinal % 3
    if pattern == 0:
        return [], [], []
    if pattern == 1:
        return ["mass", "calcification", "calcification"], ["Mass", "Calcification", "Cluster"], [False] * 3
    return ["mass", "calcification"], ["Spiculated Region", "Calcification"], [False, True]


def _expected_label(name: str, birads: str) -> str | None:
    """The class the default INbreast class map gives (None: an ignore region)."""
    if name in ("Calcification", "Cluster"):
        return "calcification"
    if name == "Mass":
        return "mass_high" if birads in ("4a", "4b", "4c", "5", "6") else "mass_low"
    return None


def _outline(mask: np.ndarray) -> list[tuple[float, float]]:
    """The outline of a mask as points at pixel centres (x + 0.5, y + 0.5), as the annotation tool stores them."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    largest = max(contours, key=len).reshape(-1, 2)
    return [(float(x) + 0.5, float(y) + 0.5) for x, y in largest]


def _roi(name: str, points: list[tuple[float, float]], index: int) -> dict:
    """One ROI dict as the INbreast XMLs hold it (points as "(x, y)" strings)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return {
        "Area": 0.0,
        "Center": f"({sum(xs) / len(xs)}, {sum(ys) / len(ys)})",
        "Dev": 0.0,
        "IndexInImage": index,
        "Max": 0.0,
        "Mean": 0.0,
        "Min": 0.0,
        "Name": name,
        "NumberOfPoints": len(points),
        "Point_mm": [f"({x * SPACING_MM}, {y * SPACING_MM}, 0)" for x, y in points],
        "Point_px": [f"({x}, {y})" for x, y in points],
        "Total": 0.0,
        "Type": 19 if len(points) > 1 else 0,
    }


def _write_plist(path: Path, rois: list[dict]) -> None:
    """An INbreast annotation file: an XML property list with one image and its ROIs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = {"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}
    path.write_bytes(plistlib.dumps({"Images": [image]}, fmt=plistlib.FMT_XML))
