"""A synthetic breast-density dataset whose class is known: the renderer sets the fibroglandular fraction.

Each patient gets one BI-RADS density (class shares as given, allotted exactly) and a CC and an MLO view
of one breast, rendered without lesions by ``render_mammogram`` at the fraction ``DENSITY_FRACTIONS[d]``
plus a uniform jitter. Images are 16-bit DICOM files in the RSNA layout ``images/<patient_id>/<image_id>.dcm``;
most carry a VOI window, every ``monochrome1_every``-th is MONOCHROME1 without one (decoded by the
percentile window), so both decoding paths are used. Every file carries ``PLANTED_IDENTIFIERS``, which must
never reach an output. Written: ``train.csv`` (RSNA style: ``patient_id, image_id, laterality, view,
density`` with A-D) and ``generic.csv`` (``image_path, label, patient_id``).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mammodet.synthetic.cbis import DENSITY_FRACTIONS, PLANTED_IDENTIFIERS
from mammodet.synthetic.dicom_write import write_dicom
from mammodet.synthetic.images import MAX_VALUE, render_mammogram

log = logging.getLogger(__name__)

WINDOW = (1900.0, 3600.0)
"""VOI window (centre, width) written into the MONOCHROME2 files: the rendered tissue range."""


def allot(n: int, shares: Sequence[float]) -> list[int]:
    """``n`` split into integer counts proportional to ``shares`` (largest remainders first)."""
    exact = np.asarray(shares, dtype=np.float64) / np.sum(shares) * n
    counts = np.floor(exact).astype(int)
    for index in np.argsort(counts - exact, kind="stable")[: n - int(counts.sum())]:
        counts[index] += 1
    return counts.tolist()


def generate(
    out_dir: str | os.PathLike,
    n_patients: int = 120,
    height: int = 256,
    width: int = 160,
    seed: int = 0,
    class_shares: Sequence[float] = (0.15, 0.35, 0.35, 0.15),
    jitter: float = 0.06,
    monochrome1_every: int = 4,
) -> Path:
    """Write the dataset under ``out_dir`` and return the path of its RSNA-style ``train.csv``."""
    out_dir = Path(out_dir)
    if len(class_shares) != 4:
        raise ValueError(f"class_shares needs one share per density A-D, got {list(class_shares)}")
    rng = np.random.default_rng(seed)
    per_class = allot(n_patients, class_shares)
    if min(per_class) == 0:
        raise ValueError(f"{n_patients} patients at shares {list(class_shares)} leave a density without a patient")
    densities = np.repeat(np.arange(1, 5), per_class)
    rng.shuffle(densities)
    rsna_rows, generic_rows = [], []
    for number, density in enumerate(densities.tolist()):
        patient = str(10000 + number)
        side = str(rng.choice(["L", "R"]))
        for view in ("CC", "MLO"):
            image_id = str(int(rng.integers(10**8, 10**9)))
            fraction = float(np.clip(DENSITY_FRACTIONS[density] + rng.uniform(-jitter, jitter), 0.02, 0.95))
            side_name = "LEFT" if side == "L" else "RIGHT"
            pixels = render_mammogram(rng, height, width, side_name, view, [], density=fraction).pixels
            ordinal = len(rsna_rows)
            monochrome1 = monochrome1_every > 0 and ordinal % monochrome1_every == monochrome1_every - 1
            relative = Path("images") / patient / f"{image_id}.dcm"
            write_dicom(
                out_dir / relative,
                (MAX_VALUE - pixels).astype(np.uint16) if monochrome1 else pixels,
                photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2",
                window=None if monochrome1 else WINDOW,
                patient_id=patient,
                laterality=side_name,
                view=view,
                extra=PLANTED_IDENTIFIERS,
            )
            letter = "ABCD"[density - 1]
            rsna_rows.append([patient, image_id, side, view, letter])
            generic_rows.append([relative.as_posix(), letter, patient])
    _write_csv(out_dir / "train.csv", ["patient_id", "image_id", "laterality", "view", "density"], rsna_rows)
    _write_csv(out_dir / "generic.csv", ["image_path", "label", "patient_id"], generic_rows)
    return out_dir / "train.csv"


def ensure(out_dir: str | os.PathLike, **options: Any) -> Path:
    """``generate`` unless ``out_dir`` holds a finished dataset (``generic.csv`` is written last, so an interrupted
    generation is redone); returns ``train.csv``. The density demo's ``synthesize`` step."""
    out = Path(out_dir)
    if not (out / "generic.csv").is_file():
        generate(out, **options)
        log.info(f"synthetic density dataset written to {out} (train.csv, generic.csv, images/)")
    return out / "train.csv"


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
