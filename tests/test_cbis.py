"""The real CBIS-DDSM case-description CSVs parse exactly."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from mammodet.data.cbis import load_cbis_ddsm, read_case_csv
from mammodet.data.classes import LABEL_NAMES
from mammodet.data.labels import lesion_label
from mammodet.errors import UserError

MASS_TRAIN = "mass_case_description_train_set.csv"


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
    with pytest.raises(UserError, match="CSV folder not found"):
        load_cbis_ddsm(tmp_path / "nope")
    bad = tmp_path / "mass_case_description_train_set.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(UserError, match=r"mass_case_description_train_set.csv: not a CBIS-DDSM"):
        load_cbis_ddsm(tmp_path)
    shutil.copy(real_csv_dir / "calc_case_description_test_set.csv", tmp_path)
    bad.unlink()
    partial = load_cbis_ddsm(tmp_path)
    assert len(partial.rows) == 326
    assert sum("not found" in i.message for i in partial.issues) == 3


def _edited_copy(real_csv_dir: Path, out: Path, edit) -> Path:
    """``out`` holding the real mass train CSV with ``edit(lines)`` applied to its lines (header is line 1)."""
    out.mkdir(exist_ok=True)
    lines = (real_csv_dir / MASS_TRAIN).read_text().split("\n")
    edit(lines)
    (out / MASS_TRAIN).write_text("\n".join(lines))
    return out


@pytest.mark.parametrize(
    "cell,value,column",
    [
        (0, "../../x/P_00003", "patient_id"),
        (0, "P_00001/..", "patient_id"),
        (0, "P 00001", "patient_id"),
        (11, "../../../etc/x/1.2/1.3/000000.dcm", "image file path"),
        (11, "/etc/x/1.2/1.3/000000.dcm", "image file path"),
        (12, "Mass-Training_P_00001_LEFT_CC_1/../../../x/000000.dcm", "cropped image file path"),
    ],
)
def test_a_name_that_would_become_a_path_outside_is_refused_with_its_line(
    tmp_path: Path, real_csv_dir: Path, cell: int, value: str, column: str
) -> None:
    def edit(lines: list[str]) -> None:
        cells = lines[1].split(",")
        cells[cell] = value
        lines[1] = ",".join(cells)

    folder = _edited_copy(real_csv_dir, tmp_path / "csv", edit)
    with pytest.raises(UserError) as info:
        load_cbis_ddsm(folder)
    message = str(info.value)
    assert message.startswith(f"{MASS_TRAIN}:2: {column} is not a ") and value not in message


def test_duplicated_rows_are_dropped_and_reported(tmp_path: Path, real_csv_dir: Path) -> None:
    real = read_case_csv(real_csv_dir / MASS_TRAIN)[0]
    first = real[0]
    copy = (real_csv_dir / MASS_TRAIN).read_text().split("\n")[1:3]  # the first row spans two lines
    folder = _edited_copy(real_csv_dir, tmp_path / "csv", lambda lines: lines.extend(copy + copy))
    dataset = load_cbis_ddsm(folder)
    assert dataset.duplicate_rows == 2
    assert len(dataset.rows) == len(real)
    duplicates = [i for i in dataset.issues if i.message.startswith("duplicate of")]
    assert [(i.line, i.message) for i in duplicates] == [
        (2640, f"duplicate of {MASS_TRAIN}:{first.line}; skipped"),
        (2642, f"duplicate of {MASS_TRAIN}:{first.line}; skipped"),
    ]
    view = next(m for m in dataset.mammograms if m.key == f"{first.patient_id}_{first.side}_{first.view}")
    assert len(view.abnormalities) == 1
    from mammodet.stats import markdown

    assert markdown(dataset, {}).splitlines()[1] == "2 duplicate CSV rows dropped (exact copies of an earlier row)"


def test_an_unbalanced_quote_is_refused_naming_its_line(tmp_path: Path, real_csv_dir: Path) -> None:
    def edit(lines: list[str]) -> None:
        assert lines[41].startswith("P_00034,3,")
        lines[41] = lines[41].replace(",", ',"', 1)  # P_00034,"3,RIGHT,... : the quote swallows the lines after it

    folder = _edited_copy(real_csv_dir, tmp_path / "csv", edit)
    with pytest.raises(UserError) as info:
        load_cbis_ddsm(folder)
    assert str(info.value) == (
        f"{MASS_TRAIN}:42: a quote opens a cell on this line and is not closed where the cell ends, so the CSV "
        "reader joins the lines after it (20 rows read, 1298 malformed, from 2638 lines); remove or close that quote"
    )


def test_a_quote_open_to_the_end_of_the_file_is_refused_naming_its_line(tmp_path: Path, real_csv_dir: Path) -> None:
    folder = _edited_copy(real_csv_dir, tmp_path / "csv", lambda lines: lines.insert(-1, 'P_09999,"3,LEFT'))
    with pytest.raises(UserError, match=f"^{MASS_TRAIN}:2638: a quote opens a cell on this line"):
        load_cbis_ddsm(folder)


def test_a_row_short_of_cells_stays_a_reported_row(tmp_path: Path, real_csv_dir: Path) -> None:
    folder = _edited_copy(real_csv_dir, tmp_path / "csv", lambda lines: lines.insert(-1, "P_09999,3,LEFT"))
    dataset = load_cbis_ddsm(folder)
    assert [(i.line, i.message) for i in dataset.issues if i.field == "row"] == [(2638, "expected 14 cells; skipped")]
