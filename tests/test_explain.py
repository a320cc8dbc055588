"""Grad-CAM: one heat map per detected lesion, over the original image, and ``python -m mammodet.explain``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mammodet.config import compose
from mammodet.explain import main as explain_main
from mammodet.serving.explain import explain_file, heat_maps
from mammodet.serving.inference import Detector


@pytest.fixture(scope="module")
def detector(tiny_checkpoint: Path) -> Detector:
    return Detector.from_checkpoint(tiny_checkpoint, "cpu")


def test_heat_maps_lie_in_the_breast_crop(detector: Detector, mammograms: dict[str, Path]) -> None:
    prepared = detector.prepare(mammograms["lesions"])
    detections = detector.run([prepared])[0].select(slice(0, 2))
    maps = heat_maps(detector, prepared, detections)
    assert len(maps) == 2
    x0, y0, x1, y1 = prepared.crop_box
    outside = np.ones((320, 200), bool)
    outside[y0:y1, x0:x1] = False
    for heat in maps:
        assert heat.shape == (320, 200) and heat.dtype == np.float32
        assert heat.min() >= 0 and heat.max() <= 1 and heat[y0:y1, x0:x1].max() > 0.5
        assert not heat[outside].any()
    assert not np.array_equal(maps[0], maps[1])  # each lesion has its own map
    assert all(p.grad is None for p in detector.model.parameters())  # no gradient left behind


def test_one_picture_per_lesion_above_the_threshold(detector: Detector, mammograms: dict[str, Path]) -> None:
    scores = detector.detect(mammograms["clear"]).scores
    pictures, best = explain_file(detector, mammograms["clear"], float(scores[0]), max_lesions=5)  # the best
    assert [p.shape for p in pictures] == [(320, 200, 3)] and pictures[0].dtype == np.uint8
    assert best == float(scores[0])
    assert explain_file(detector, mammograms["clear"], 1.01, max_lesions=5) == ([], float(scores[0]))


def test_explain_command_writes_a_png_per_lesion(
    tiny_checkpoint: Path, mammograms: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = compose(
        "explain",
        [
            f"ckpt_path={tiny_checkpoint}",
            f"input={mammograms['lesions']}",
            f"out_dir={tmp_path}",
            "device=cpu",
            "score_thresh=0",
            "max_lesions=1",
        ],
    )
    explain_main.__wrapped__(cfg)
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["lesions.dcm.lesion1.png"]  # max_lesions
    assert cv2.imread(str(tmp_path / written[0])).shape == (320, 200, 3)
    assert capsys.readouterr().out == "lesions.dcm: 1 lesions explained\n"


def test_explain_says_when_nothing_reached_the_threshold_and_what_to_lower(
    tiny_checkpoint: Path, mammograms: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    options = [f"ckpt_path={tiny_checkpoint}", f"input={mammograms['lesions']}", f"out_dir={tmp_path}", "device=cpu"]
    explain_main.__wrapped__(compose("explain", [*options, "score_thresh=1.01"]))  # exits normally: a result
    lines = capsys.readouterr().out.splitlines()
    assert not list(tmp_path.glob("*.png")) and len(lines) == 2
    assert lines[0].startswith("lesions.dcm: 0 lesions explained; none scored at least score_thresh=1.01 (best ")
    assert lines[1].startswith(f"nothing written to {tmp_path}; none scored at least score_thresh=1.01")
    suggested = lines[1].rsplit("score_thresh=", 1)[1]
    explain_main.__wrapped__(compose("explain", [*options, f"score_thresh={suggested}", "max_lesions=1"]))
    assert [p.name for p in tmp_path.glob("*.png")] == ["lesions.dcm.lesion1.png"]  # the suggestion shows the best


def test_grad_cam_sees_the_padded_tensor_the_model_sees(tmp_path: Path) -> None:
    """Grad-CAM is given the image already padded as the model pads it (value normalising to 0, to a multiple of
    32), so its maps are not stretched from the padded size over the image (the hot crop border of issue 20)."""
    import torch
    from helpers import random_checkpoint

    from mammodet.serving.explain import padded_input

    detector = Detector.from_checkpoint(random_checkpoint(tmp_path / "random.ckpt"), "cpu")
    image = torch.rand(3, 100, 70, generator=torch.Generator().manual_seed(0))
    padded = padded_input(detector.model, image)
    assert padded.shape == (3, 128, 96) and torch.equal(padded[:, :100, :70], image)
    normalised = detector.model.transform.normalize(padded)
    assert torch.equal(normalised[:, 100:], torch.zeros(3, 28, 96)) and not normalised[:, :, 70:].any()
    plain, extended = detector.forward([image])[0], detector.forward([padded])[0]
    # The same features; only boxes reaching into the padding are no longer clipped to the image.
    assert torch.equal(plain["scores"][:4], extended["scores"][:4])
    assert torch.equal(plain["boxes"][:4], extended["boxes"][:4])
