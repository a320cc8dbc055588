"""A synthetic CBIS-DDSM: DICOM mammograms, ROI masks, crops and the four CSVs, in the real layout.

It is the embedded default for the demo and the data for the tests. Either random patients
(``n_patients``) or one image per row of the real CSVs (``from_csv_dir``) at reduced size. The same
mammogram is written twice when it has both masses and calcifications (as CBIS-DDSM does), some crops and
masks share a series folder and others do not, some full images are MONOCHROME1, and each DICOM carries
planted identifiers (name, dates, institution) that must never reach any output. ``synth_truth.json``
records the box every abnormality must come back as.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mammodet.data.cbis import CSV_FILES, CaseRow, load_cbis_ddsm
from mammodet.data.labels import box_from_mask, rescale_box
from mammodet.synthetic.dicom_write import write_dicom
from mammodet.synthetic.images import (
    CALC_DISTRIBUTIONS,
    CALC_TYPES,
    MASS_MARGINS,
    MASS_SHAPES,
    LesionSpec,
    breast_region,
    render_mammogram,
    sample_lesions,
)

log = logging.getLogger(__name__)

PLANTED_IDENTIFIERS = {
    "PatientName": "Synthetic^Jane^Q",
    "PatientBirthDate": "19580214",
    "StudyDate": "20160720",
    "InstitutionName": "Synthetic General Hospital",
    "AccessionNumber": "ACC7731902",
    "ReferringPhysicianName": "Doctor^Who",
}
"""Text tags planted in every synthetic DICOM; tests assert none of these values reaches an output."""

DENSITY_FRACTIONS = {1: 0.08, 2: 0.28, 3: 0.5, 4: 0.72}
"""Fibroglandular fraction rendered for each BI-RADS density category (A..D)."""

_HEADERS = {
    "mass": [
        "patient_id",
        "breast_density",
        "left or right breast",
        "image view",
        "abnormality id",
        "abnormality type",
        "mass shape",
        "mass margins",
        "assessment",
        "pathology",
        "subtlety",
        "image file path",
        "cropped image file path",
        "ROI mask file path",
    ],
    "calcification": [
        "patient_id",
        "breast density",
        "left or right breast",
        "image view",
        "abnormality id",
        "abnormality type",
        "calc type",
        "calc distribution",
        "assessment",
        "pathology",
        "subtlety",
        "image file path",
        "cropped image file path",
        "ROI mask file path",
    ],
}
_SERIES_DESCRIPTIONS = {"image": "full mammogram images", "crop": "cropped images", "mask": "ROI mask images"}


@dataclass(frozen=True)
class SynthSpec:
    """What to generate; the defaults make the demo's dataset."""

    n_patients: int = 48
    height: int = 640
    width: int = 400
    seed: int = 0
    layout: str = "classic"  # "classic" | "tcia"
    test_fraction: float = 0.25
    max_lesions: int = 3
    half_size_mask_every: int = 0  # every Nth mask written at half resolution (0: never)
    monochrome1_every: int = 5  # every Nth full image stored as MONOCHROME1 (0: never)
    lesion_contrast: float = 1.0  # multiplies every lesion's contrast (the CPU demo makes lesions easier to see)


