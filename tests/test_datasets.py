"""The dataset registry and the readers of VinDr-Mammo, INbreast and mini-MIAS on synthetic trees in their
published formats: every lesion where the generator put it, ignore regions kept, splits, density, spacing,
each format quirk, and no identifier in a record."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from mammodet import datasets
from mammodet.data.records import DatasetRecords, MammogramRecord
from mammodet.errors import UserError
from mammodet.synthetic import inbreast as synth_inbreast
from mammodet.synthetic import mini_mias as synth_mias
from mammodet.synthetic import vindr_mammo as synth_vindr
from mammodet.synthetic.cbis import PLANTED_IDENTIFIERS


@pytest.fixture(scope="module")
def vindr_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic VinDr-Mammo tree (6 studies, 24 images)."""
    return synth_vindr.generate(tmp_path_factory.mktemp("vindr"))


@pytest.fixture(scope="module")
def inbreast_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic INbreast tree (8 patients, 16 images)."""
    return synth_inbreast.generate(tmp_path_factory.mktemp("inbreast"))


@pytest.fixture(scope="module")
def mias_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic mini-MIAS tree (8 images, 1024x1024)."""
    return synth_mias.generate(tmp_path_factory.mktemp("mias"))


def _truth(tree: Path) -> dict:
    return json.loads((tree / "synth_truth.json").read_text())["images"]


def _by_key(read: DatasetRecords) -> dict[str, MammogramRecord]:
    return {r.source_key: r for r in read.records}


def _findings(record: MammogramRecord) -> list[tuple]:
    return sorted((f.finding, f.label or "", tuple(f.box)) for f in record.findings)


def _expected(entry: dict) -> list[tuple]:
    return sorted((f["finding"], f["label"] or "", tuple(f["box"])) for f in entry["findings"])


def test_registry_lists_and_resolves_the_readers() -> None:
    assert {"vindr_mammo", "inbreast", "mini_mias"} <= set(datasets.names())
    assert datasets.get("mini_mias").__module__ == "mammodet.datasets.mini_mias"
    with pytest.raises(UserError, match=r"dataset=nope: unknown dataset; choose one of .*inbreast"):
        datasets.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        datasets.register("mini_mias", lambda root, options: DatasetRecords([]))


def test_class_map_naming_an_unknown_class_is_refused(mias_tree: Path) -> None:
    with pytest.raises(UserError, match=r"dataset.class_map.CALC: class 'calc' .* not in dataset.classes"):
        datasets.read("mini_mias", mias_tree, {"class_map": {"CALC": "calc"}})


# --- VinDr-Mammo ---


def test_vindr_places_every_finding_and_ignore_region(vindr_tree: Path) -> None:
    truth, read = _truth(vindr_tree), datasets.read("vindr_mammo", vindr_tree)
    records = _by_key(read)
    assert read.problems == [] and set(records) == set(truth) and len(records) == 24
    for key, entry in truth.items():
        assert _findings(records[key]) == _expected(entry), key
        assert records[key].excluded is None
    labels = Counter(f.label for r in records.values() for f in r.findings)
    assert labels == Counter(f["label"] for e in truth.values() for f in e["findings"])
    assert set(labels) == {"mass_high", "mass_low", "calcification", None}
    assert {f.finding for r in records.values() for f in r.ignore_regions} == {"Architectural Distortion"}


def test_vindr_quirks_list_strings_no_finding_strings_floats_crlf(vindr_tree: Path) -> None:
    text = (vindr_tree / "finding_annotations.csv").read_bytes()
    assert text.count(b"\r\n") == text.count(b"\n")  # CRLF throughout
    assert b"\"['Mass', 'Suspicious Calcification']\"" in text and b"['No Finding'],,,,,," in text
    records = _by_key(datasets.read("vindr_mammo", vindr_tree))
    both = [r for r in records.values() if len({f.box for f in r.findings}) < len(r.findings)]
    assert both and all(sorted(f.label for f in r.findings) == ["calcification", "mass_high"] for r in both)
    assert all(f.birads == "5" for r in both for f in r.findings)  # "BI-RADS 5" -> "5"
    assert sum(not r.findings for r in records.values()) == 6  # "No Finding" rows: images without findings
    assert any(v % 1 for r in records.values() for f in r.findings for v in f.box)  # float coordinates kept
    assert max(len(r.findings) for r in records.values()) == 2  # several rows per image
    truth = _truth(vindr_tree)
    assert all(records[k].density == e["density"] for k, e in truth.items())  # "DENSITY C" -> "C"


