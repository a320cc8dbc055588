"""``python -m mammodet.convert dataset=<name> data.root=DIR``: the records of every dataset through the one
conversion (COCO fields, boxes back to source pixels, ignore regions as crowds, exclusions, resume, no
identifier), and CBIS-DDSM's output byte for byte as before."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mammodet.config import compose
from mammodet.convert import convert_registered
from mammodet.data.conversion import ConvertSettings
from mammodet.errors import UserError
from mammodet.synthetic import inbreast as synth_inbreast
from mammodet.synthetic import mini_mias as synth_mias
from mammodet.synthetic import vindr_mammo as synth_vindr
from mammodet.synthetic.cbis import PLANTED_IDENTIFIERS, SynthSpec, generate

CLASSES = ["calcification", "mass_low", "mass_high"]
GENERATORS = {"vindr_mammo": synth_vindr, "inbreast": synth_inbreast, "mini_mias": synth_mias}


@pytest.fixture(scope="module", params=sorted(GENERATORS))
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """(dataset, synthetic tree, conversion) for each dataset; VinDr resized (max_side 200) to test the mapping."""
    name = request.param
    tree = GENERATORS[name].generate(tmp_path_factory.mktemp(f"{name}_tree"))
    out = tmp_path_factory.mktemp(f"{name}_out")
    overrides = [f"dataset={name}", f"data.root={tree}", f"out_dir={out}"]
    if name == "vindr_mammo":
        overrides.append("data.convert.max_side=200")
    cfg = compose("convert", overrides)
    convert_registered(cfg, ConvertSettings(max_side=cfg.data.convert.max_side), workers=0)
    return name, tree, out


def _coco(out: Path) -> dict[str, dict]:
    return {
        split: json.loads((out / "annotations" / f"{split}.json").read_text()) for split in ("train", "val", "test")
    }


def _check_maps_back(tree: Path, out: Path) -> None:
    """Every COCO box, mapped back by box / scale + (x0, y0), is the generator's box; nothing lost unreported."""
    truth = json.loads((tree / "synth_truth.json").read_text())["images"]
    seen = set()
    for coco in _coco(out).values():
        assert [c["name"] for c in coco["categories"]] == CLASSES
        names = {c["id"]: c["name"] for c in coco["categories"]}
        for image in coco["images"]:
            x0, y0, x1, _ = image["crop_box"]
            scale = image["width"] / (x1 - x0)
            found = []
            for a in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
                bx, by, bw, bh = a["bbox"]
                source = [bx / scale + x0, by / scale + y0, (bx + bw) / scale + x0, (by + bh) / scale + y0]
                found.append((a["finding"], None if a["iscrowd"] else names[a["category_id"]], source))
            expected = []
            for f in truth[image["source_key"]]["findings"]:
                box = np.clip(f["box"], 0, [image["source_width"], image["source_height"]] * 2).tolist()
                expected += (
                    [(f["finding"], None, box)] * len(CLASSES)
                    if f["label"] is None
                    else [(f["finding"], f["label"], box)]
                )
            assert len(found) == len(expected)
            for (finding, label, box), (e_finding, e_label, e_box) in zip(sorted(found), sorted(expected), strict=True):
                assert (finding, label) == (e_finding, e_label)
                assert box == pytest.approx(e_box, rel=1e-9, abs=1e-9)
            seen.add(image["source_key"])
    report = json.loads((out / "conversion_report.json").read_text())
    assert seen | {e["key"] for e in report["excluded"]} == set(truth)
    assert report["skipped"] == []


def test_every_finding_maps_back_to_where_the_generator_put_it(converted: tuple[str, Path, Path]) -> None:
    _check_maps_back(*converted[1:])


