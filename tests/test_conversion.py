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
from mammodet.data.classes import LABEL_NAMES
from mammodet.data.conversion import ConvertSettings, convert_dataset
from mammodet.data.dicom import read_dicom
from mammodet.data.labels import lesion_label
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
    assert all(n.startswith(("images", "records", "annotations", "conversion", ".convert.lock")) for n in names)


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
        annotations, issues, lost = annotate(mammogram, locator, image.shape)
        assert not issues and not lost
        found = sorted((a.abnormality_type, a.abnormality_id, a.box) for a in annotations)
        assert found == sorted(truth[mammogram.key])


def _coco_lesions(out_dir: Path) -> dict[str, tuple[str, int]]:
    """Per COCO image key: its split and number of annotations."""
    found = {}
    for split in ("train", "val", "test"):
        coco = json.loads((out_dir / "annotations" / f"{split}.json").read_text())
        counts = {image["id"]: 0 for image in coco["images"]}
        for ann in coco["annotations"]:
            counts[ann["image_id"]] += 1
        found.update({image["key"]: (split, counts[image["id"]]) for image in coco["images"]})
    return found


def _assert_no_view_lost_a_lesion(csv_dir: Path, out_dir: Path) -> dict[str, tuple[str, int]]:
    """Every view in a COCO file has as many annotations as its CSV rows."""
    rows = {m.key: len(m.abnormalities) for m in load_cbis_ddsm(csv_dir).mammograms}
    found = _coco_lesions(out_dir)
    assert all(count == rows[key] for key, (_, count) in found.items()), found
    return found


