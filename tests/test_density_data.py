"""Density data: the three label sources and their issues, patient-grouped splits, letterbox, the DataModule."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mammodet.data.dicom import read_dicom_header
from mammodet.density.data import DensityDataModule, letterbox, load_image
from mammodet.density.labels import (
    DensityRecord,
    class_weights,
    density_label,
    parse_density,
    read_cbis_density,
    read_generic_csv,
    read_rsna_csv,
    split_records,
)
from mammodet.synthetic.density import allot, ensure, generate


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 synthetic patients (5 per density), a CC and an MLO each, at 128x80."""
    out = tmp_path_factory.mktemp("density_synth")
    generate(out, n_patients=20, height=128, width=80, seed=3, class_shares=(1, 1, 1, 1))
    return out


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def test_parse_density_and_labels() -> None:
    assert [parse_density(v) for v in ("A", "b", " C ", "d", "1", "2.0", "3", "4")] == [1, 2, 3, 4, 1, 2, 3, 4]
    for bad in ("0", "5", "E", "2.5", "dense"):
        with pytest.raises(ValueError):
            parse_density(bad)
    assert [density_label(d, 4) for d in (1, 2, 3, 4)] == [0, 1, 2, 3]
    assert [density_label(d, 2) for d in (1, 2, 3, 4)] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="classes must be 4"):
        density_label(1, 3)


def test_synthetic_dataset_is_rsna_style_with_both_dicom_kinds(synth: Path) -> None:
    rows = list(csv.DictReader((synth / "train.csv").open()))
    assert list(rows[0]) == ["patient_id", "image_id", "laterality", "view", "density"]
    assert len(rows) == 40 and Counter(r["density"] for r in rows) == {"A": 10, "B": 10, "C": 10, "D": 10}
    kinds = {read_dicom_header(synth / "images" / r["patient_id"] / f"{r['image_id']}.dcm").photometric for r in rows}
    assert kinds == {"MONOCHROME1", "MONOCHROME2"}
    assert allot(10, (0.15, 0.35, 0.35, 0.15)) == [2, 4, 3, 1] and allot(120, (0.15, 0.35, 0.35, 0.15)) == [
        18,
        42,
        42,
        18,
    ]
    with pytest.raises(ValueError, match="leave a density without a patient"):
        generate(synth / "never", n_patients=3)


def test_rsna_reader_reports_invalid_missing_and_unfound(synth: Path, tmp_path: Path) -> None:
    rows = [r.split(",") for r in (synth / "train.csv").read_text().splitlines()[1:5]]
    rows[1][4] = "E"
    rows[2][4] = ""
    rows[3][1] = "999"  # no such file
    path = _write(
        tmp_path / "rsna.csv",
        ["patient_id", "image_id", "laterality", "view", "density", "age"],
        [[*r, "61"] for r in rows],
    )
    records, issues = read_rsna_csv(path, synth / "images")
    assert len(records) == 1 and records[0].density == parse_density(rows[0][4])
    assert (
        records[0].key == f"{rows[0][0]}_{rows[0][2]}_{rows[0][3]}_{rows[0][1]}" and records[0].patient_id == rows[0][0]
    )
    assert [(i.line, i.field, i.message) for i in issues] == [
        (3, "density", "not a density: expected A-D or 1-4; skipped"),
        (4, "density", "missing density; skipped"),
        (5, "image_id", "DICOM file not found; skipped"),
    ]
    with pytest.raises(ValueError, match=r"missing columns \['density'\]"):
        read_rsna_csv(_write(tmp_path / "bad.csv", ["patient_id", "image_id", "laterality", "view"], []), synth)


def test_generic_reader_hides_file_names_and_groups_by_patient(synth: Path, tmp_path: Path) -> None:
    png = tmp_path / "Jane_Doe_1958.png"
    cv2.imwrite(str(png), np.full((40, 30), 200, np.uint8))
    path = _write(
        tmp_path / "labels.csv", ["image_path", "label"], [[png.name, "3"], ["gone.png", "B"], [png.name, "7"]]
    )
    records, issues = read_generic_csv(path)
    assert [(r.key, r.patient_id, r.density) for r in records] == [("row000002", "row000002", 3)]
    assert [(i.line, i.message, i.value) for i in issues] == [
        (3, "image file not found; skipped", ""),
        (4, "outside A-D / 1-4; skipped", "7"),
    ]
    assert load_image(records[0].path, 16, crop_breast=False).shape == (16, 16)
    grouped, _ = read_generic_csv(synth / "generic.csv")
    assert len(grouped) == 40 and len({r.patient_id for r in grouped}) == 20


def test_cbis_density_from_the_synthetic_copy_and_the_real_csv_issues(
    synthetic_classic: Path, real_csv_dir: Path, tmp_path: Path
) -> None:
    records, issues = read_cbis_density(synthetic_classic / "csv", synthetic_classic / "dicom")
    assert records and not [i for i in issues if i.field in ("density", "image")]
    assert {r.official_split for r in records} == {"train", "test"} and all(r.path.is_file() for r in records)
    assert all(r.key.startswith(r.patient_id + "_") for r in records)
    empty_root = tmp_path / "dicom"
    empty_root.mkdir()
    records, issues = read_cbis_density(real_csv_dir, empty_root)
    assert records == []
    invalid = [str(i) for i in issues if i.field == "density" and i.line is not None]
    assert invalid == [
        "calc_case_description_test_set.csv:545: density='0': outside 1..4; treated as missing",
        "calc_case_description_test_set.csv:547: density='0': outside 1..4; treated as missing",
    ]
    skipped = Counter(i.message.split(" (")[0] for i in issues if i.line is None and i.field in ("density", "image"))
    assert skipped == {"no valid breast density; skipped": 2, "DICOM file not found": 3030}


