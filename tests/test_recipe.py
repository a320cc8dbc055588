"""The frcnn_a100 recipe: one pixel scale, COCO weights (local file, offline error), its config, and a training
path that logs at the logging interval only, skips non-finite steps on the device and applies its options."""

from __future__ import annotations

import csv
import math
import urllib.error
from collections import Counter
from pathlib import Path
from typing import Any

import hydra
import pytest
import torch
from lightning import Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor
from torch.utils.data import DataLoader

from mammodet.config import compose
from mammodet.data.coco import load_records
from mammodet.data.detection_dataset import CropDataset, WholeImageDataset, collate
from mammodet.data.sources import FileSource, whole_size
from mammodet.models import FasterRCNNModule, weights

SMALL = {"model_name": "frcnn_small"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ pixel scale


def test_a_lesion_has_the_same_pixel_size_in_a_training_crop_and_in_the_evaluated_image(converted_png16: Path) -> None:
    max_side = 160
    records = load_records(converted_png16 / "annotations" / "train.json")
    record = next(r for r in records if len(r.boxes) == 1 and max(r.width, r.height) > max_side)
    source = FileSource(converted_png16)
    evaluated_image, evaluated = WholeImageDataset([record], source, max_side)[0]
    (ex0, ey0, ex1, ey1) = evaluated["boxes"][0].tolist()
    assert evaluated_image.shape[1:] == whole_size(record.width, record.height, max_side)[::-1]

    options = {"crop_size": 96, "samples_per_epoch": 8, "positive_fraction": 1.0, "min_visibility": 1.0}
    same_scale = CropDataset([record], source, scale=None, max_side=max_side, **options)
    torch.manual_seed(0)
    for index in range(len(same_scale)):
        crop, target = same_scale[index]
        assert len(target["boxes"]) == 1
        x0, y0, x1, y1 = target["boxes"][0].tolist()
        assert (x1 - x0, y1 - y0) == pytest.approx((ex1 - ex0, ey1 - ey0), abs=1e-4)
        # The crop is a window of the evaluated image itself: same pixels at the lesion's offset.
        dx, dy = round(ex0 - x0), round(ey0 - y0)
        window = evaluated_image[:, max(dy, 0) : dy + 96, max(dx, 0) : dx + 96]
        inside = crop[:, max(-dy, 0) : max(-dy, 0) + window.shape[1], max(-dx, 0) : max(-dx, 0) + window.shape[2]]
        assert torch.equal(inside, window)

    # The old default, crops at the converted resolution, saw the lesion 1/scale times larger.
    full = CropDataset([record], source, scale=1.0, **options)
    _, target = full[0]
    scale = max_side / max(record.width, record.height)
    x0, y0, x1, y1 = target["boxes"][0].tolist()
    assert (x1 - x0) * scale == pytest.approx(ex1 - ex0, rel=0.02)


# ------------------------------------------------------------------------------------------------ the config


def test_recipe_config_is_coco_cache_and_validates_every_n_steps(tmp_path: Path) -> None:
    cfg = compose("train", ["experiment=frcnn_a100", f"paths.output_dir={tmp_path}"])
    assert cfg.model.weights == "coco" and cfg.model.model_name == "frcnn_r50"
    assert cfg.data.source == "cache" and cfg.data.crop_scale is None and cfg.data.max_side == 2048
    assert cfg.trainer.val_check_interval == 1000 and cfg.trainer.check_val_every_n_epoch is None
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.benchmark is True
    assert cfg.model.size_divisible == 256 and cfg.model.channels_last is True
    assert not cfg.synthesize  # the recipe is for real data


# ------------------------------------------------------------------------------------------------ weights


def test_recipe_loads_a_local_torchvision_coco_state_dict(tmp_path: Path) -> None:
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    coco_like = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    weights_file = tmp_path / "fasterrcnn_resnet50_fpn_coco.pth"
    torch.save(coco_like.state_dict(), weights_file)
    cfg = compose("train", ["experiment=frcnn_a100", f"paths.output_dir={tmp_path}", f"model.weights={weights_file}"])
    module: FasterRCNNModule = hydra.utils.instantiate(cfg.model)

    state = coco_like.state_dict()
    for key in ("backbone.body.conv1.weight", "backbone.fpn.layer_blocks.0.0.weight", "rpn.head.conv.0.0.weight"):
        assert torch.equal(module.model.state_dict()[key], state[key]), key
    assert module.model.roi_heads.box_predictor.cls_score.out_features == 4  # COCO's 91 swapped for 4


def test_recipe_coco_weights_offline_say_how_to_pass_a_file_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(weights, "load_state_dict_from_url", offline)
    cfg = compose("train", ["experiment=frcnn_a100", f"paths.output_dir={tmp_path}"])
    with pytest.raises(hydra.errors.InstantiationException) as error:  # Hydra wraps the module's RuntimeError
        hydra.utils.instantiate(cfg.model)
    message = str(error.value)
    assert "model.weights=/path/to/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in message
    assert "model.weights=none" in message


# ------------------------------------------------------------------------------------------------ training path


def _sample(i: int) -> tuple[Tensor, dict[str, Any]]:
    """A 96x128 uint8 image with one bright square lesion."""
    image = torch.full((1, 96, 128), 25, dtype=torch.uint8)
    x0 = 20 + 10 * (i % 3)
    image[:, 30:62, x0 : x0 + 32] = 230
    box = torch.tensor([[x0, 30, x0 + 32, 62]], dtype=torch.float32)
    return image, {"boxes": box, "labels": torch.tensor([1 + i % 3]), "image_id": i}


def _loader(n: int = 2) -> DataLoader:
    return DataLoader([_sample(i) for i in range(n)], batch_size=2, collate_fn=collate)


def _fit(module: FasterRCNNModule, tmp_path: Path, **kwargs: Any) -> list[dict[str, str]]:
    logger = CSVLogger(tmp_path)
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": logger,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "gradient_clip_val": 1.0,
    }
    Trainer(**{**options, **kwargs}).fit(module, _loader())
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_training_logs_only_at_the_logging_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = FasterRCNNModule(**SMALL, warmup_steps=1, milestones=[100])
    assigned: list[int] = []
    original = module.train_stats.recorder.roi_heads.assign_targets_to_proposals
    monkeypatch.setattr(
        module.train_stats.recorder.roi_heads,
        "assign_targets_to_proposals",
        lambda *args: assigned.append(module.global_step) or original(*args),
    )
    rows = _fit(module, tmp_path, max_steps=6, max_epochs=6, log_every_n_steps=3)

    logged = [row for row in rows if row.get("train/loss")]
    assert [int(row["step"]) for row in logged] == [2, 5]  # steps 3 and 6 (0-based 2 and 5)
    for row in logged:
        assert math.isfinite(float(row["train/loss"])) and float(row["train/step_s"]) > 0
        assert float(row["train/data_wait_s"]) >= 0 and float(row["train/nonfinite_skipped"]) == 0
        assert 0.0 <= float(row["train/fast_rcnn/cls_accuracy"]) <= 1.0
    # torchvision assigns proposals once per step for its loss; the RoI statistics add a second time on the
    # logged steps only.
    assert Counter(assigned) == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1, 5: 2}


