"""synth -> convert round trip: every generated box comes back exactly, in both layouts; resumable;
bad files reported; no patient identifier beyond the pseudonym in any output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from mammodet.data.annotate import annotate
from mammodet.data.cbis import load_cbis_ddsm
from mammodet.data.conversion import ConvertSettings, convert_dataset
from mammodet.data.dicom import read_dicom
from mammodet.data.layout import DicomLocator
from mammodet.data.preprocess import unmap_boxes
from mammodet.synthetic.cbis import PLANTED_IDENTIFIERS


def _returned_boxes(out_dir: Path) -> dict[str, list[tuple]]:
    """Per mammogram key: (type, id, box in DICOM pixels) read back from the COCO files."""
    found: dict[str, list[tuple]] = {}
    for split in ("train", "val", "test"):
        coco = COCO(str(out_dir / "annotations" / f"{split}.json"))
        for image in coco.dataset["images"]:
            x0, y0, x1, y1 = image["crop_box"]
            scale = (image["width"] / (x1 - x0), image["height"] / (y1 - y0))
            lesions = found.setdefault(image["key"], [])
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
                x, y, w, h = ann["bbox"]
                box = unmap_boxes(np.array([[x, y, x + w, y + h]]), image["crop_box"], scale)[0]
                lesions.append((ann["abnormality_type"], ann["abnormality_id"], tuple(np.round(box, 6))))
    return found


def _truth(synth_dir: Path) -> dict[str, list[tuple]]:
    images = json.loads((synth_dir / "synth_truth.json").read_text())["images"]
    return {
        k: [(t["abnormality_type"], t["abnormality_id"], tuple(t["box"])) for t in v["lesions"]]
        for k, v in images.items()
    }


@pytest.mark.parametrize("layout", ["classic", "tcia"])
@pytest.mark.parametrize("crop_breast,max_side", [(False, None), (True, 160)])
def test_round_trip_returns_every_box(request, tmp_path: Path, layout: str, crop_breast: bool, max_side) -> None:
    synth = request.getfixturevalue(f"synthetic_{layout}")
    settings = ConvertSettings(crop_breast=crop_breast, max_side=max_side)
    summary = convert_dataset(synth / "dicom", synth / "csv", tmp_path, settings)
    truth = _truth(synth)
    got = _returned_boxes(tmp_path)
    assert set(got) == set(truth)
    # Without crop or resize the boxes are the truth to the bit; through a resize, to float64 rounding (the
    # per-axis scales are exact ratios, and _returned_boxes rounds to 6 decimals).
    atol = 1e-6 if max_side else 0.0
    for key, lesions in truth.items():
        returned, expected = sorted(got[key]), sorted(lesions)
        assert [lesion[:2] for lesion in returned] == [lesion[:2] for lesion in expected], key
        np.testing.assert_allclose(
            [lesion[2] for lesion in returned], [lesion[2] for lesion in expected], rtol=0, atol=atol, err_msg=key
        )
    assert summary.converted == len(truth)
    assert not [s for s in summary.skipped if s["reason"].endswith("skipped")]


def test_half_size_masks_are_rescaled_and_reported(synthetic_classic: Path, tmp_path: Path) -> None:
    summary = convert_dataset(synthetic_classic / "dicom", synthetic_classic / "csv", tmp_path)
    rescaled = [s for s in summary.skipped if "box rescaled" in s["reason"]]
    assert rescaled, "the fixture writes every 4th mask at half size"
    assert all(s["key"].startswith("P_") for s in rescaled)


def test_coco_images_carry_patient_side_view_and_crop(synthetic_classic: Path, tmp_path: Path) -> None:
    convert_dataset(synthetic_classic / "dicom", synthetic_classic / "csv", tmp_path, workers=2)
    coco = json.loads((tmp_path / "annotations" / "train.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["calcification", "mass_low", "mass_high"]
    for image in coco["images"]:
        assert image["laterality"] in ("LEFT", "RIGHT") and image["view"] in ("CC", "MLO")
        assert image["file_name"] == f"images/{image['patient_id']}_{image['laterality']}_{image['view']}.jpg"
        x0, y0, x1, y1 = image["crop_box"]
        assert 0 <= x0 < x1 <= image["source_width"] and 0 <= y0 < y1 <= image["source_height"]
        assert (tmp_path / image["file_name"]).is_file()


def test_conversion_resumes_and_skips_what_is_done(synthetic_classic: Path, tmp_path: Path) -> None:
    first = convert_dataset(synthetic_classic / "dicom", synthetic_classic / "csv", tmp_path)
    done = sorted((tmp_path / "records").glob("*.json"))
    (tmp_path / "records" / done[0].name).unlink()  # as if the run had stopped before this one
    second = convert_dataset(synthetic_classic / "dicom", synthetic_classic / "csv", tmp_path)
    assert (second.converted, second.resumed) == (1, first.converted - 1)
    third = convert_dataset(
        synthetic_classic / "dicom", synthetic_classic / "csv", tmp_path, ConvertSettings(max_side=100)
    )
    assert (third.converted, third.resumed) == (first.converted, 0)  # other settings: everything redone


def test_bad_dicom_is_reported_with_its_file_and_the_rest_converted(synthetic_classic: Path, tmp_path: Path) -> None:
    copy = tmp_path / "synth"
    shutil.copytree(synthetic_classic, copy)
    single = next(m for m in load_cbis_ddsm(copy / "csv").mammograms if len(m.image_paths) == 1)
    image_path = single.image_paths[0]
    (copy / "dicom" / image_path).write_bytes(b"not a dicom file at all")
    summary = convert_dataset(copy / "dicom", copy / "csv", tmp_path / "out")
    skipped = [s for s in summary.skipped if s["reason"].endswith("mammogram skipped")]
    assert len(skipped) == 1
    assert image_path.split("/")[0] in skipped[0]["reason"] and "not a DICOM" in skipped[0]["reason"]
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert report["skipped"] == summary.skipped
    assert summary.converted == len(_truth(synthetic_classic)) - 1


def test_no_identifier_reaches_any_output(synthetic_tcia: Path, tmp_path: Path) -> None:
    convert_dataset(synthetic_tcia / "dicom", synthetic_tcia / "csv", tmp_path)
    texts = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    names = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")]
    for value in PLANTED_IDENTIFIERS.values():
        for candidate in (value, value.replace("^", " ")):
            assert not any(candidate.encode() in t for t in texts), candidate
            assert not any(candidate in n for n in names)
    # The TCIA folder names carry a study date; it must not leak either.
    assert not any(b"07-20-2016" in t for t in texts)
    assert all(n.startswith(("images", "records", "annotations", "conversion_report")) for n in names)


def test_synthetic_images_for_real_csv_rows_convert(real_csv_dir: Path, tmp_path: Path) -> None:
    from mammodet.synthetic.cbis import SynthSpec, generate

    synth = generate(
        tmp_path / "synth", SynthSpec(height=256, width=160, layout="tcia"), from_csv_dir=str(real_csv_dir), limit=6
    )
    dataset = load_cbis_ddsm(synth / "csv")
    assert len(dataset.mammograms) == 6
    real = {m.key: m for m in load_cbis_ddsm(real_csv_dir).mammograms}
    for mammogram in dataset.mammograms:  # the real paths, UIDs and abnormalities, synthetic pixels
        assert mammogram.image_paths == real[mammogram.key].image_paths
        assert len(mammogram.abnormalities) == len(real[mammogram.key].abnormalities)
    truth = _truth(synth)
    locator = DicomLocator(synth / "dicom")  # the TCIA layout, matched on the real UIDs' digits
    for mammogram in dataset.mammograms:
        image = read_dicom(locator.full_image(mammogram.image_paths[0]))
        annotations, issues = annotate(mammogram, locator, image.shape)
        assert not issues
        found = sorted((a.abnormality_type, a.abnormality_id, a.box) for a in annotations)
        assert found == sorted(truth[mammogram.key])