def test_coco_images_carry_the_record_fields(converted: tuple[str, Path, Path]) -> None:
    name, _, out = converted
    images = [i for coco in _coco(out).values() for i in coco["images"]]
    for image in images:
        record = json.loads((out / "records" / f"{image['key']}.json").read_text())
        for key in ("patient_id", "laterality", "view", "density", "dataset", "source_key", "pixel_spacing_mm"):
            assert image[key] == record[key]
        assert image["dataset"] == name and image["laterality"] in ("LEFT", "RIGHT") and image["view"] in ("CC", "MLO")
    sources = {i["pixel_spacing_source"] for i in images}
    assert (
        sources
        == {"vindr_mammo": {"dicom", "default"}, "inbreast": {"dicom", "publisher"}, "mini_mias": {"publisher"}}[name]
    )


def test_ignore_regions_are_one_crowd_per_class_with_the_finding(converted: tuple[str, Path, Path]) -> None:
    name, _, out = converted
    crowds = [a for coco in _coco(out).values() for a in coco["annotations"] if a["iscrowd"]]
    by_region: dict[tuple, list[int]] = {}
    for a in crowds:
        by_region.setdefault((a["image_id"], tuple(a["bbox"]), a["finding"]), []).append(a["category_id"])
    assert by_region and all(sorted(ids) == [1, 2, 3] for ids in by_region.values())
    expected = {"vindr_mammo": "Architectural Distortion", "inbreast": "Spiculated Region", "mini_mias": "ARCH"}[name]
    assert {key[2] for key in by_region} == {expected}


def test_no_identifier_reaches_any_output(converted: tuple[str, Path, Path]) -> None:
    _, _, out = converted
    planted = [*PLANTED_IDENTIFIERS.values(), synth_vindr.PLANTED_PATIENT_ID, synth_inbreast.PLANTED_PATIENT_ID]
    planted.append(synth_inbreast.PLANTED_DATE)
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [v for v in planted if v.encode() in data], path
            assert not [v for v in planted if v in path.name]


def test_mias_unlocatable_lesion_excludes_its_image_in_the_report(tmp_path: Path) -> None:
    tree = synth_mias.generate(tmp_path / "tree", n_images=6)
    cfg = compose("convert", ["dataset=mini_mias", f"data.root={tree}", f"out_dir={tmp_path / 'out'}"])
    convert_registered(cfg, ConvertSettings(), workers=0)
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert [(e["key"], e["excluded"]) for e in report["excluded"]] == [
        ("mdb006", "Info.txt line 7: CIRC without coordinates (its lesion cannot be located)")
    ]
    assert sum(report["images_per_split"].values()) == 5 and not (tmp_path / "out" / "images" / "mdb006.jpg").exists()


def test_monochrome1_dicoms_convert_tissue_bright(tmp_path: Path) -> None:
    tree = synth_vindr.generate(tmp_path / "tree", n_studies=1)
    cfg = compose("convert", ["dataset=vindr_mammo", f"data.root={tree}", f"out_dir={tmp_path / 'out'}"])
    convert_registered(cfg, ConvertSettings(crop_breast=False), workers=0)
    truth = json.loads((tree / "synth_truth.json").read_text())["images"]
    assert sum(t["monochrome1"] for t in truth.values()) == 1
    for key, entry in truth.items():
        image = cv2.imread(str(tmp_path / "out" / "images" / f"{key}.jpg"), cv2.IMREAD_GRAYSCALE)
        breast, far = (image[:, :8], image[:, -8:]) if entry["laterality"] == "LEFT" else (image[:, -8:], image[:, :8])
        assert breast.mean() > 60 > 20 > far.mean(), key


def test_second_run_resumes_and_a_changed_class_map_redoes(tmp_path: Path) -> None:
    tree = synth_inbreast.generate(tmp_path / "tree", n_patients=2)
    overrides = ["dataset=inbreast", f"data.root={tree}", f"out_dir={tmp_path / 'out'}"]
    for extra, expected in (([], (4, 0)), ([], (0, 4)), (["dataset.point_roi_side_mm=5.0"], (1, 3))):
        convert_registered(compose("convert", overrides + extra), ConvertSettings(), workers=0)
        report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
        assert (report["converted"], report["resumed"]) == expected


