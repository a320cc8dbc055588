"""Patient-level splits: no leak, every class everywhere, official test set respected, reproducible, and a
patient's split independent of which other patients are present."""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import pytest

from mammodet.data.cbis import CbisDataset, load_cbis_ddsm
from mammodet.data.splits import SplitWarning, assign_splits, make_splits


@pytest.fixture(scope="module")
def dataset(real_csv_dir: Path):
    return load_cbis_ddsm(real_csv_dir)


@pytest.mark.parametrize("mode", ["official", "random_701515"])
@pytest.mark.parametrize("rule", ["birads4", "pathology"])
def test_no_patient_in_two_splits_and_every_class_everywhere(dataset, mode: str, rule: str) -> None:
    result = assign_splits(dataset, rule, mode=mode, seed=3)
    splits_of = defaultdict(set)
    for m in dataset.mammograms:
        splits_of[m.patient_id].add(result.assignment[m.key])
    assert all(len(s) == 1 for s in splits_of.values())
    assert set(result.assignment.values()) == {"train", "val", "test"}


def test_official_mode_keeps_the_official_test_set(dataset) -> None:
    result = assign_splits(dataset, mode="official", seed=0)
    assert len(result.overlap_patients) == 31
    for m in dataset.mammograms:
        split = result.assignment[m.key]
        if m.official_splits == {"test"}:
            assert split == "test"
        elif m.patient_id not in result.overlap_patients:
            assert split in ("train", "val")
    # overlap="test": every mammogram of the 31 patients in both official sets is in test.
    overlap = set(result.overlap_patients)
    assert all(result.assignment[m.key] == "test" for m in dataset.mammograms if m.patient_id in overlap)
    moved = assign_splits(dataset, mode="official", seed=0, overlap="train")
    assert all(moved.assignment[m.key] != "test" for m in dataset.mammograms if m.patient_id in overlap)


def test_random_mode_shares_and_reproducibility(dataset) -> None:
    first = assign_splits(dataset, mode="random_701515", seed=7)
    again = assign_splits(dataset, mode="random_701515", seed=7)
    other = assign_splits(dataset, mode="random_701515", seed=8)
    assert first.assignment == again.assignment
    assert first.assignment != other.assignment
    n = len(dataset.mammograms)
    shares = {s: sum(v == s for v in first.assignment.values()) / n for s in ("train", "val", "test")}
    assert shares["train"] == pytest.approx(0.70, abs=0.03)
    assert shares["val"] == pytest.approx(0.15, abs=0.03)
    assert shares["test"] == pytest.approx(0.15, abs=0.03)


def test_a_split_missing_a_class_names_it_and_strict_raises() -> None:
    args = (["a", "b"], ["p1", "p2"], [[1, 0, 0], [0, 1, 0]])
    expected = r"split 'test' \(0 mammograms\) has no lesion of class calcification, mass_low"
    with pytest.warns(SplitWarning, match=expected):
        result = make_splits(*args, mode="random_701515")
    assert len(result.warnings) == 3 and all("class index" not in w for w in result.warnings)
    with pytest.raises(ValueError, match=r"has no lesion of class calcification.*data.split.strict=true"):
        make_splits(*args, mode="random_701515", strict=True)


def _subset(dataset: CbisDataset, keep) -> CbisDataset:
    rows = [r for r in dataset.rows if keep(r)]
    keys = {r.view_key for r in rows}
    return CbisDataset(rows, [m for m in dataset.mammograms if (m.patient_id, m.side, m.view) in keys], [])


@pytest.mark.parametrize(
    "name,keep,expected_splits",
    [
        ("official test rows only", lambda r: r.official_split == "test", {"test"}),
        ("two patients", lambda r: r.patient_id in ("P_00173", "P_00820"), {"test"}),
        ("one patient", lambda r: r.patient_id == "P_00001", {"train", "val"}),
        ("calcifications only", lambda r: r.abnormality_type == "calcification", {"train", "val", "test"}),
    ],
)
def test_any_subset_splits(dataset, name: str, keep, expected_splits: set[str]) -> None:
    subset = _subset(dataset, keep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitWarning)
        result = assign_splits(subset, mode="official", seed=0)
    assert set(result.assignment) == {m.key for m in subset.mammograms}
    assert set(result.assignment.values()) <= expected_splits
    if name == "one patient":
        assert len(set(result.assignment.values())) == 1
    if expected_splits == {"test"}:
        assert {w.split("'")[1] for w in result.warnings} == {"train", "val"}


def test_unknown_mode_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown split mode"):
        make_splits(["a"], ["p1"], [[1, 0, 0]], mode="image_level")