def test_vindr_split_is_the_publishers_with_val_carved_by_study(vindr_tree: Path) -> None:
    truth, records = _truth(vindr_tree), _by_key(datasets.read("vindr_mammo", vindr_tree))
    for key, entry in truth.items():
        assert (records[key].split == "test") == (entry["publisher_split"] == "test")
    splits_of_study: dict[str, set[str]] = {}
    for record in records.values():
        splits_of_study.setdefault(record.patient, set()).add(record.split)
    assert all(len(s) == 1 for s in splits_of_study.values())
    assert Counter(next(iter(s)) for s in splits_of_study.values()) == {"train": 3, "val": 1, "test": 2}


def test_vindr_spacing_from_the_dicom_else_the_default(vindr_tree: Path) -> None:
    truth, records = _truth(vindr_tree), _by_key(datasets.read("vindr_mammo", vindr_tree))
    for key, entry in truth.items():
        expected = (0.085, "dicom") if entry["pixel_spacing_mm"] else (0.1, "default")
        assert (records[key].pixel_spacing_mm, records[key].pixel_spacing_source) == expected
    assert sum(r.pixel_spacing_source == "default" for r in records.values()) == 1


def test_vindr_bad_category_string_names_the_line(vindr_tree: Path, tmp_path: Path) -> None:
    shutil.copy(vindr_tree / "finding_annotations.csv", tmp_path / "finding_annotations.csv")
    path = tmp_path / "finding_annotations.csv"
    path.write_bytes(path.read_bytes().replace(b"['No Finding']", b"No Finding", 1))
    with pytest.raises(UserError, match=r"finding_annotations.csv:2: finding_categories 'No Finding' is not a list"):
        datasets.read("vindr_mammo", tmp_path)


def test_vindr_finding_without_coordinates_excludes_its_image(vindr_tree: Path, tmp_path: Path) -> None:
    path = tmp_path / "finding_annotations.csv"
    lines = (vindr_tree / "finding_annotations.csv").read_bytes().decode().split("\r\n")
    index = next(i for i, line in enumerate(lines) if ",['Mass'],BI-RADS" in line)
    fields = lines[index].split(",")
    fields[11:15] = ["", "", "", ""]
    lines[index] = ",".join(fields)
    path.write_bytes("\r\n".join(lines).encode())
    records = _by_key(datasets.read("vindr_mammo", tmp_path))
    assert (
        records[fields[2]].excluded
        == f"finding_annotations.csv line {index + 1}: Mass without coordinates (its lesion cannot be located)"
    )


# --- INbreast ---


def test_inbreast_places_every_roi_with_its_class(inbreast_tree: Path) -> None:
    truth, read = _truth(inbreast_tree), datasets.read("inbreast", inbreast_tree)
    records = _by_key(read)
    assert read.problems == [] and set(records) == set(truth) and len(records) == 16
    for key, entry in truth.items():
        record = records[key]
        assert _findings(record) == _expected(entry), key
        assert (record.patient, record.laterality, record.view, record.density) == (
            entry["patient"], entry["laterality"], entry["view"], entry["density"]
        )  # fmt: skip
        assert (record.pixel_spacing_mm, record.pixel_spacing_source) == (0.07, entry["pixel_spacing_source"])
    masses = {
        (r.findings[0].birads, r.findings[0].label)
        for r in records.values()
        if r.findings and r.findings[0].finding == "Mass"
    }
    assert ("4b", "mass_high") in masses and ("3", "mass_low") in masses
    assert {r.density for r in records.values()} == {"A", "B", "C", "D"}  # ACR 1-4


def test_inbreast_one_point_roi_is_a_3mm_square(inbreast_tree: Path) -> None:
    records = _by_key(datasets.read("inbreast", inbreast_tree))
    squares = [f.box for r in records.values() for f in r.findings if abs((f.box[2] - f.box[0]) - 3.0 / 0.07) < 1e-9]
    assert len(squares) == 5 and all(abs((b[3] - b[1]) - 3.0 / 0.07) < 1e-9 for b in squares)
    wider = datasets.read("inbreast", inbreast_tree, {"point_roi_side_mm": 7.0}).records
    assert sum(abs((f.box[2] - f.box[0]) - 100.0) < 1e-9 for r in wider for f in r.findings) == 5