@pytest.mark.parametrize("damage", ["deleted", "corrupt", "empty", "wrong size"])
def test_a_view_with_a_lost_lesion_is_excluded_and_reported(synthetic_classic: Path, tmp_path: Path, damage) -> None:
    copy = tmp_path / "synth"
    shutil.copytree(synthetic_classic, copy)
    dataset = load_cbis_ddsm(copy / "csv")
    victim = next(m for m in dataset.mammograms if len(m.abnormalities) >= 2)
    row = victim.abnormalities[0]
    mask = DicomLocator(copy / "dicom").roi_mask(row.crop_path, row.mask_path)
    if damage == "deleted":
        mask.unlink()
    elif damage == "corrupt":
        mask.write_bytes(mask.read_bytes()[:400])
    else:
        from mammodet.data.dicom import read_raw_pixels
        from mammodet.synthetic.dicom_write import write_dicom

        pixels = np.zeros_like(read_raw_pixels(mask))
        if damage == "wrong size":  # another aspect ratio than the mammogram's: the box cannot be placed
            pixels = np.zeros((pixels.shape[0] // 3, pixels.shape[1]), pixels.dtype)
            pixels[10:20, 10:20] = 255
        write_dicom(mask, pixels)
    summary = convert_dataset(copy / "dicom", copy / "csv", tmp_path / "out")
    found = _assert_no_view_lost_a_lesion(copy / "csv", tmp_path / "out")
    assert victim.key not in found and len(found) == len(dataset.mammograms) - 1
    assert not (tmp_path / "out" / "images" / f"{victim.key}.jpg").exists()
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert [e["key"] for e in report["excluded"]] == [victim.key] == [e["key"] for e in summary.excluded]
    entry = report["excluded"][0]
    assert entry["lesions_lost"] == {LABEL_NAMES[lesion_label(row)]: 1}
    assert sum(entry["lesions_dropped"].values()) == len(victim.abnormalities)
    assert "1 of" in entry["excluded"] and "left out of the COCO files" in entry["excluded"]
    assert sum(report["lesions_lost"].values()) == 1
    assert any(s["key"] == victim.key and s["reason"].endswith("lesion lost") for s in report["skipped"])


def test_a_partial_download_keeps_every_patients_split(synthetic_tcia: Path, tmp_path: Path) -> None:
    full = convert_dataset(synthetic_tcia / "dicom", synthetic_tcia / "csv", tmp_path / "full")
    partial_dicom = tmp_path / "partial"
    shutil.copytree(synthetic_tcia / "dicom", partial_dicom)
    full_images = sorted(p for p in partial_dicom.iterdir() if p.name.endswith(("_CC", "_MLO")))
    for subject in full_images[::2]:  # half the full mammograms never downloaded
        shutil.rmtree(subject)
    partial = convert_dataset(partial_dicom, synthetic_tcia / "csv", tmp_path / "part")
    before, after = _coco_lesions(tmp_path / "full"), _coco_lesions(tmp_path / "part")
    assert 0 < len(after) < len(before) and partial.converted < full.converted
    assert after == {key: before[key] for key in after}


def test_a_four_patient_tree_converts(tmp_path: Path) -> None:
    from conftest import make_synthetic

    synth = make_synthetic(tmp_path / "synth", n_patients=4, seed=5)
    summary = convert_dataset(synth / "dicom", synth / "csv", tmp_path / "out")
    assert sum(summary.images_per_split.values()) == summary.converted > 0
    _assert_no_view_lost_a_lesion(synth / "csv", tmp_path / "out")


def test_resume_reconverts_a_truncated_image(synthetic_classic: Path, tmp_path: Path) -> None:
    first = convert_dataset(synthetic_classic / "dicom", synthetic_classic / "csv", tmp_path)
    image = sorted((tmp_path / "images").glob("*.jpg"))[0]
    intact = image.read_bytes()
    record = json.loads((tmp_path / "records" / f"{image.stem}.json").read_text())
    assert record["image_bytes"] == len(intact) and len(record["image_sha256"]) == 64
    image.write_bytes(intact[: len(intact) // 2])  # a crash or a full disk mid-copy
    second = convert_dataset(synthetic_classic / "dicom", synthetic_classic / "csv", tmp_path)
    assert (second.converted, second.resumed) == (1, first.converted - 1)
    assert image.read_bytes() == intact


def test_a_second_converter_on_the_same_out_dir_is_stopped(synthetic_classic: Path, tmp_path: Path) -> None:
    import os

    from mammodet.data.conversion import ConvertLockError, out_dir_lock

    with out_dir_lock(tmp_path), pytest.raises(ConvertLockError, match=f"another conversion \\(pid {os.getpid()}\\)"):
        convert_dataset(synthetic_classic / "dicom", synthetic_classic / "csv", tmp_path)
    assert not (tmp_path / "annotations").exists()
    convert_dataset(synthetic_classic / "dicom", synthetic_classic / "csv", tmp_path)  # released: converts
    assert not list(tmp_path.rglob("*.tmp"))


def test_pool_workers_exit_when_the_converter_is_killed(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from mammodet.data.conversion import exit_with_parent\n"
        "pool = ProcessPoolExecutor(2, initializer=exit_with_parent, initargs=(os.getpid(), 0.1))\n"
        "pids = set(pool.submit(os.getpid).result() for _ in range(8))\n"
        "print(' '.join(map(str, sorted(pids))), flush=True)\n"
        "pool.submit(time.sleep, 60)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert workers
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        alive = workers
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in workers if Path(f"/proc/{pid}").exists() and _not_zombie(pid)]
        assert not alive, f"orphaned workers {alive}"
    finally:
        parent.kill()


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_dicom_declaring_too_many_pixels_is_skipped_before_decoding(synthetic_classic: Path, tmp_path: Path) -> None:
    from helpers import huge_rle_header

    copy = tmp_path / "synth"
    shutil.copytree(synthetic_classic, copy)
    single = next(m for m in load_cbis_ddsm(copy / "csv").mammograms if len(m.image_paths) == 1)
    shutil.copy(huge_rle_header(tmp_path), copy / "dicom" / single.image_paths[0])  # 60000 x 60000 in a few KB
    summary = convert_dataset(copy / "dicom", copy / "csv", tmp_path / "out")
    skipped = [s for s in summary.skipped if s["reason"].endswith("mammogram skipped")]
    assert [s["key"] for s in skipped] == [single.key]
    assert "60000 x 60000 = 3600000000 pixels, more than the limit of 50000000" in skipped[0]["reason"]


def _rewrite_csvs(csv_dir: Path, out: Path, change=None, extra: int = 0) -> Path:
    """``out`` holding the CSVs of ``csv_dir`` with ``change(row)`` applied to every row, and the first row
    written ``extra`` more times (exact duplicates)."""
    from mammodet.synthetic.cbis import write_csvs

    rows = load_cbis_ddsm(csv_dir).rows
    rows = [change(row) if change else row for row in rows] + [rows[0]] * extra
    write_csvs(rows, out)
    return out


def _coco_labels(out_dir: Path) -> dict[tuple[str, str, int], int]:
    """Per (key, abnormality type, abnormality id): the COCO category id."""
    labels = {}
    for split in ("train", "val", "test"):
        coco = json.loads((out_dir / "annotations" / f"{split}.json").read_text())
        keys = {image["id"]: image["key"] for image in coco["images"]}
        for ann in coco["annotations"]:
            labels[(keys[ann["image_id"]], ann["abnormality_type"], ann["abnormality_id"])] = ann["category_id"]
    return labels


def test_an_edited_csv_row_is_redone_with_its_new_class_and_the_rest_resumed(
    synthetic_classic: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    dicom, out = synthetic_classic / "dicom", tmp_path / "out"
    first = convert_dataset(dicom, synthetic_classic / "csv", out)
    victim = next(r for r in load_cbis_ddsm(synthetic_classic / "csv").rows if r.assessment in (2, 3, 4, 5))
    key = f"{victim.patient_id}_{victim.side}_{victim.view}"
    new_assessment = 5 if victim.assessment < 4 else 2  # mass_low <-> mass_high under birads4
    csv = _rewrite_csvs(
        synthetic_classic / "csv",
        tmp_path / "csv",
        lambda r: replace(r, assessment=new_assessment) if r == victim else r,
    )
    before = _coco_labels(out)[(key, victim.abnormality_type, victim.abnormality_id)]
    second = convert_dataset(dicom, csv, out)
    reason = "its CSV rows changed (or it was made by an older mammodet)"
    assert second.redone == [{"key": key, "reason": reason}]
    assert (second.converted, second.resumed) == (1, first.converted - 1)
    after = _coco_labels(out)[(key, victim.abnormality_type, victim.abnormality_id)]
    assert after == lesion_label(replace(victim, assessment=new_assessment)) != before
    assert json.loads((out / "conversion_report.json").read_text())["redone"] == [{"key": key, "reason": reason}]


def test_a_replaced_roi_mask_is_redone(synthetic_classic: Path, tmp_path: Path) -> None:
    import pydicom
    from pydicom.uid import RLELossless

    from mammodet.data.dicom import read_raw_pixels
    from mammodet.synthetic.dicom_write import write_dicom

    copy = tmp_path / "synth"
    shutil.copytree(synthetic_classic, copy)
    first = convert_dataset(copy / "dicom", copy / "csv", tmp_path / "out")
    victim = load_cbis_ddsm(copy / "csv").mammograms[0]
    row = victim.abnormalities[0]
    mask = DicomLocator(copy / "dicom").roi_mask(row.crop_path, row.mask_path)
    pixels = read_raw_pixels(mask)
    assert pydicom.dcmread(mask).file_meta.TransferSyntaxUID != RLELossless
    write_dicom(mask, pixels, transfer_syntax=RLELossless)  # the same mask, downloaded again in another form
    second = convert_dataset(copy / "dicom", copy / "csv", tmp_path / "out")
    assert second.redone == [
        {"key": victim.key, "reason": "a DICOM file or ROI mask it was made from changed or is missing"}
    ]
    assert (second.converted, second.resumed) == (1, first.converted - 1)


def test_a_dicom_of_two_undeclared_frames_is_reported_and_the_rest_converted(
    synthetic_classic: Path, tmp_path: Path
) -> None:
    from mammodet.data.dicom import read_raw_pixels
    from mammodet.synthetic.dicom_write import write_dicom

    copy = tmp_path / "synth"
    shutil.copytree(synthetic_classic, copy)
    single = next(m for m in load_cbis_ddsm(copy / "csv").mammograms if len(m.image_paths) == 1)
    path = copy / "dicom" / single.image_paths[0]
    pixels = read_raw_pixels(path)
    write_dicom(path, np.concatenate([pixels, pixels]), extra={"Rows": pixels.shape[0]})  # 2 frames, no NumberOfFrames
    summary = convert_dataset(copy / "dicom", copy / "csv", tmp_path / "out")
    skipped = [s for s in summary.skipped if s["reason"].endswith("mammogram skipped")]
    assert [s["key"] for s in skipped] == [single.key]
    assert skipped[0]["reason"] == (
        f"{path}: pixel data holds 2 frames but NumberOfFrames is 1 or absent; only single frames; mammogram skipped"
    )
    assert summary.converted == len(_truth(synthetic_classic)) - 1
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert report["skipped"] == summary.skipped
    assert single.key not in _coco_lesions(tmp_path / "out")


def test_duplicated_csv_rows_are_dropped_and_counted(synthetic_classic: Path, tmp_path: Path) -> None:
    dicom = synthetic_classic / "dicom"
    convert_dataset(dicom, synthetic_classic / "csv", tmp_path / "plain")
    csv = _rewrite_csvs(synthetic_classic / "csv", tmp_path / "csv", extra=2)
    summary = convert_dataset(dicom, csv, tmp_path / "dup")
    report = json.loads((tmp_path / "dup" / "conversion_report.json").read_text())
    assert summary.duplicate_rows == report["duplicate_rows"] == 2
    assert sum(s["reason"].startswith("duplicate of ") for s in report["skipped"]) == 2
    for split in ("train", "val", "test"):  # the same ground truth as without the copies
        name = f"annotations/{split}.json"
        assert (tmp_path / "dup" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()


@pytest.mark.parametrize("case", ["empty root", "missing root", "parent of CBIS-DDSM", "missing csv", "empty csv"])
def test_a_wrong_folder_is_refused_before_anything_is_written(synthetic_classic: Path, tmp_path: Path, case) -> None:
    from mammodet.errors import UserError

    dicom, csv, out = synthetic_classic / "dicom", synthetic_classic / "csv", tmp_path / "out"
    views = len(load_cbis_ddsm(csv).mammograms)
    expected = {
        "empty root": f"data.dicom_root={tmp_path / 'empty'} holds none of the {views} DICOM files that the CSVs name",
        "missing root": f"data.dicom_root={tmp_path / 'nope'} does not exist",
        "parent of CBIS-DDSM": f"did you mean data.dicom_root={tmp_path / 'parent' / 'CBIS-DDSM'}?",
        "missing csv": f"data.csv_dir={tmp_path / 'nope'} does not exist",
        "empty csv": f"{tmp_path / 'empty'}: none of ",
    }[case]
    (tmp_path / "empty").mkdir()
    if case == "parent of CBIS-DDSM":
        shutil.copytree(dicom, tmp_path / "parent" / "CBIS-DDSM")
    dicom = {"empty root": tmp_path / "empty", "missing root": tmp_path / "nope"}.get(case, dicom)
    dicom = tmp_path / "parent" if case == "parent of CBIS-DDSM" else dicom
    csv = {"missing csv": tmp_path / "nope", "empty csv": tmp_path / "empty"}.get(case, csv)
    with pytest.raises(UserError) as info:
        convert_dataset(dicom, csv, out)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()


def test_a_full_disk_stops_the_conversion_keeps_what_was_done_and_resumes(
    synthetic_classic: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    dicom, csv = synthetic_classic / "dicom", synthetic_classic / "csv"
    reference = convert_dataset(dicom, csv, tmp_path / "reference")
    sizes = sorted(p.stat().st_size for p in (tmp_path / "reference" / "images").iterdir())
    records = max(p.stat().st_size for p in (tmp_path / "reference" / "records").iterdir())
    limit = sizes[len(sizes) // 2]  # half the images do not fit, every record does
    assert records < limit < sizes[-1]
    out = tmp_path / "out"
    script = (
        "import resource, sys\n"
        "from mammodet.data.conversion import convert_dataset\n"
        "from mammodet.errors import UserError\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "try:\n"
        f"    convert_dataset({str(dicom)!r}, {str(csv)!r}, {str(out)!r}, workers=2)\n"
        "except UserError as error:\n"
        "    sys.exit(f'error: {error}')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1 and last.startswith(f"error: {out / 'images'}/") and "Traceback" not in run.stderr
    assert last.endswith(
        ": cannot write (File too large); what was converted is kept: make room (or raise the limit) "
        "and run the conversion again, it resumes"
    )
    assert not list(out.rglob("*.tmp"))
    assert not (out / "annotations").exists() and not (out / "conversion.json").exists()
    done = len(list((out / "records").glob("*.json")))
    assert 0 < done < reference.converted
    resumed = convert_dataset(dicom, csv, out)
    assert (resumed.resumed, resumed.converted) == (done, reference.converted - done)
    for name in ("annotations/train.json", "annotations/val.json", "annotations/test.json", "conversion.json"):
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


def test_training_reconverts_a_conversion_made_with_other_settings(synthetic_classic: Path, tmp_path: Path) -> None:
    from mammodet.data.conversion import ConvertSettings, conversion_fingerprint
    from mammodet.data.splits import assign_splits
    from mammodet.errors import UserError
    from mammodet.training.datamodule import DetectionDataModule

    dicom, csv, conv = synthetic_classic / "dicom", synthetic_classic / "csv", tmp_path / "conv"

    def module(with_sources: bool = True, **options) -> DetectionDataModule:
        sources = {"csv_dir": str(csv), "dicom_root": str(dicom)} if with_sources else {}
        return DetectionDataModule(image_dir=str(conv), num_workers=0, **sources, **options)

    module().prepare_data()  # a demo-like conversion: birads4, official splits
    dataset = load_cbis_ddsm(csv)
    assert json.loads((conv / "conversion.json").read_text()) == conversion_fingerprint(ConvertSettings(), {}, csv)
    assert module(with_sources=False).stale_conversion() == []
    split = {"mode": "random_701515", "seed": 0}
    asked = {"mass_rule": "pathology", "split": split}
    with pytest.raises(UserError) as info:  # nothing to convert from: refused, naming what differs
        module(with_sources=False, **asked).prepare_data()
    assert str(info.value).startswith(
        f"data.image_dir={conv} was converted with other data.mass_rule, data.split.mode than this run asks for"
    )
    module(**asked).prepare_data()
    rows = {(r.patient_id, r.side, r.view, r.abnormality_type, r.abnormality_id): r for r in dataset.rows}
    labels = _coco_labels(conv)
    assert labels and all(
        label == lesion_label(rows[(*key.rsplit("_", 2), kind, number)], "pathology")
        for (key, kind, number), label in labels.items()
    )
    expected = assign_splits(dataset, "pathology", **split).assignment
    assert {key: split for key, (split, _) in _coco_lesions(conv).items()} == {
        k: expected[k] for k in _coco_lesions(conv)
    }
    assert module(with_sources=False, **asked).stale_conversion() == []
    assert module(**asked).stale_conversion() == []
    (conv / "conversion.json").unlink()  # an older or unfinished conversion: unknown settings
    assert module(**asked).stale_conversion() is None
    module(**asked).prepare_data()  # converted again (all resumed), so its settings are known again
    assert module(with_sources=False, **asked).stale_conversion() == []
    assert json.loads((conv / "conversion_report.json").read_text())["converted"] == 0