def test_missing_root_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data\.root: not set; dataset=inbreast"):
        convert_registered(compose("convert", ["dataset=inbreast"]), ConvertSettings(), workers=0)
    with pytest.raises(UserError, match=r"INbreast.csv: not found"):
        convert_registered(compose("convert", ["dataset=inbreast", f"data.root={tmp_path}"]), ConvertSettings(), 0)


# The COCO files and images that main (474bc19) writes for this tree, measured with tests' own code run under
# main's checkout: `cd /work/main && python /tmp/i21hash/h.py /tmp/i21hash/main` (the steps of this test: the
# synthetic tree below, `python -m mammodet.convert data.csv_dir=... data.dicom_root=... out_dir=...
# data.convert.workers=0`, SHA-256 over each annotations/ and images/ file's relative path, NUL, bytes).
# The JPEG bytes depend on OpenCV's encoder: scripts/constraints.txt pins it.
CBIS_MAIN_DIGEST = "73dce45293e22a19260b40afb968f2add70e15245ce433efc2bb0c465c156caa"


@pytest.mark.slow
def test_cbis_ddsm_output_is_byte_identical_to_before(tmp_path: Path) -> None:
    synth = generate(tmp_path / "synth", SynthSpec(n_patients=6, height=320, width=200, seed=1))
    command = [
        sys.executable, "-m", "mammodet.convert", f"data.csv_dir={synth / 'csv'}", f"data.dicom_root={synth / 'dicom'}",
        f"out_dir={tmp_path / 'out'}", "data.convert.workers=0",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    digest = hashlib.sha256()
    files = sorted(p for sub in ("annotations", "images") for p in (tmp_path / "out" / sub).iterdir())
    for path in files:
        digest.update(path.relative_to(tmp_path / "out").as_posix().encode() + b"\0" + path.read_bytes())
    assert (len(files), digest.hexdigest()) == (19, CBIS_MAIN_DIGEST)


def test_training_records_hold_the_lesions_not_the_ignore_regions(converted: tuple[str, Path, Path]) -> None:
    from mammodet.data.coco import load_records

    _, _, out = converted
    for split, coco in _coco(out).items():
        lesions = [a for a in coco["annotations"] if not a["iscrowd"]]
        records = load_records(out / "annotations" / f"{split}.json")
        assert sum(len(r.boxes) for r in records) == len(lesions)
        assert sorted(int(v) for r in records for v in r.labels) == sorted(a["category_id"] for a in lesions)


def test_worker_processes_write_the_same_files(tmp_path: Path) -> None:
    tree = synth_mias.generate(tmp_path / "tree", n_images=4)
    for workers in (0, 2):
        cfg = compose("convert", ["dataset=mini_mias", f"data.root={tree}", f"out_dir={tmp_path / str(workers)}"])
        convert_registered(cfg, ConvertSettings(), workers=workers)
    for sub in ("annotations", "images"):
        names = sorted(p.name for p in (tmp_path / "0" / sub).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "2" / sub).iterdir())
        assert all((tmp_path / "0" / sub / n).read_bytes() == (tmp_path / "2" / sub / n).read_bytes() for n in names)


def test_map_scores_ignore_regions_as_crowds(converted: tuple[str, Path, Path]) -> None:
    from mammodet.metrics.coco_io import read_ground_truth
    from mammodet.metrics.map import mean_average_precision

    _, _, out = converted
    _, class_names, targets = read_ground_truth(out / "annotations" / "train.json")
    preds = []
    for target in targets:  # every lesion found at score 0.5, every ignore region "found" at 0.9 for each class
        scores = np.where(target["iscrowd"], 0.9, 0.5)
        preds.append({"boxes": target["boxes"], "labels": target["labels"], "scores": scores})
    assert any(t["iscrowd"].any() for t in targets)
    assert mean_average_precision(preds, targets, class_names)["map_50"] == pytest.approx(1.0)
    dropped = [{k: v[~t["iscrowd"]] for k, v in t.items()} for t in targets]  # ignore regions as background
    assert mean_average_precision(preds, dropped, class_names)["map_50"] < 1.0


