"""The inference path and ``python -m mammodet.predict``: validation preprocessing, original-pixel boxes, formats,
bad files, outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import BAD_CASES, bad_file
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mammodet import __version__
from mammodet.config import compose
from mammodet.data.detection_dataset import model_input
from mammodet.data.dicom import read_dicom
from mammodet.data.layout import DicomLocator
from mammodet.data.preprocess import breast_box
from mammodet.predict import main as predict_main
from mammodet.serving.inference import (
    Detector,
    InputError,
    Preprocessing,
    file_sha256,
    load_image,
    model_resize,
)
from mammodet.serving.predict import CSV_COLUMNS, predict_files
from mammodet.training.datamodule import DetectionDataModule


@pytest.fixture(scope="module")
def detector(tiny_checkpoint: Path) -> Detector:
    return Detector.from_checkpoint(tiny_checkpoint, "cpu")


def test_checkpoint_gives_version_and_preprocessing(detector: Detector, tiny_checkpoint: Path) -> None:
    sha = file_sha256(tiny_checkpoint)
    assert detector.version == f"{__version__}+{sha[:12]}" and detector.sha256 == sha
    # tiny_overrides: data.max_side=160, conversion without max_side, breast crop, DICOM gamma 0.8
    assert detector.preprocessing == Preprocessing(gamma=0.8, crop_breast=True, max_side=160)
    info = detector.info()
    assert info["classes"] == ["calcification", "mass_low", "mass_high"]
    assert info["thresholds"] == {"min_score": 0.01, "nms_iou": 0.5, "max_detections": 100, "display_score": 0.3}
    assert set(info["preprocessing"]) == {"gamma", "crop_breast", "max_side", "model_resize", "image_mean", "image_std"}


def test_model_resize_is_reported_only_when_the_model_resizes() -> None:
    class Model(torch.nn.Module):
        def __init__(self, transform: torch.nn.Module) -> None:
            super().__init__()
            self.transform = transform

    class NoResize(GeneralizedRCNNTransform):
        def resize(self, image, target=None):
            return image, target

    args = (96, 160, [0.5] * 3, [0.25] * 3)
    assert model_resize(Model(GeneralizedRCNNTransform(*args))) == {"min_size": [96], "max_size": 160}
    assert model_resize(Model(NoResize(*args))) is None


def test_preprocessing_from_datamodule_settings() -> None:
    hparams = {"max_side": 1333, "image_gamma": 0.5, "convert": {"crop_breast": False, "max_side": 900}}
    assert Preprocessing.from_datamodule(hparams) == Preprocessing(gamma=0.5, crop_breast=False, max_side=900)
    defaults = {"max_side": None, "image_gamma": 0.8, "convert": {}}  # conversion settings unset: ConvertSettings'
    assert Preprocessing.from_datamodule(defaults) == Preprocessing(gamma=0.8, crop_breast=True, max_side=None)


def test_model_input_is_the_validation_image(detector: Detector, tiny_checkpoint: Path) -> None:
    """Where the conversion's crop (grown to cover the lesions) is the breast box, the input is bit-identical."""
    hparams = torch.load(tiny_checkpoint, weights_only=True)["datamodule_hyper_parameters"]
    datamodule = DetectionDataModule(**{**hparams, "source": "dicom"})
    datamodule.setup()
    dataset = datamodule.eval_dataset("val")
    locator = DicomLocator(hparams["dicom_root"])
    compared = 0
    for index, record in enumerate(dataset.records):
        path = locator.full_image(record.image_file_path)
        if tuple(record.crop_box) != breast_box(read_dicom(path, out_dtype="float32", gamma=0.8)):
            continue
        expected, _ = dataset[index]
        assert torch.equal(detector.prepare(path).tensor, model_input(expected))
        compared += 1
    assert compared == 4  # every validation mammogram of the synthetic fixture


