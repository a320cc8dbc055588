"""FasterRCNNModule on tiny images with the small ``frcnn_small``: training, logging, schedule,
non-finite losses, checkpoints, validation metrics, weights loading and prediction."""

from __future__ import annotations

import csv
import math
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor
from torch.utils.data import DataLoader

from mammodet.errors import UserError
from mammodet.models import FasterRCNNModule, weights
from mammodet.models.builders import build_detector
from mammodet.models.drawing import draw_detections
from mammodet.models.optim import lr_factor
from mammodet.models.roi_stats import fast_rcnn_accuracy

SMALL = {"model_name": "frcnn_small", "min_size": 128, "max_size": 160}
TRAIN_KEYS = {
    "train/loss_classifier",
    "train/loss_box_reg",
    "train/loss_objectness",
    "train/loss_rpn_box_reg",
    "train/loss",
    "train/lr",
    "train/fast_rcnn/cls_accuracy",
    "train/fast_rcnn/fg_cls_accuracy",
    "train/data_wait_s",
    "train/step_s",
    "train/nonfinite_skipped",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sample(i: int) -> tuple[Tensor, dict[str, Any]]:
    """A 128x160 image: a bright square lesion on two images out of three, none on the third."""
    image = torch.full((3, 128, 160), 0.1)
    if i % 3 == 2:
        return image, {
            "boxes": torch.zeros((0, 4)),
            "labels": torch.zeros((0,), dtype=torch.int64),
            "image_id": i,
        }
    x0, y0 = 20 + 10 * (i % 3), 30
    image[:, y0 : y0 + 32, x0 : x0 + 32] = 0.9
    box = torch.tensor([[x0, y0, x0 + 32, y0 + 32]], dtype=torch.float32)
    return image, {"boxes": box, "labels": torch.tensor([1 + i % 3]), "image_id": i}


def _collate(samples: list[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    images, targets = zip(*samples, strict=True)
    return list(images), list(targets)


def _loader(n: int = 3, batch_size: int = 3) -> DataLoader:
    return DataLoader([_sample(i) for i in range(n)], batch_size=batch_size, collate_fn=_collate)


def _trainer(**kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
        "gradient_clip_val": 1.0,
    }
    return Trainer(**{**options, **kwargs})


def _csv_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_training_steps_log_finite_losses_and_accuracies(tmp_path: Path) -> None:
    module = FasterRCNNModule(**SMALL, lr=0.01, warmup_steps=2, milestones=[100])
    logger = CSVLogger(tmp_path)
    _trainer(max_steps=3, logger=logger).fit(module, _loader(n=6, batch_size=3))

    rows = _csv_rows(logger)
    assert set(rows[0]) >= TRAIN_KEYS
    losses = [float(row["train/loss"]) for row in rows if row["train/loss"]]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    for key in ("train/fast_rcnn/cls_accuracy", "train/fast_rcnn/fg_cls_accuracy"):
        values = [float(row[key]) for row in rows if row[key]]
        assert values and all(0.0 <= v <= 1.0 for v in values)
    lrs = [float(row["train/lr"]) for row in rows if row["train/lr"]]
    assert lrs == pytest.approx([0.01 * 0.001, 0.01 * 0.5005, 0.01])
    waits = [float(row["train/data_wait_s"]) for row in rows if row["train/data_wait_s"]]
    assert len(waits) == 3 and all(w >= 0 for w in waits)
    assert float(rows[-1]["train/nonfinite_skipped"] or 0) == 0


def test_lr_factor_multistep_with_warmup() -> None:
    schedule = {"warmup_steps": 10, "warmup_factor": 0.001, "milestones": [20, 30], "gamma": 0.1}
    expected = {0: 0.001, 5: 0.5005, 10: 1.0, 19: 1.0, 20: 0.1, 29: 0.1, 30: 0.01, 1000: 0.01}
    for step, factor in expected.items():
        assert lr_factor(step, scheduler="multistep", max_steps=100, **schedule) == pytest.approx(factor)


def test_lr_factor_cosine_with_warmup() -> None:
    schedule = {"warmup_steps": 10, "warmup_factor": 0.001, "milestones": [], "gamma": 0.1}
    expected = {
        0: 0.001,
        5: 0.5005 * 0.5 * (1 + math.cos(math.pi * 5 / 100)),
        10: 0.5 * (1 + math.cos(math.pi * 10 / 100)),
        50: 0.5,
        100: 0.0,
        150: 0.0,
    }
    for step, factor in expected.items():
        assert lr_factor(step, scheduler="cosine", max_steps=100, **schedule) == pytest.approx(factor, abs=1e-12)


def _poison(module: FasterRCNNModule) -> None:
    """Make the classifier loss NaN from the first step."""
    with torch.no_grad():
        module.model.roi_heads.box_predictor.cls_score.bias.fill_(float("nan"))


def test_nonfinite_loss_is_skipped_and_counted(tmp_path: Path) -> None:
    module = FasterRCNNModule(**SMALL, max_nonfinite_in_a_row=10)
    _poison(module)
    before = {name: p.detach().clone() for name, p in module.model.named_parameters()}
    logger = CSVLogger(tmp_path)
    _trainer(max_steps=3, max_epochs=5, logger=logger).fit(module, _loader(n=3, batch_size=3))

    assert module.nonfinite_skipped == 3
    counts = [float(row["train/nonfinite_skipped"]) for row in _csv_rows(logger) if row["train/nonfinite_skipped"]]
    assert counts == [1.0, 2.0, 3.0]
    for name, p in module.model.named_parameters():  # no optimizer step was taken
        assert torch.equal(p, before[name]) or name.endswith("cls_score.bias"), name


def test_nonfinite_losses_in_a_row_raise() -> None:
    module = FasterRCNNModule(**SMALL, max_nonfinite_in_a_row=2)
    _poison(module)
    with pytest.raises(RuntimeError, match="2 non-finite losses in a row"):
        _trainer(max_steps=5, max_epochs=5).fit(module, _loader(n=3, batch_size=3))


def test_local_coco_style_weights_swap_head_and_checkpoint_restores(tmp_path: Path) -> None:
    coco_like = build_detector("frcnn_small", num_classes=91)
    weights_file = tmp_path / "coco_like.pth"
    torch.save(coco_like.state_dict(), weights_file)

    module = FasterRCNNModule(**SMALL, weights=str(weights_file))
    conv1 = module.model.backbone.body.conv1.weight
    assert torch.equal(conv1, coco_like.backbone.body.conv1.weight)
    assert module.model.roi_heads.box_predictor.cls_score.out_features == 4
    assert module.model.roi_heads.box_predictor.bbox_pred.out_features == 16

    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last")
    trainer = _trainer(max_steps=1, enable_checkpointing=True, callbacks=[checkpoints])
    trainer.fit(module, _loader())
    weights_file.unlink()  # restoring must not need the original weights

    path = Path(checkpoints.best_model_path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["load_pretrained"] is False
    assert checkpoint["hyper_parameters"]["weights"] == str(weights_file)

    restored = FasterRCNNModule.load_from_checkpoint(path)
    expected = module.state_dict()
    assert restored.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in restored.state_dict().items())

    from_ckpt_weights = FasterRCNNModule(**SMALL, weights=str(path))
    assert torch.equal(
        from_ckpt_weights.model.roi_heads.box_predictor.cls_score.weight,
        expected["model.roi_heads.box_predictor.cls_score.weight"],
    )


def test_validation_logs_map_keys_and_images(tmp_path: Path) -> None:
    module = FasterRCNNModule(**SMALL, box_score_thresh=0.0, n_log_images=2)
    logger = TensorBoardLogger(tmp_path)
    (metrics,) = _trainer(logger=logger).validate(module, _loader(n=3, batch_size=3))

    assert {"val/map", "val/map_50", "val/map_75", "val/mar_100"} <= set(metrics)
    assert {"val/ap_50/calcification", "val/ap_50/mass_low", "val/ap/calcification"} <= set(metrics)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"val/images/0", "val/images/1"}


def test_coco_weights_offline_raise_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(weights, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"weights=/path/to/fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9\.pth"):
        FasterRCNNModule(arch="fasterrcnn_mobilenet_v3_large_320_fpn", weights="coco")
    with pytest.raises(RuntimeError, match=r"backbone_weights=/path/to/resnet18-"):
        FasterRCNNModule(**SMALL, backbone_weights="imagenet")
    with pytest.raises(UserError, match=r"model\.weights=coco: torchvision has no COCO weights for frcnn_small"):
        FasterRCNNModule(**SMALL, weights="coco")


def test_predict_step_returns_prediction_dicts() -> None:
    module = FasterRCNNModule(**SMALL, box_score_thresh=0.0, box_detections_per_img=5)
    images = DataLoader([_sample(i)[0] for i in range(3)], batch_size=2, collate_fn=list)
    batches = _trainer().predict(module, images)

    predictions = [p for batch in batches for p in batch]
    assert len(predictions) == 3
    for p in predictions:
        assert set(p) == {"boxes", "scores", "labels"}
        assert p["boxes"].shape == (len(p["scores"]), 4) and p["boxes"].dtype == torch.float32
        assert p["labels"].dtype == torch.int64 and bool(((p["labels"] >= 1) & (p["labels"] <= 3)).all())
        assert len(p["scores"]) <= 5
    module.eval()
    with torch.no_grad():
        assert len(module.predict_step(next(iter(_loader())), 0)) == 3  # (images, targets) batches too


def test_recorded_labels_are_the_sampled_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    module = FasterRCNNModule(**SMALL)
    roi_heads = module.model.roi_heads
    sampled: list[Tensor] = []
    select = roi_heads.select_training_samples

    def spy(proposals: list[Tensor], targets: list[dict[str, Tensor]]) -> Any:
        result = select(proposals, targets)
        sampled.extend(result[2])
        return result

    monkeypatch.setattr(roi_heads, "select_training_samples", spy)
    images, targets = next(iter(_loader()))
    module.train()
    module.model(images, targets)
    class_logits, labels = module.train_stats.recorder.sampled_labels()

    assert torch.equal(labels, torch.cat(sampled))
    assert class_logits.shape == (len(labels), 4)
    assert int((labels > 0).sum()) >= 2


def test_fast_rcnn_accuracy_matches_detectron2_definition() -> None:
    logits = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [5.0, 0, 0, 0], [0, 0, 5.0, 0]])
    labels = torch.tensor([0, 1, 2, 3])  # right, right, predicted background, wrong class
    accuracy = fast_rcnn_accuracy(logits, labels)
    assert accuracy["cls_accuracy"] == pytest.approx(0.5)
    assert accuracy["fg_cls_accuracy"] == pytest.approx(1 / 3)
    assert accuracy["false_negative"] == pytest.approx(1 / 3)
    assert set(fast_rcnn_accuracy(logits[:1], labels[:1])) == {"cls_accuracy"}


def test_draw_detections_reads_stored_and_float_images_alike() -> None:
    stored = torch.full((1, 20, 30), 200, dtype=torch.uint8)
    target = {"boxes": torch.tensor([[2.0, 2.0, 12.0, 12.0]]), "labels": torch.tensor([1])}
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    drawn = draw_detections(stored, empty, target)
    assert drawn.shape == (3, 20, 30) and drawn.dtype == torch.uint8
    assert torch.equal(drawn, draw_detections(stored.float() / 255, empty, target))
    assert drawn[:, 15:, 15:].eq(200).all()  # away from the box: the grey level itself, in every channel
    assert not drawn[:, 2, 2:12].eq(200).all()  # the ground-truth box is drawn