def test_nonfinite_steps_are_skipped_on_the_device_and_reported_at_the_interval(tmp_path: Path) -> None:
    module = FasterRCNNModule(**SMALL, max_nonfinite_in_a_row=100)
    with torch.no_grad():
        module.model.roi_heads.box_predictor.cls_score.bias.fill_(float("nan"))
    before = {name: p.detach().clone() for name, p in module.model.named_parameters()}
    rows = _fit(module, tmp_path, max_steps=4, max_epochs=4, log_every_n_steps=2)

    assert [float(row["train/nonfinite_skipped"]) for row in rows if row.get("train/nonfinite_skipped")] == [2, 4]
    assert module.nonfinite_skipped == 4 and module._nonfinite_in_a_row == 4
    for name, p in module.model.named_parameters():  # the fused SGD left every parameter as it was
        assert torch.equal(p, before[name]) or name.endswith("cls_score.bias"), name


def test_nonfinite_streak_raises_at_the_next_logging_step(tmp_path: Path) -> None:
    module = FasterRCNNModule(**SMALL, max_nonfinite_in_a_row=3)
    with torch.no_grad():
        module.model.roi_heads.box_predictor.cls_score.bias.fill_(float("nan"))
    with pytest.raises(RuntimeError, match="4 non-finite losses in a row"):
        _fit(module, tmp_path, max_steps=8, max_epochs=8, log_every_n_steps=2)
    assert module.global_step == 4