def fixed_forward(box: list[float]):
    """A runtime that finds one lesion at ``box`` (model-input pixels) in every image."""

    def forward(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        one = {"boxes": torch.tensor([box]), "scores": torch.tensor([0.9]), "labels": torch.tensor([3])}
        return [dict(one) for _ in images]

    return forward


def test_boxes_come_back_in_original_pixels(detector: Detector, mammograms: dict[str, Path]) -> None:
    prepared = detector.prepare(mammograms["lesions"])
    _, h, w = prepared.tensor.shape
    detections = detector.run([prepared], fixed_forward([0.0, 0.0, float(w), float(h)]))[0]
    crop = breast_box(prepared.image)
    assert (detections.width, detections.height) == (200, 320)
    np.testing.assert_allclose(detections.boxes, [crop], atol=1e-9)  # the whole input is the breast crop
    assert detections.as_list() == [{"label": "mass_high", "score": 0.9, "box": [float(v) for v in crop]}]


def test_png_and_jpeg_inputs(detector: Detector, mammograms: dict[str, Path], tmp_path: Path) -> None:
    pixels = read_dicom(mammograms["lesions"], out_dtype="uint16", gamma=0.8)
    png16 = tmp_path / "image16.png"
    cv2.imwrite(str(png16), pixels)
    np.testing.assert_array_equal(load_image(png16, 0.8), pixels.astype(np.float32) / 65535)
    jpeg = tmp_path / "colour.jpg"
    eight = np.rint(pixels / 257).astype(np.uint8)
    cv2.imwrite(str(jpeg), cv2.merge([eight, eight, eight]), [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert np.abs(load_image(jpeg, 0.8) - eight / 255).max() <= 2 / 255  # colour JPEG read as grayscale
    for path in (png16, jpeg, mammograms["lesions"]):
        detections = detector.detect(path)
        assert (detections.width, detections.height) == (200, 320) and len(detections.scores) > 0


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_raise_input_error_naming_the_file(
    case: str, detector: Detector, mammograms: dict[str, Path], tmp_path: Path
) -> None:
    path = bad_file(case, mammograms["lesions"], tmp_path)
    with pytest.raises(InputError) as info:
        detector.detect(path)
    kind, reason = BAD_CASES[case]
    assert (info.value.kind, info.value.reason, str(info.value)) == (kind, reason, f"{path}: {reason}")
    assert "SECRET" not in str(info.value)


def test_too_many_pixels_refused_before_decoding(mammograms: dict[str, Path], tmp_path: Path) -> None:
    png = tmp_path / "big.png"
    cv2.imwrite(str(png), np.zeros((100, 60), np.uint8))
    for path, size in ((mammograms["lesions"], "200 x 320 = 64000"), (png, "60 x 100 = 6000")):
        with pytest.raises(InputError) as info:
            load_image(path, 0.8, max_pixels=5999)
        assert info.value.kind == "too_large"
        assert info.value.reason == f"{size} pixels, more than the limit of 5999"


def test_predict_folder_writes_json_png_and_summary(
    detector: Detector, mammograms: dict[str, Path], tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "sub" / "a.dcm").write_bytes(mammograms["lesions"].read_bytes())
    (inputs / "b.dcm").write_bytes(mammograms["clear"].read_bytes())
    (inputs / "notes.txt").write_text("not an input: wrong suffix")
    bad_file("empty", mammograms["lesions"], inputs)
    summary = predict_files(detector, inputs, tmp_path / "out", batch_size=2)
    assert summary.done == 2 and summary.failed == [("empty.dcm", "empty file")]
    report = json.loads((tmp_path / "out" / "sub" / "a.dcm.json").read_text())
    expected = detector.report(detector.detect(mammograms["lesions"]))
    assert report["image"] == {"file": "sub/a.dcm", "width": 200, "height": 320}
    assert (
        report["model"] == expected["model"] == {"name": "mammodet", "version": detector.version, "arch": "frcnn_small"}
    )
    assert report["detections"] == expected["detections"]  # batched like validation, same boxes
    drawn = cv2.imread(str(tmp_path / "out" / "sub" / "a.dcm.png"))
    assert drawn.shape == (320, 200, 3)
    with (tmp_path / "out" / "summary.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row["file"] for row in rows] == ["b.dcm", "empty.dcm", "sub/a.dcm"]
    assert rows[1]["error"] == "empty file" and rows[1]["width"] == ""
    scores = [d["score"] for d in report["detections"]]
    assert int(rows[2]["detections"]) == len(scores)
    shown = detector.detect(mammograms["lesions"]).above(detector.score_thresh)  # unrounded scores, as predict counts
    assert (
        int(rows[2]["above_thresh"])
        == len(shown.scores)
        == sum(int(rows[2][name]) for name in ("calcification", "mass_low", "mass_high"))
    )


def test_predict_warns_about_roi_masks_and_lesion_crops(
    detector: Detector, mammograms: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "mammogram.dcm").write_bytes(mammograms["lesions"].read_bytes())
    mask = np.zeros((320, 200), np.uint8)
    mask[100:140, 60:110] = 255
    cv2.imwrite(str(inputs / "mask.png"), mask)
    pixels = read_dicom(mammograms["lesions"], out_dtype="uint8", gamma=0.8)
    cv2.imwrite(str(inputs / "crop.png"), pixels[150:193, 80:124])  # 44 x 43, as in issue 13
    with caplog.at_level("WARNING", logger="mammodet.serving.predict"):
        summary = predict_files(detector, inputs, tmp_path / "out")
    assert summary.done == 3 and not summary.failed  # predicted anyway
    assert sorted(r.getMessage() for r in caplog.records) == [
        "crop.png is 44 x 43 pixels, too small for a whole mammogram (a lesion crop?); predicting anyway",
        "mask.png looks like an ROI mask (only black and one other value), not a mammogram; predicting anyway",
    ]


def test_predict_command(
    tiny_checkpoint: Path, mammograms: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "clear.dcm").write_bytes(mammograms["clear"].read_bytes())
    bad_file("not an image", mammograms["lesions"], inputs)
    overrides = [f"ckpt_path={tiny_checkpoint}", f"input={inputs}", f"out_dir={tmp_path / 'out'}", "batch_size=2"]
    with pytest.raises(SystemExit, match=r"^1 of 2 files could not be read$"):
        predict_main.__wrapped__(compose("predict", [*overrides, "device=cpu"]))
    assert (tmp_path / "out" / "clear.dcm.json").is_file() and (tmp_path / "out" / "clear.dcm.png").is_file()
    printed = capsys.readouterr().out
    assert "failed: not_an_image.dcm: not a DICOM, PNG or JPEG file (judged by its content)" in printed