def _tree_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for sub in ("annotations", "images") for p in (out / sub).iterdir()}


def test_shards_merge_into_what_one_process_writes(tmp_path: Path) -> None:
    tree = synth_inbreast.generate(tmp_path / "tree", n_patients=4)
    base = ["dataset=inbreast", f"data.root={tree}"]
    convert_registered(compose("convert", [*base, f"out_dir={tmp_path / 'one'}"]), ConvertSettings(), workers=0)
    sharded = tmp_path / "sharded"
    for k in (1, 2, 3):
        cfg = compose("convert", [*base, f"out_dir={sharded}", f"data.convert.shard={k}/3"])
        convert_registered(cfg, ConvertSettings(), workers=0)
    parts = [{p.stem for p in (sharded / "shards" / f"{k}-of-3" / "images").iterdir()} for k in (1, 2, 3)]
    assert [len(p) for p in parts] == [3, 3, 2] and len(set.union(*parts)) == 8
    convert_registered(compose("convert", [*base, f"out_dir={sharded}", "merge=true"]), ConvertSettings(), workers=0)
    assert _tree_bytes(sharded) == _tree_bytes(tmp_path / "one") and not (sharded / "shards").exists()
    report = json.loads((sharded / "conversion_report.json").read_text())
    assert (report["converted"], report["resumed"]) == (0, 8)


def test_bad_shard_and_empty_merge_are_user_errors(tmp_path: Path) -> None:
    tree = synth_mias.generate(tmp_path / "tree", n_images=2)
    base = ["dataset=mini_mias", f"data.root={tree}", f"out_dir={tmp_path / 'out'}"]
    with pytest.raises(UserError, match=r"data\.convert\.shard=4/3: expected K/N with 1 <= K <= N"):
        convert_registered(compose("convert", [*base, "data.convert.shard=4/3"]), ConvertSettings(), workers=0)
    with pytest.raises(UserError, match=r"shards: no shard to merge"):
        convert_registered(compose("convert", [*base, "merge=true"]), ConvertSettings(), workers=0)


@pytest.mark.parametrize(("generator", "name"), [(synth_mias, "mini_mias"), (synth_inbreast, "inbreast")])
def test_pixel_spacing_resamples_every_image_to_one_scale(generator, name: str, tmp_path: Path) -> None:
    tree = generator.generate(tmp_path / "tree", **({"n_images": 2} if name == "mini_mias" else {"n_patients": 2}))
    out = tmp_path / "out"
    cfg = compose("convert", [f"dataset={name}", f"data.root={tree}", f"out_dir={out}", "data.pixel_spacing_mm=0.1"])
    convert_registered(cfg, ConvertSettings(), workers=0)
    _check_maps_back(tree, out)
    for image in (i for coco in _coco(out).values() for i in coco["images"]):
        x0, y0, x1, y1 = image["crop_box"]
        assert image["width"] == round((x1 - x0) * image["pixel_spacing_mm"] / 0.1)
        assert image["height"] == round((y1 - y0) * image["pixel_spacing_mm"] / 0.1)
    assert json.loads((out / "conversion_report.json").read_text())["pixel_spacing_mm"] == 0.1
    with pytest.raises(UserError, match=r"data\.pixel_spacing_mm=-1: must be a positive spacing"):
        convert_registered(
            compose("convert", [*cfg_overrides(name, tree, out), "data.pixel_spacing_mm=-1"]), ConvertSettings(), 0
        )


def cfg_overrides(name: str, tree: Path, out: Path) -> list[str]:
    return [f"dataset={name}", f"data.root={tree}", f"out_dir={out}"]
