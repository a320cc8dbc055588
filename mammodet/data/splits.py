"""Leak-free, patient-grouped, class-stratified train/val/test splits, computed from the CSVs alone.

Every mammogram of a patient lands in one split (asserted). Patients are assigned greedily, rarest class
first, to the split furthest below its target share of that class, so every class reaches every split
whenever the data allow it. The assignment is a function of the CSV rows and the seed only, never of which
DICOM files are present: a partial download converts every patient into the same split as the full one.
Any subset of rows splits (official test rows only, one patient, calcifications only); a split that cannot
hold a class present in the data is reported by class name as a warning, or raised with ``strict=True``.

Modes:
- ``official``: the CBIS-DDSM test set is the test split; validation is carved by patient from the official
  train set. Patients in both official sets are resolved by ``overlap`` (``test``: all their mammograms go to
  test, the default; ``train``: all go to train/val) and counted.
- ``random_701515``: the original project's 70/15/15, but by patient.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
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


def _stratified_groups(
    group_counts: Mapping[str, np.ndarray], shares: Mapping[str, float], rng: np.random.Generator
) -> dict[str, str]:
    """Assign groups (patients) to splits so each split gets about its share of every column.

    A group's vector holds its lesions per class and, last, its number of mammograms, so both the class
    mix and the image count follow the shares.
    """
    names = list(shares)
    groups = list(group_counts)
    if not groups:  # e.g. official mode with test rows only: nothing to carve
        return {}
    rng.shuffle(groups)
    vectors = np.array([group_counts[g] for g in groups], dtype=float)
    totals = vectors.sum(axis=0)
    # Rarest class first: groups holding rare classes are placed while every split still needs them.
    rarity = np.where(vectors[:, :-1] > 0, totals[:-1], np.inf).min(axis=1)
    order = np.lexsort((-vectors[:, :-1].sum(axis=1), rarity))
    have = {name: np.zeros_like(totals) for name in names}
    assigned: dict[str, str] = {}
    scale = np.maximum(totals, 1)
    for index in order:
        # The split least filled, relative to its share, in the columns this group adds to (rare ones weigh more).
        weight = vectors[index] / scale
        fill = [float(np.sum(weight * have[n] / scale) / shares[n]) for n in names]
        best = names[int(np.argmin(fill))]
        assigned[groups[index]] = best
        have[best] += vectors[index]
    return assigned


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
    class_names: Sequence[str] = CLASSES,
) -> SplitResult:
    """Split mammograms by patient.

    ``view_keys[i]`` is a mammogram's key, ``patients[i]`` its patient, ``class_counts[i]`` its number of lesions
    per class (named by ``class_names``) and ``official[i]`` the official splits it appears in (needed for
    ``mode="official"``). ``strict``: a split without a class present in the data raises instead of warning.
    """
    if mode not in MODES:
        raise ValueError(f"unknown split mode {mode!r}; choose one of {MODES}")
    if overlap not in ("test", "train"):
        raise ValueError(f"unknown overlap rule {overlap!r}; choose 'test' or 'train'")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    per_patient: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(class_names) + 1, dtype=int))
    for patient, counts in zip(patients, class_counts, strict=True):
        per_patient[patient] = per_patient[patient] + np.append(np.asarray(counts, dtype=int), 1)
    overlap_patients: list[str] = []
    if mode == "official":
        if official is None:
            raise ValueError("mode='official' needs the official split of every mammogram")
        patient_sets: dict[str, set[str]] = defaultdict(set)
        for patient, sets in zip(patients, official, strict=True):
            patient_sets[patient] |= set(sets)
        overlap_patients = sorted(p for p, s in patient_sets.items() if len(s) > 1)
        test_patients = {p for p, s in patient_sets.items() if s == {"test"} or (len(s) > 1 and overlap == "test")}
        train_pool = {p: c for p, c in per_patient.items() if p not in test_patients}
        by_patient = _stratified_groups(train_pool, {"train": 1 - val_fraction, "val": val_fraction}, rng)
        by_patient.update({p: "test" for p in test_patients})
    else:
        by_patient = _stratified_groups(per_patient, RANDOM_SHARES, rng)
    result = SplitResult({k: by_patient[p] for k, p in zip(view_keys, patients, strict=True)}, overlap_patients)
    result.warnings = check_splits(result, patients, view_keys, class_counts, class_names)
    if result.warnings and strict:
        raise ValueError("; ".join(result.warnings) + " (data.split.strict=true)")
    for message in result.warnings:
        warnings.warn(message, SplitWarning, stacklevel=2)
    return result


def check_splits(
    result: SplitResult,
    patients: Sequence[str],
    view_keys: Sequence[str],
    class_counts: Sequence[Sequence[int]],
    class_names: Sequence[str] = CLASSES,
) -> list[str]:
    """Raise if a patient is in two splits; return a message per split that misses a class present in the data."""
    seen: dict[str, str] = {}
    for patient, key in zip(patients, view_keys, strict=True):
        split = result.assignment[key]
        if seen.setdefault(patient, split) != split:
            raise AssertionError(f"patient {patient} is in both {seen[patient]} and {split}")
    totals = np.zeros(len(class_names), dtype=int)
    per_split = {split: np.zeros_like(totals) for split in SPLITS}
    for key, counts in zip(view_keys, class_counts, strict=True):
        per_split[result.assignment[key]] += np.asarray(counts, dtype=int)
        totals += np.asarray(counts, dtype=int)
    messages = []
    for split in SPLITS:
        missing = [class_names[i] for i in np.flatnonzero((totals > 0) & (per_split[split] == 0))]
        if missing:
            images = sum(result.assignment[k] == split for k in view_keys)
            messages.append(
                f"split {split!r} ({images} mammograms) has no lesion of class {', '.join(missing)}: "
                "too few patients to stratify"
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