def test_channels_last_size_buckets_and_compile_options() -> None:
    module = FasterRCNNModule(**SMALL, channels_last=True, size_divisible=64)
    conv = module.model.backbone.body.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    batch, _ = module.model.transform([torch.rand(3, 70, 100), torch.rand(3, 65, 130)])
    assert batch.tensors.shape[-2:] == (128, 192)  # padded to 64-px buckets
    module.train()
    losses = module([_sample(0)[0]], [_sample(0)[1]])
    assert all(torch.isfinite(v) for v in losses.values())

    compiled = FasterRCNNModule(**SMALL, compile=True)
    compiled.setup("validate")
    assert compiled.model.backbone._compiled_call_impl is None  # only training compiles
    compiled.setup("fit")
    assert compiled.model.backbone._compiled_call_impl is not None
    assert set(compiled.state_dict()) == set(FasterRCNNModule(**SMALL).state_dict())  # same checkpoint keys


def test_loader_workers_run_opencv_single_threaded(converted_png16: Path) -> None:
    import cv2

    from mammodet.training.datamodule import DetectionDataModule

    class Threads(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> int:
            return cv2.getNumThreads()

    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        dm = DetectionDataModule(image_dir=str(converted_png16), num_workers=2, persistent_workers=False)
        loader = dm._loader(Threads(), batch_size=1, shuffle=False)
        loader.collate_fn = list
        assert [batch for batch in loader] == [[1], [1]]
    finally:
        cv2.setNumThreads(threads)


# ------------------------------------------------------------------------------------------------ CPU smoke run


def recipe_smoke_overrides(synth: Path, work: Path) -> list[str]:
    """The recipe on the CPU, small enough for 2 cores and 24 GB: batch 2, 2 steps, no download, real crop size."""
    return [
        "experiment=frcnn_a100",
        "trainer=cpu",
        "trainer.precision=32-true",
        "model.weights=none",
        f"data.csv_dir={synth / 'csv'}",
        f"data.dicom_root={synth / 'dicom'}",
        f"data.image_dir={work / 'converted'}",
        f"paths.output_dir={work / 'run'}",
        "data.batch_size=2",
        "data.eval_batch_size=1",
        "data.num_workers=0",
        "data.convert.workers=0",
        "data.cache.workers=0",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.log_every_n_steps=1",
        "logger=none",
    ]


@pytest.mark.slow
def test_recipe_smoke_run_on_the_cpu(synthetic_classic: Path, tmp_path: Path) -> None:
    from mammodet.train import train

    metrics, objects = train(compose("train", recipe_smoke_overrides(synthetic_classic, tmp_path)))
    assert objects["trainer"].global_step == 2
    assert math.isfinite(metrics["train/loss"]) and "val/map_50" in metrics and "test/map_50" in metrics
    assert (tmp_path / "converted" / "cache" / "index.json").is_file()  # fed from the cache, as the recipe is
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_bf16_mixed_clips_and_skips_with_the_fused_optimizer(tmp_path: Path) -> None:
    module = FasterRCNNModule(**SMALL, max_nonfinite_in_a_row=100)
    rows = _fit(module, tmp_path, max_steps=2, max_epochs=2, log_every_n_steps=1, precision="bf16-mixed")
    assert [math.isfinite(float(row["train/loss"])) for row in rows if row.get("train/loss")] == [True, True]
    assert module.trainer.optimizers[0].defaults["fused"] and module.nonfinite_skipped == 0
