"""mini-MIAS: ``Info.txt`` and ``mdbNNN.pgm`` (1024x1024, 8-bit) -> records.

An ``Info.txt`` line is ``refnum tissue class [severity [x y radius]]``, whitespace-separated; a refnum with
several lesions has several lines. ``x, y`` is the lesion centre with the origin at the bottom-left, so its
box in top-left image pixels is ``[x - r, H - y - r, x + r, H - y + r]`` (clipped to the image). NORM is an
image without lesions; an abnormal line without coordinates excludes its image (its lesion cannot be
located). Consecutive refnums (mdb001/mdb002, ...) are the two breasts of one woman: one patient for the
split. The files do not state the side: it is the image edge the breast lies on. All views are MLO; pixels
are 0.2 mm (the publisher's figure); MIAS tissue classes are not BI-RADS density, so density is null.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammodet.data.records import DatasetRecords, Finding, MammogramRecord, PixelSource, ReadProblem
from mammodet.datasets import register
from mammodet.datasets.rules import check_class_map, map_finding, split_groups
from mammodet.errors import UserError

NAME = "mini_mias"
INFO = "Info.txt"
_REFNUM = re.compile(r"mdb(\d{3})")
_TISSUES = ("F", "G", "D")
_CLASSES = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM")


def _lines(path: Path) -> dict[str, list[tuple[int, list[str]]]]:
    """refnum -> its (line number, fields), in file order; ``UserError`` naming the line of a malformed one."""
    if not path.is_file():
        raise UserError(f"{path}: not found (data.root must hold mini-MIAS's {INFO})")
    by_refnum: dict[str, list[tuple[int, list[str]]]] = {}
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        fields = text.split()
        if not fields:
            continue
        if not _REFNUM.fullmatch(fields[0]) or len(fields) < 3 or len(fields) not in (3, 4, 7):
            raise UserError(f"{path}:{number}: expected 'mdbNNN tissue class [severity [x y radius]]', got {text!r}")
        if fields[1] not in _TISSUES or fields[2] not in _CLASSES:
            raise UserError(
                f"{path}:{number}: tissue {fields[1]!r} / class {fields[2]!r} not in {_TISSUES} / {_CLASSES}"
            )
        if len(fields) == 7 and not all(f.isdigit() for f in fields[4:]):
            raise UserError(f"{path}:{number}: x y radius {fields[4:]} are not whole numbers")
        by_refnum.setdefault(fields[0], []).append((number, fields))
    return by_refnum


def _patient(refnum: str) -> str:
    """The pair of consecutive refnums an image belongs to: mdb001 and mdb002 -> "mdb001_002"."""
    first = (int(refnum[3:]) - 1) // 2 * 2 + 1
    return f"mdb{first:03d}_{first + 1:03d}"


def _laterality(pixels: np.ndarray) -> str:
    """The side whose image edge the breast lies on (the brighter half)."""
    half = pixels.shape[1] // 2
    return "LEFT" if pixels[:, :half].mean() >= pixels[:, half:].mean() else "RIGHT"


def read(root: Path, options: Mapping[str, Any]) -> DatasetRecords:
    """The records of a mini-MIAS copy under ``root``; see the module docstring."""
    class_map = options["class_map"]
    check_class_map(class_map, options["classes"], NAME)
    by_refnum = _lines(root / INFO)
    split = split_groups([_patient(r) for r in by_refnum], options["split"]["shares"], options["split"]["seed"])
    records, problems = [], []
    for refnum, lines in sorted(by_refnum.items()):
        pgm = root / f"{refnum}.pgm"
        pixels = cv2.imread(str(pgm), cv2.IMREAD_UNCHANGED) if pgm.is_file() else None
        if pixels is None or pixels.ndim != 2:
            reason = f"{pgm.name} is missing or not a grayscale PGM; image skipped"
            problems.append(ReadProblem(INFO, lines[0][0], "refnum", refnum, reason))
            continue
        height, width = pixels.shape
        findings, lost = [], []
        for number, fields in lines:
            kind = fields[2]
            if kind == "NORM":
                continue
            severity = fields[3] if len(fields) > 3 else None
            if len(fields) < 7:
                lost.append(f"{INFO} line {number}: {kind} without coordinates")
                continue
            x, y, r = (int(v) for v in fields[4:7])
            box = (max(0, x - r), max(0, height - y - r), min(width, x + r), min(height, height - y + r))
            findings.append(Finding(kind, map_finding(class_map, kind, severity), box=tuple(map(float, box))))
        records.append(
            MammogramRecord(
                dataset=NAME,
                source_key=refnum,
                patient=_patient(refnum),
                study=refnum,
                laterality=_laterality(pixels),
                view="MLO",
                density=None,
                pixel_spacing_mm=float(options["pixel_spacing_mm"]),
                pixel_spacing_source="publisher",
                split=split[_patient(refnum)],
                pixels=PixelSource(pgm, "pgm"),
                findings=tuple(findings),
                excluded="; ".join(lost) + " (its lesion cannot be located)" if lost else None,
            )
        )
    return DatasetRecords(records, problems)


register(NAME, read)
