"""The real CBIS-DDSM case-description CSVs parse exactly."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from mammodet.data.cbis import load_cbis_ddsm, read_case_csv
from mammodet.data.classes import LABEL_NAMES
from mammodet.data.labels import lesion_label


@pytest.fixture(scope="module")
def dataset(real_csv_dir: Path):
    return load_cbis_ddsm(real_csv_dir)


def test_row_counts_per_file(dataset) -> None:
    counts = Counter(r.source_file for r in dataset.rows)
    assert counts == {
        "mass_case_description_train_set.csv": 1318,
        "mass_case_description_test_set.csv": 378,
        "calc_case_description_train_set.csv": 1546,
        "calc_case_description_test_set.csv": 326,
    }


def test_full_mammogram_files_and_physical_views(dataset) -> None:
    per_file = Counter(source for source, _ in {(r.source_file, r.image_path) for r in dataset.rows})
    assert sum(per_file.values()) == 3103
    assert per_file["mass_case_description_train_set.csv"] == 1231
    assert per_file["calc_case_description_test_set.csv"] == 284
    # 71 views are stored twice (mass copy + calc copy): merged into one physical mammogram each.
    assert len(dataset.mammograms) == 3103 - 71
    merged = [m for m in dataset.mammograms if len(m.image_paths) == 2]
    assert len(merged) == 71
    for m in merged:
        assert {r.abnormality_type for r in m.abnormalities} == {"mass", "calcification"}
        assert m.image_paths[0].startswith("Mass-")


def test_paths_are_stripped_and_headers_aliased(dataset) -> None:
    for row in dataset.rows:
        for path in (row.image_path, row.crop_path, row.mask_path):
            assert path == path.strip() and path.endswith(".dcm") and '"' not in path
    densities = Counter(r.density for r in dataset.rows)
    assert set(densities) == {1, 2, 3, 4, None}
    assert densities[None] == 2  # the two calc-test rows with density 0


def test_out_of_range_values_reported_not_crashing(dataset) -> None:
    messages = [str(i) for i in dataset.issues]
    assert messages == [
        "mass_case_description_train_set.csv:987: subtlety='0': outside 1..5; treated as missing",
        "mass_case_description_train_set.csv:989: subtlety='0': outside 1..5; treated as missing",
        "calc_case_description_test_set.csv:545: density='0': outside 1..4; treated as missing",
        "calc_case_description_test_set.csv:547: density='0': outside 1..4; treated as missing",
    ]


def test_missing_descriptors_in_every_spelling(tmp_path: Path, real_csv_dir: Path) -> None:
    text = (real_csv_dir / "mass_case_description_test_set.csv").read_bytes().decode()
    lines = text.split("\r\n")
    header, first = lines[0], lines[1]  # a record; its quoted mask path ends with "\n" inside the quotes
    variants = [first.replace("IRREGULAR,SPICULATED", spelling) for spelling in ("NA,N/A", ",", "n/a,NA")]
    (tmp_path / "mass_case_description_test_set.csv").write_bytes(("\r\n".join([header, *variants]) + "\r\n").encode())
    rows, issues = read_case_csv(tmp_path / "mass_case_description_test_set.csv")
    assert len(rows) == 3 and not issues
    assert all(r.descriptor is None and r.distribution is None for r in rows)
    assert all(r.official_split == "test" and r.abnormality_type == "mass" for r in rows)


def test_patients_in_both_official_sets(dataset) -> None:
    train = {r.patient_id for r in dataset.rows if r.official_split == "train"}
    test = {r.patient_id for r in dataset.rows if r.official_split == "test"}
    assert len(train & test) == 31


def test_mass_rules_count_low_and_high(dataset) -> None:
    masses = [r for r in dataset.rows if r.abnormality_type == "mass"]
    birads = Counter(LABEL_NAMES[lesion_label(r, "birads4")] for r in masses)
    assert birads == {"mass_low": 598, "mass_high": 1098}  # BI-RADS 0 by pathology: 140 benign, 22 malignant
    birads0 = [r for r in masses if r.assessment == 0]
    assert (len(birads0), sum(r.pathology == "MALIGNANT" for r in birads0)) == (162, 22)
    low = Counter(LABEL_NAMES[lesion_label(r, "birads4", birads0="mass_low")] for r in masses)
    assert low == {"mass_low": 620, "mass_high": 1076}
    high = Counter(LABEL_NAMES[lesion_label(r, "birads4", birads0="mass_high")] for r in masses)
    assert high == {"mass_low": 458, "mass_high": 1238}
    with pytest.raises(ValueError, match="unknown birads0 rule"):
        lesion_label(masses[0], "birads4", birads0="ignore")
    pathology = Counter(LABEL_NAMES[lesion_label(r, "pathology")] for r in masses)
    assert pathology["mass_high"] == sum(r.pathology == "MALIGNANT" for r in masses)
    assert sum(pathology.values()) == 1696


def test_missing_csv_folder_and_wrong_file_are_clear(tmp_path: Path, real_csv_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="CSV folder not found"):
        load_cbis_ddsm(tmp_path / "nope")
    bad = tmp_path / "mass_case_description_train_set.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match=r"mass_case_description_train_set.csv: not a CBIS-DDSM"):
        load_cbis_ddsm(tmp_path)
    shutil.copy(real_csv_dir / "calc_case_description_test_set.csv", tmp_path)
    bad.unlink()
    partial = load_cbis_ddsm(tmp_path)
    assert len(partial.rows) == 326
    assert sum("not found" in i.message for i in partial.issues) == 3
