"""Leak-free, patient-grouped, reproducible train/val/test splits that survive partial downloads and subsets.

Every mammogram of a patient lands in one split (asserted). A patient's split is drawn from a hash of the seed
and the patient id alone (``patient_draw``), so it never depends on which other patients, rows or files are
present: a partial download, a subset of the CSV rows and the full dataset put every shared patient in the
same split. Classes reach every split by the law of large numbers (the real CSVs: every class in every split);
a split that misses a class is reported by class name as a warning, or raised with ``strict=True``.

Modes:
- ``official``: the CBIS-DDSM test set is the test split; validation is carved by patient from the official
  train set. Patients in both official sets are resolved by ``overlap`` (``test``: all their mammograms go to
  test, the default; ``train``: all go to train/val) and counted.
- ``random_701515``: the original project's 70/15/15, but by patient.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mammodet.data.cbis import CbisDataset, Mammogram
from mammodet.data.classes import CLASSES
from mammodet.data.labels import lesion_label

SPLITS = ("train", "val", "test")
MODES = ("official", "random_701515")
RANDOM_SHARES = {"train": 0.70, "val": 0.15, "test": 0.15}


class SplitWarning(UserWarning):
    """A split that holds no lesion of a class present in the data (too few patients for that class)."""


@dataclass
class SplitResult:
    """Split name per mammogram key, plus what was resolved on the way."""

    assignment: dict[str, str]
    overlap_patients: list[str] = field(default_factory=list)  # patients in both official sets
    warnings: list[str] = field(default_factory=list)  # splits missing a class, by class name

    def keys(self, split: str) -> list[str]:
        """The mammogram keys of one split, sorted."""
        return sorted(k for k, s in self.assignment.items() if s == split)


def patient_draw(patient: str, seed: int) -> float:
    """A number in [0, 1) fixed by the seed and the patient id alone: the patient's place in the split shares."""
    digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _split_of(draw: float, shares: dict[str, float]) -> str:
    """The split whose cumulative share interval holds ``draw``."""
    edge = 0.0
    for name, share in shares.items():
        edge += share
        if draw < edge:
            return name
    return list(shares)[-1]


def make_splits(
    view_keys: Sequence[str],
    patients: Sequence[str],
    class_counts: Sequence[Sequence[int]],
    official: Sequence[set[str] | frozenset[str]] | None = None,
    mode: str = "official",
    seed: int = 0,
    val_fraction: float = 0.15,
    overlap: str = "test",
    strict: bool = False,
) -> SplitResult:
    """Split mammograms by patient.

    ``view_keys[i]`` is a mammogram's key, ``patients[i]`` its patient, ``class_counts[i]`` its number of lesions
    per class (in ``CLASSES`` order) and ``official[i]`` the official splits it appears in (needed for
    ``mode="official"``). ``strict``: a split without a class present in the data raises instead of warning.
    """
    if mode not in MODES:
        raise ValueError(f"unknown split mode {mode!r}; choose one of {MODES}")
    if overlap not in ("test", "train"):
        raise ValueError(f"unknown overlap rule {overlap!r}; choose 'test' or 'train'")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    overlap_patients: list[str] = []
    test_patients: set[str] = set()
    shares = RANDOM_SHARES
    if mode == "official":
        if official is None:
            raise ValueError("mode='official' needs the official split of every mammogram")
        patient_sets: dict[str, set[str]] = defaultdict(set)
        for patient, sets in zip(patients, official, strict=True):
            patient_sets[patient] |= set(sets)
        overlap_patients = sorted(p for p, s in patient_sets.items() if len(s) > 1)
        test_patients = {p for p, s in patient_sets.items() if s == {"test"} or (len(s) > 1 and overlap == "test")}
        shares = {"val": val_fraction, "train": 1 - val_fraction}
    by_patient = {
        p: "test" if p in test_patients else _split_of(patient_draw(p, seed), shares) for p in sorted(set(patients))
    }
    result = SplitResult({k: by_patient[p] for k, p in zip(view_keys, patients, strict=True)}, overlap_patients)
    result.warnings = check_splits(result, patients, view_keys, class_counts)
    if result.warnings and strict:
        raise ValueError("; ".join(result.warnings) + " (data.split.strict=true)")
    for message in result.warnings:
        warnings.warn(message, SplitWarning, stacklevel=2)
    return result


def check_splits(
    result: SplitResult, patients: Sequence[str], view_keys: Sequence[str], class_counts: Sequence[Sequence[int]]
) -> list[str]:
    """Raise if a patient is in two splits; return a message per split that misses a class present in the data."""
    seen: dict[str, str] = {}
    for patient, key in zip(patients, view_keys, strict=True):
        split = result.assignment[key]
        if seen.setdefault(patient, split) != split:
            raise AssertionError(f"patient {patient} is in both {seen[patient]} and {split}")
    totals = np.zeros(len(CLASSES), dtype=int)
    per_split = {split: np.zeros_like(totals) for split in SPLITS}
    for key, counts in zip(view_keys, class_counts, strict=True):
        per_split[result.assignment[key]] += np.asarray(counts, dtype=int)
        totals += np.asarray(counts, dtype=int)
    messages = []
    for split in SPLITS:
        missing = [CLASSES[i] for i in np.flatnonzero((totals > 0) & (per_split[split] == 0))]
        if missing:
            images = sum(result.assignment[k] == split for k in view_keys)
            messages.append(
                f"split {split!r} ({images} mammograms) has no lesion of class {', '.join(missing)}: "
                "too few patients of that class"
            )
    return messages


def class_counts(mammogram: Mammogram, mass_rule: str, birads0: str = "pathology") -> list[int]:
    """Lesions per class of one mammogram, from its CSV rows alone."""
    counts = [0] * len(CLASSES)
    for row in mammogram.abnormalities:
        counts[lesion_label(row, mass_rule, birads0) - 1] += 1
    return counts


def assign_splits(
    dataset: CbisDataset, mass_rule: str = "birads4", birads0: str = "pathology", **split_options: Any
) -> SplitResult:
    """Patient-level splits of a dataset's mammograms (see ``mammodet.data.splits.make_splits``)."""
    mammograms = dataset.mammograms
    return make_splits(
        [m.key for m in mammograms],
        [m.patient_id for m in mammograms],
        [class_counts(m, mass_rule, birads0) for m in mammograms],
        [m.official_splits for m in mammograms],
        **split_options,
    )