def test_splits_group_patients_and_hold_every_class(synth: Path) -> None:
    records, _ = read_rsna_csv(synth / "train.csv", synth / "images")
    splits = split_records(records, seed=1)
    assert sum(len(s) for s in splits.values()) == 40
    patients = {split: {r.patient_id for r in items} for split, items in splits.items()}
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )
    for items in splits.values():
        assert {r.density for r in items} == {1, 2, 3, 4}
    assert split_records(records, seed=1) == splits
    one_patient_a = [r for r in records if r.density != 1] + [r for r in records if r.density == 1][:2]
    with pytest.raises(ValueError, match="too few patients to stratify"):
        split_records(one_patient_a)


def test_official_mode_keeps_the_cbis_test_set() -> None:
    records = [
        DensityRecord(f"P_{i:05d}_LEFT_CC", f"P_{i:05d}", Path("x.dcm"), i % 4 + 1, "test" if i < 12 else "train")
        for i in range(60)
    ]
    splits = split_records(records, mode="official", seed=0, val_fraction=0.2)
    assert [r.key for r in splits["test"]] == [r.key for r in records[:12]]
    assert abs(len(splits["val"]) - 0.2 * 48) <= 3 and all(
        {r.density for r in items} == {1, 2, 3, 4} for items in splits.values()
    )
    missing_d = r"density split: split 'test' \(\d+ mammograms\) has no lesion of class density D"
    with pytest.raises(ValueError, match=missing_d):
        split_records([r for r in records if not (r.official_split == "test" and r.density == 4)], mode="official")


def test_letterbox_keeps_aspect_and_all_tissue() -> None:
    image = np.zeros((300, 100), np.uint8)
    image[[0, -1], :] = image[:, [0, -1]] = 255  # a frame touching every edge
    out = letterbox(image, 60)
    rows, cols = np.nonzero(out)
    assert out.shape == (60, 60) and (rows.min(), rows.max()) == (0, 59)
    assert (cols.min(), cols.max()) == (20, 39)  # 100 / 300 * 60 = 20 px wide, centred
    wide = letterbox(np.full((10, 40), 9, np.uint8), 80)
    assert np.array_equal(np.flatnonzero(wide.any(axis=1)), np.arange(30, 50)) and wide.any(axis=0).all()


def test_load_image_decodes_both_dicom_kinds_tissue_bright(synth: Path) -> None:
    records, _ = read_rsna_csv(synth / "train.csv", synth / "images")
    for record in records[:4]:  # the 4th file is MONOCHROME1 without a window, the others windowed
        image = load_image(record.path, 64)
        assert image.dtype == np.uint8 and image.shape == (64, 64)
        assert image[image > 0].mean() > 60 and (image == 0).mean() > 0.1  # bright breast on black


def test_class_weights() -> None:
    np.testing.assert_allclose(class_weights([10, 30, 60], 0.0), [1, 1, 1])
    weights = class_weights([10, 30, 60], 1.0)
    np.testing.assert_allclose(weights * [10, 30, 60], [100 / 3] * 3)
    assert (weights * [10, 30, 60]).sum() == pytest.approx(100)
    with pytest.raises(ValueError, match="every class needs training samples"):
        class_weights([3, 0], 1.0)


def test_datamodule_binary_task_sampler_and_batches(synth: Path, tmp_path: Path) -> None:
    shutil.copytree(synth, tmp_path / "copy")
    dm = DensityDataModule(
        csv_path=str(tmp_path / "copy" / "train.csv"),
        image_root=str(tmp_path / "copy" / "images"),
        classes=2,
        image_size=48,
        sampler_alpha=1.0,
        batch_size=4,
        num_workers=0,
    )
    dm.prepare_data()
    dm.setup("fit")
    counts = dm.class_counts("train")
    assert len(counts) == 2 and min(dm.class_counts("val")) > 0 and min(dm.class_counts("test")) > 0
    loader = dm.train_dataloader()
    weights = loader.sampler.weights
    labels = torch.tensor(loader.dataset.labels)
    assert torch.allclose(weights[labels == 0].sum(), weights[labels == 1].sum())  # classes equally likely
    images, batch_labels, indices = next(iter(dm.val_dataloader()))
    assert images.shape == (len(batch_labels), 1, 48, 48) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and indices.tolist() == list(range(len(batch_labels)))
    with pytest.raises(ValueError, match=r"unknown data\.source"):
        DensityDataModule(source="dicomdir", csv_path="x")


def test_synthetic_data_is_made_once_and_missing_inputs_are_named(tmp_path: Path) -> None:
    out = tmp_path / "made"
    dm = DensityDataModule(csv_path=str(out / "train.csv"), image_root=str(out / "images"), num_workers=0)
    with pytest.raises(FileNotFoundError, match=f"data.csv_path={out / 'train.csv'} does not exist"):
        dm.prepare_data()
    options = {"n_patients": 12, "height": 64, "width": 40, "class_shares": [1, 1, 1, 1]}
    assert ensure(out, **options) == out / "train.csv"
    assert len(list((out / "images").rglob("*.dcm"))) == 24
    stamp = (out / "generic.csv").stat().st_mtime_ns
    ensure(out, **options)  # already there: nothing is rewritten
    assert (out / "generic.csv").stat().st_mtime_ns == stamp
    dm.prepare_data()