def test_inbreast_split_is_patient_level_70_15_15(inbreast_tree: Path) -> None:
    records = datasets.read("inbreast", inbreast_tree).records
    by_patient: dict[str, set[str]] = {}
    for record in records:
        by_patient.setdefault(record.patient, set()).add(record.split)
    assert all(len(s) == 1 for s in by_patient.values()) and len(by_patient) == 8
    assert Counter(next(iter(s)) for s in by_patient.values()) == {"train": 6, "val": 1, "test": 1}


def test_inbreast_dicom_matched_by_file_name_prefix(inbreast_tree: Path, tmp_path: Path) -> None:
    shutil.copytree(inbreast_tree, tmp_path / "t")
    root = tmp_path / "t"
    (root / "AllDICOMs" / "notes.txt").write_text("not a DICOM")
    victim = next(root.glob("AllDICOMs/20587045_*.dcm"))
    victim.unlink()
    read = datasets.read("inbreast", root)
    assert len(read.records) == 15 and "20587045" not in _by_key(read)
    (problem,) = read.problems
    assert (problem.file, problem.line, problem.value) == ("INbreast.csv", 3, "20587045")
    assert problem.reason.startswith("no AllDICOMs/20587045_<hash>_MG_")


# --- mini-MIAS ---


def test_mias_boxes_from_centre_and_radius_with_the_origin_flipped(mias_tree: Path) -> None:
    truth, read = _truth(mias_tree), datasets.read("mini_mias", mias_tree)
    records = _by_key(read)
    assert read.problems == [] and set(records) == set(truth)
    for key, entry in truth.items():
        assert _findings(records[key]) == _expected(entry), key
        assert records[key].laterality == entry["laterality"]
        assert (records[key].excluded is not None) == entry["excluded"]
    assert len(records["mdb004"].findings) == 2  # two lines, two lesions
    assert [f.label for f in records["mdb005"].findings] == [None]  # ARCH: an ignore region
    assert records["mdb006"].excluded == "Info.txt line 7: CIRC without coordinates (its lesion cannot be located)"
    assert {(r.pixel_spacing_mm, r.pixel_spacing_source, r.density, r.view) for r in records.values()} == {
        (0.2, "publisher", None, "MLO")
    }


def test_mias_consecutive_refnums_are_one_patient(mias_tree: Path) -> None:
    records = _by_key(datasets.read("mini_mias", mias_tree))
    assert records["mdb001"].patient == records["mdb002"].patient == "mdb001_002"
    assert records["mdb003"].patient == "mdb003_004" != records["mdb002"].patient
    for odd in ("mdb001", "mdb003", "mdb005", "mdb007"):
        even = f"mdb{int(odd[3:]) + 1:03d}"
        assert records[odd].split == records[even].split


def test_mias_malformed_line_names_the_line(mias_tree: Path, tmp_path: Path) -> None:
    (tmp_path / "Info.txt").write_text("mdb001 G CIRC B 535 425 197\nmdb002 G CIRC B 535 425\n")
    with pytest.raises(UserError, match=r"Info.txt:2: expected 'mdbNNN tissue class"):
        datasets.read("mini_mias", tmp_path)


def test_no_identifier_in_any_record(vindr_tree: Path, inbreast_tree: Path) -> None:
    text = repr(datasets.read("vindr_mammo", vindr_tree)) + repr(datasets.read("inbreast", inbreast_tree))
    planted = [*PLANTED_IDENTIFIERS.values(), synth_vindr.PLANTED_PATIENT_ID, synth_inbreast.PLANTED_PATIENT_ID]
    assert not [v for v in planted if v in text]
    assert synth_inbreast.PLANTED_DATE not in text


def test_synth_command_writes_each_format_and_names_the_known_ones(tmp_path: Path) -> None:
    from mammodet.synth import generate_format

    generate_format("mini_mias", str(tmp_path / "mias"), seed=3)
    assert (tmp_path / "mias" / "Info.txt").is_file() and len(list((tmp_path / "mias").glob("mdb*.pgm"))) == 8
    with pytest.raises(
        UserError, match=r"format=scene: no synthetic generator .* cbis_ddsm, inbreast, mini_mias, vindr"
    ):
        generate_format("scene", str(tmp_path / "x"), seed=0)