def _uid(*parts: object) -> str:
    """A deterministic DICOM UID (2.25 + decimal of a hash) from the given parts."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return "2.25." + str(int(digest[:30], 16))


def _subject(kind: str, split: str, patient: str, side: str, view: str, abnormality: int | None = None) -> str:
    prefix = ("Mass" if kind == "mass" else "Calc") + ("-Test" if split == "test" else "-Training")
    name = f"{prefix}_{patient}_{side}_{view}"
    return f"{name}_{abnormality}" if abnormality is not None else name


def _random_rows(spec: SynthSpec, rng: np.random.Generator) -> list[CaseRow]:
    """CSV rows for random patients: 1-2 breasts, CC and MLO, 0..max_lesions lesions per breast."""
    rows: list[CaseRow] = []
    n_test = max(1, round(spec.n_patients * spec.test_fraction))
    test_patients = set(rng.choice(spec.n_patients, size=n_test, replace=False).tolist())
    for index in range(spec.n_patients):
        patient = f"P_{index + 1:05d}"
        sides = ["LEFT", "RIGHT"] if rng.random() < 0.4 else [str(rng.choice(["LEFT", "RIGHT"]))]
        density = int(rng.integers(1, 5))
        for side_index, side in enumerate(sides):
            split = "test" if index in test_patients else "train"
            if side_index == 1 and rng.random() < 0.15:  # patients in both official sets, as in CBIS-DDSM
                split = "train" if split == "test" else "test"
            n_lesions = int(rng.integers(1, spec.max_lesions + 1))
            kinds = [str(rng.choice(["mass", "calcification"])) for _ in range(n_lesions)]
            for view in ("CC", "MLO"):
                for abnormality, kind in enumerate(kinds, start=1):
                    assessment = int(rng.choice([2, 3, 4, 4, 5])) if kind == "mass" else int(rng.choice([2, 3, 4, 5]))
                    malignant = rng.random() < (0.75 if assessment >= 4 else 0.15)
                    pathology = "MALIGNANT" if malignant else str(rng.choice(["BENIGN", "BENIGN_WITHOUT_CALLBACK"]))
                    rows.append(
                        _row(
                            kind,
                            split,
                            patient,
                            side,
                            view,
                            abnormality,
                            density,
                            assessment,
                            pathology,
                            int(rng.integers(1, 6)),
                            rng,
                        )
                    )
    return rows


def _row(
    kind: str,
    split: str,
    patient: str,
    side: str,
    view: str,
    abnormality: int,
    density: int | None,
    assessment: int | None,
    pathology: str,
    subtlety: int | None,
    rng: np.random.Generator,
) -> CaseRow:
    """One CSV row with CBIS-DDSM paths; crop and mask share a series folder in most rows."""
    image_subject = _subject(kind, split, patient, side, view)
    roi_subject = _subject(kind, split, patient, side, view, abnormality)
    image_path = f"{image_subject}/{_uid(image_subject, 'study')}/{_uid(image_subject, 'series')}/000000.dcm"
    roi_study = _uid(roi_subject, "study")
    crop_series = _uid(roi_subject, "series")
    mask_series = crop_series if rng.random() < 0.85 else _uid(roi_subject, "mask-series")
    crop_name, mask_name = ("000000.dcm", "000001.dcm") if kind == "mass" else ("000001.dcm", "000000.dcm")
    if kind == "mass":  # suspicious masses look suspicious (irregular, spiculated), as BI-RADS describes
        high = (assessment or 0) >= 4
        descriptor = str(rng.choice(["IRREGULAR", "LOBULATED"] if high else ["ROUND", "OVAL"]))
        distribution = str(
            rng.choice(["SPICULATED", "ILL_DEFINED", "MICROLOBULATED"] if high else ["CIRCUMSCRIBED", "OBSCURED"])
        )
    else:
        descriptor = str(rng.choice(CALC_TYPES))
        distribution = str(rng.choice(CALC_DISTRIBUTIONS))
    return CaseRow(
        source_file=CSV_FILES[(kind, split)],
        line=0,
        official_split=split,
        patient_id=patient,
        side=side,
        view=view,
        abnormality_id=abnormality,
        abnormality_type=kind,
        descriptor=descriptor,
        distribution=distribution,
        density=density,
        assessment=assessment,
        pathology=pathology,
        subtlety=subtlety,
        image_path=image_path,
        crop_path=f"{roi_subject}/{roi_study}/{crop_series}/{crop_name}",
        mask_path=f"{roi_subject}/{roi_study}/{mask_series}/{mask_name}",
    )


def write_csvs(rows: Sequence[CaseRow], csv_dir: Path) -> None:
    """Write the four CSVs with the published headers, quoting and CRLF line endings."""
    csv_dir.mkdir(parents=True, exist_ok=True)
    for (kind, _split), name in CSV_FILES.items():
        with (csv_dir / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow(_HEADERS[kind])
            for r in rows:
                if r.source_file != name:
                    continue
                writer.writerow(
                    [
                        r.patient_id,
                        r.density if r.density is not None else "NA",
                        r.side,
                        r.view,
                        r.abnormality_id,
                        r.abnormality_type,
                        r.descriptor or "NA",
                        r.distribution or "NA",
                        r.assessment if r.assessment is not None else "NA",
                        r.pathology,
                        r.subtlety if r.subtlety is not None else "NA",
                        r.image_path,
                        r.crop_path + "\n",
                        r.mask_path,
                    ]
                )


def _disk_path(csv_path: str, layout: str, description: str, file_index: int, dicom_root: Path) -> Path:
    """Where a CSV path lives on disk in the chosen layout."""
    subject, study, series, _name = csv_path.split("/")
    if layout == "classic":
        return dicom_root / csv_path
    study_dir = f"07-20-2016-DDSM-{study[-5:]}"
    series_dir = f"1.000000-{description}-{series[-5:]}"
    return dicom_root / subject / study_dir / series_dir / f"1-{file_index}.dcm"


def _as_described(lesion: LesionSpec, row: CaseRow, contrast_scale: float) -> LesionSpec:
    """The sampled lesion with the row's shape, margins and subtlety where the renderer knows them.

    CSV descriptors may combine terms (``IRREGULAR-ARCHITECTURAL_DISTORTION``): the first known one is used.
    Subtlety 1 (subtle) .. 5 (obvious) scales the contrast from 0.55x to 1.15x, then ``contrast_scale``.
    """
    shapes, margins = (
        (MASS_SHAPES, MASS_MARGINS) if row.abnormality_type == "mass" else (CALC_TYPES, CALC_DISTRIBUTIONS)
    )
    shape = next((t for t in (row.descriptor or "").split("-") if t in shapes), lesion.shape)
    margin = next((t for t in (row.distribution or "").split("-") if t in margins), lesion.margins)
    contrast = lesion.contrast * (0.4 + 0.15 * row.subtlety if row.subtlety else 1.0) * contrast_scale
    return replace(lesion, shape=shape, margins=margin, contrast=contrast)


def _render_view(task: tuple[SynthSpec, list[CaseRow], Path, int]) -> dict[str, object]:
    """Render one physical mammogram, write its DICOM copies, crops and masks; return its truth."""
    spec, rows, dicom_root, ordinal = task
    first = rows[0]
    rng = np.random.default_rng([spec.seed, int(first.patient_id[2:]), first.side == "LEFT", first.view == "CC"])
    breast = breast_region(rng, spec.height, spec.width, first.side, first.view)
    kinds = [r.abnormality_type for r in rows]
    specs = sample_lesions(rng, breast, kinds.count("mass"), kinds.count("calcification"))
    by_kind = {"mass": [s for s in specs if s.kind == "mass"], "calcification": [s for s in specs if s.kind != "mass"]}
    ordered = [_as_described(by_kind[r.abnormality_type].pop(0), r, spec.lesion_contrast) for r in rows]
    density = DENSITY_FRACTIONS.get(first.density or 2, 0.3)
    image = render_mammogram(
        rng, spec.height, spec.width, first.side, first.view, ordered, density=density, breast_mask=breast
    )
    pixels = image.pixels
    monochrome1 = spec.monochrome1_every > 0 and ordinal % spec.monochrome1_every == 0
    stored = (4095 - pixels.astype(np.int32)).clip(0, 4095).astype(np.uint16) if monochrome1 else pixels
    key = f"{first.patient_id}_{first.side}_{first.view}"
    truth: list[dict[str, object]] = []
    for image_path in dict.fromkeys(r.image_path for r in rows):
        subject, study, series, _ = image_path.split("/")
        write_dicom(
            _disk_path(image_path, spec.layout, _SERIES_DESCRIPTIONS["image"], 1, dicom_root),
            stored,
            photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2",
            study_uid=study,
            series_uid=series,
            series_description=_SERIES_DESCRIPTIONS["image"],
            patient_id=subject,
            laterality=first.side,
            view=first.view,
            extra=PLANTED_IDENTIFIERS,
        )
    for index, (row, mask) in enumerate(zip(rows, image.lesion_masks, strict=True)):
        mask_pixels = mask.astype(np.uint8) * 255
        if spec.half_size_mask_every and (ordinal + index) % spec.half_size_mask_every == 0:
            mask_pixels = mask_pixels[::2, ::2]
        box = rescale_box(box_from_mask(mask_pixels), mask_pixels.shape, pixels.shape)
        x0, y0, x1, y1 = (int(v) for v in box_from_mask(mask))
        crop = pixels[max(0, y0 - 8) : y1 + 8, max(0, x0 - 8) : x1 + 8]
        shared = row.crop_path.split("/")[2] == row.mask_path.split("/")[2]
        # In a shared series folder the crop/mask numbering is arbitrary: only pixels tell them apart.
        crop_index, mask_index = (1, 2) if not shared or rng.random() < 0.5 else (2, 1)
        for csv_path, pixel_data, part, file_index in (
            (row.crop_path, crop, "crop", crop_index),
            (row.mask_path, mask_pixels, "mask", mask_index),
        ):
            subject, study, series, _ = csv_path.split("/")
            description = "ROI mask images" if shared else _SERIES_DESCRIPTIONS[part]
            write_dicom(
                _disk_path(csv_path, spec.layout, description, file_index if shared else 1, dicom_root),
                pixel_data,
                study_uid=study,
                series_uid=series,
                series_description=description,
                patient_id=subject,
                extra=PLANTED_IDENTIFIERS,
            )
        truth.append(
            {
                "abnormality_type": row.abnormality_type,
                "abnormality_id": row.abnormality_id,
                "source_file": row.source_file,
                "box": list(box),
            }
        )
    return {"key": key, "density": image.density, "lesions": truth}


def rows_from_csvs(csv_dir: Path, limit: int | None) -> list[CaseRow]:
    """Rows of real CSVs (all, or those of the first ``limit`` physical mammograms)."""
    dataset = load_cbis_ddsm(csv_dir)
    keep = {m.key for m in dataset.mammograms[:limit]} if limit else None
    return [r for r in dataset.rows if keep is None or f"{r.patient_id}_{r.side}_{r.view}" in keep]


def generate(
    out_dir: str | os.PathLike,
    spec: SynthSpec = SynthSpec(),
    from_csv_dir: str | None = None,
    limit: int | None = None,
    workers: int = 0,
) -> Path:
    """Generate the dataset under ``out_dir`` (``csv/``, ``dicom/``, ``synth_truth.json``); returns out_dir."""
    if spec.layout not in ("classic", "tcia"):
        raise ValueError(f"unknown layout {spec.layout!r}; choose 'classic' or 'tcia'")
    out = Path(out_dir)
    rng = np.random.default_rng(spec.seed)
    rows = rows_from_csvs(Path(from_csv_dir), limit) if from_csv_dir else _random_rows(spec, rng)
    write_csvs(rows, out / "csv")
    views: dict[tuple[str, str, str], list[CaseRow]] = {}
    for row in rows:
        views.setdefault(row.view_key, []).append(row)
    tasks = [(spec, view_rows, out / "dicom", i) for i, view_rows in enumerate(views.values())]
    if workers > 0:
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(_render_view, tasks, chunksize=4), total=len(tasks), desc="synth"))
    else:
        results = [_render_view(t) for t in tqdm(tasks, desc="synth")]
    truth = {"spec": asdict(spec), "images": {r["key"]: r for r in results}}
    (out / "synth_truth.json").write_text(json.dumps(truth, indent=1))
    return out


def ensure(out_dir: str | os.PathLike, workers: int = 0, **spec: Any) -> Path:
    """``generate`` with ``SynthSpec(**spec)`` unless ``out_dir`` holds a finished dataset (``synth_truth.json``
    is written last, so an interrupted generation is redone); the demo's ``synthesize`` step."""
    out = Path(out_dir)
    if (out / "synth_truth.json").is_file():
        return out
    generate(out, SynthSpec(**spec), workers=workers)
    log.info(f"synthetic CBIS-DDSM written to {out} (csv/, dicom/, synth_truth.json)")
    return out
