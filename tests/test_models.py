"""The model registry: every family builds, trains, predicts and restores; the existing models build the very
modules (and initial weights) that the code before the registry built; plugins register through entry points."""

from __future__ import annotations

import hashlib
import importlib.metadata
import urllib.error
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mammodet.config import compose
from mammodet.errors import UserError
from mammodet.models import (
    DetectorModule,
    FasterRCNNModule,
    ModelEntry,
    build_detector,
    get_model,
    model_names,
    registry,
    weights,
)
from mammodet.models.backbones import BACKBONES
from mammodet.models.families.frcnn import FasterRCNNSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL_MODELS = ("frcnn_small", "retinanet_small", "fcos_small")
R50_MODELS = ("frcnn_r50", "frcnn_r50_v2", "retinanet_r50_v2", "fcos_r50")
LOSSES = {
    "frcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
    "retinanet": {"classification", "bbox_regression"},
    "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
}

# Measured on main at 474bc19 (the builders before the registry), this machine's torch 2.14.1 / torchvision 0.29.1:
#   cd /work/main && PYTHONPATH=/work/main python ref.py frcnn_small frcnn_r50
# where ref.py composes `train model=<name>`, seeds torch with 0, instantiates cfg.model, hashes its state dict as
# _digest does, then seeds 1 and runs the eval model on torch.rand(3, 96, 128): (digest, state-dict entries,
# detections, sum of scores, sum of box coordinates).
MAIN_BUILDS = {
    "frcnn_small": ("caf7ede9dc5abe777266e3609dc8b9c9f2d45fb205d5c41b0caa8ad3df1c9991", 116, 100, 33.27507, 22937.271),
    "frcnn_r50": ("6ae333ba873ef54daff6b19f5d177a5f5dcad6c1328871f96e7e6a5a6c9c285c", 348, 100, 99.998103, 25480.847),
}


def _digest(model: nn.Module) -> str:
    """SHA-256 over every state-dict entry's name, shape and bytes, in order."""
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def _sample(i: int) -> tuple[Tensor, dict[str, Any]]:
    """A 96x128 image with a bright 24-px square lesion of class 1 + i % 3."""
    image = torch.full((3, 96, 128), 0.1)
    x0 = 20 + 10 * (i % 3)
    image[:, 30:54, x0 : x0 + 24] = 0.9
    box = torch.tensor([[x0, 30, x0 + 24, 54]], dtype=torch.float32)
    return image, {"boxes": box, "labels": torch.tensor([1 + i % 3]), "image_id": i}


def _loader() -> DataLoader:
    return DataLoader(
        [_sample(i) for i in range(2)], batch_size=2, collate_fn=lambda s: tuple(map(list, zip(*s, strict=True)))
    )


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
    }
    return Trainer(**{**options, **kwargs})


def _module(name: str, *overrides: str) -> DetectorModule:
    """The module the CLI builds for ``model=<name>``, seeded with 0."""
    cfg = compose("train", [f"model={name}", *overrides])
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model)


# ------------------------------------------------------------------------------------------------ registry


def test_registry_lists_the_seven_configs_and_their_families() -> None:
    families = {name: get_model(name).family for name in model_names()}
    assert {name: families[name] for name in (*SMALL_MODELS, *R50_MODELS)} == {
        "frcnn_small": "frcnn",
        "retinanet_small": "retinanet",
        "fcos_small": "fcos",
        "frcnn_r50": "frcnn",
        "frcnn_r50_v2": "frcnn",
        "retinanet_r50_v2": "retinanet",
        "fcos_r50": "fcos",
    }
    conf = Path(__file__).parents[1] / "conf" / "model"
    for name in (*SMALL_MODELS, *R50_MODELS):
        assert compose("train", [f"model={name}"]).model.model_name == name
        assert (conf / f"{name}.yaml").is_file()
    with pytest.raises(UserError, match=r"model.model_name=yolo: unknown model; choose one of \['fcos_r50'"):
        get_model("yolo")


def test_unknown_family_setting_names_the_key_and_the_family() -> None:
    with pytest.raises(UserError, match=r"model.box_score_thresh: not a setting of the retinanet family"):
        DetectorModule("retinanet_small", box_score_thresh=0.1)
    with pytest.raises(UserError, match=r"model.backbone=vgg16: unknown backbone; choose one of"):
        DetectorModule("frcnn_small", backbone="vgg16")
    with pytest.raises(UserError, match=r"model.anchor_sizes has 5 levels but this model has 4 feature maps"):
        DetectorModule("frcnn_small", anchor_sizes=[[16], [32], [64], [128], [256]])


def test_a_plugin_family_registers_through_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    def build(request: registry.BuildRequest) -> nn.Module:
        return build_detector("frcnn_small", num_classes=request.num_classes, settings={}).train()

    toy = ModelEntry(
        name="toy_frcnn",
        family="toy",
        title="Toy",
        description="a plugin's model",
        build=build,
        settings_type=FasterRCNNSettings,
        backbone="resnet18",
    )
    point = importlib.metadata.EntryPoint(name="toy", value="toy_package:MODELS", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata.EntryPoint, "load", lambda self: [toy])
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group: [point] if group == registry.ENTRY_POINT_GROUP else []
    )
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    assert "toy_frcnn" in model_names() and get_model("toy_frcnn") is toy
    module = DetectorModule("toy_frcnn", min_size=96, max_size=128)
    _trainer(max_steps=1).fit(module, _loader())
    assert module.global_step == 1 and module.hparams.model_name == "toy_frcnn"


# ------------------------------------------------------------------------------------------------ unchanged builds


@pytest.mark.parametrize("name", ["frcnn_small", pytest.param("frcnn_r50", marks=pytest.mark.slow)])
def test_existing_models_build_mains_weights_and_outputs(name: str) -> None:
    module = _module(name).eval()
    torch.manual_seed(1)
    image = torch.rand(3, 96, 128)
    with torch.no_grad():
        out = module([image])[0]
    digest, entries, detections, score_sum, box_sum = MAIN_BUILDS[name]
    assert _digest(module.model) == digest and len(module.model.state_dict()) == entries
    assert out["boxes"].shape == (detections, 4)
    assert float(out["scores"].double().sum()) == pytest.approx(score_sum, abs=1e-4)
    assert float(out["boxes"].double().sum()) == pytest.approx(box_sum, abs=1e-2)


@pytest.mark.slow
def test_r50_models_have_torchvisions_state_dict_layout() -> None:
    """Key for key and shape for shape torchvision's public builders, so their COCO checkpoints load."""
    from torchvision.models.detection import (
        fasterrcnn_resnet50_fpn,
        fasterrcnn_resnet50_fpn_v2,
        fcos_resnet50_fpn,
        retinanet_resnet50_fpn_v2,
    )

    for name, builder in (
        ("frcnn_r50", fasterrcnn_resnet50_fpn),
        ("frcnn_r50_v2", fasterrcnn_resnet50_fpn_v2),
        ("retinanet_r50_v2", retinanet_resnet50_fpn_v2),
        ("fcos_r50", fcos_resnet50_fpn),
    ):
        ours = {k: tuple(v.shape) for k, v in build_detector(name, num_classes=91).state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in builder(weights=None, weights_backbone=None).state_dict().items()}
        assert ours == theirs, name


def test_a_checkpoint_of_the_code_before_the_registry_loads(tmp_path: Path) -> None:
    """The hyperparameters ``FasterRCNNModule`` saved before (``arch`` and the flat Faster R-CNN keywords)."""
    old_hparams = {
        "arch": "fasterrcnn_resnet18_fpn",
        "num_classes": 4,
        "weights": "none",
        "backbone_weights": "none",
        "trainable_backbone_layers": None,
        "min_size": 128,
        "max_size": 160,
        "image_mean": None,
        "image_std": None,
        "anchor_sizes": None,
        "aspect_ratios": None,
        "rpn_pre_nms_top_n_train": None,
        "rpn_post_nms_top_n_train": None,
        "rpn_pre_nms_top_n_test": None,
        "rpn_post_nms_top_n_test": None,
        "rpn_batch_size_per_image": None,
        "box_batch_size_per_image": None,
        "box_score_thresh": None,
        "box_nms_thresh": None,
        "box_detections_per_img": None,
        "detector_kwargs": None,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0001,
        "norm_bias_weight_decay": None,
        "scheduler": "multistep",
        "warmup_steps": 1000,
        "warmup_factor": 0.001,
        "milestones": None,
        "gamma": 0.1,
        "max_steps": None,
        "max_nonfinite_in_a_row": 20,
        "n_log_images": 4,
        "eval_score_thresh": 0.5,
        "load_pretrained": False,
        "resize_in_model": False,
        "size_divisible": None,
        "channels_last": False,
        "compile": False,
    }  # dict(FasterRCNNModule(arch="fasterrcnn_resnet18_fpn", min_size=128, max_size=160).hparams) at 474bc19
    torch.manual_seed(3)
    trained = DetectorModule("frcnn_small", min_size=128, max_size=160)
    path = tmp_path / "old.ckpt"
    torch.save(
        {"state_dict": trained.state_dict(), "hyper_parameters": old_hparams, "pytorch-lightning_version": "2.6.6"},
        path,
    )
    for cls in (FasterRCNNModule, DetectorModule):
        restored = cls.load_from_checkpoint(path)
        assert restored.hparams.model_name == "frcnn_small" and restored.hparams.backbone == "resnet18"
        assert "arch" not in restored.hparams
        assert all(torch.equal(v, trained.state_dict()[k]) for k, v in restored.state_dict().items())
        assert restored.model.rpn._pre_nms_top_n == {"training": 1000, "testing": 500}  # the small model's defaults


# ------------------------------------------------------------------------------------------------ every family


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL_MODELS)
def test_small_families_train_checkpoint_restore_and_predict(name: str, tmp_path: Path) -> None:
    module = DetectorModule(name, min_size=96, max_size=128, lr=0.005, warmup_steps=1, milestones=[100])
    checkpoints = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = _trainer(max_steps=2, enable_checkpointing=True, callbacks=[checkpoints])
    trainer.fit(module, _loader())
    assert module.global_step == 2 and module.nonfinite_skipped == 0
    logged = set(trainer.logged_metrics)
    family = get_model(name).family
    assert {f"train/{loss}" for loss in LOSSES[family]} | {"train/loss", "train/lr"} <= logged
    assert ("train/fast_rcnn/cls_accuracy" in logged) == (family == "frcnn")

    checkpoint = torch.load(checkpoints.best_model_path, weights_only=True)
    assert checkpoint["hyper_parameters"]["model_name"] == name
    assert checkpoint["hyper_parameters"]["backbone"] == "resnet18"
    restored = DetectorModule.load_from_checkpoint(checkpoints.best_model_path).eval()
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in restored.state_dict().items())

    (metrics,) = _trainer().validate(restored, _loader())
    assert {"val/map", "val/map_50", "val/f1_macro"} <= set(metrics)
    batches = _trainer().predict(restored, DataLoader([_sample(i)[0] for i in range(3)], batch_size=2, collate_fn=list))
    predictions = [p for batch in batches for p in batch]
    assert len(predictions) == 3
    for p in predictions:
        assert set(p) == {"boxes", "scores", "labels"}
        assert p["boxes"].shape == (len(p["scores"]), 4) and p["boxes"].dtype == torch.float32
        assert p["labels"].dtype == torch.int64 and bool(((p["labels"] >= 1) & (p["labels"] <= 3)).all())
        assert len(p["scores"]) <= 100


@pytest.mark.slow
@pytest.mark.parametrize("family", ["frcnn", "retinanet", "fcos"])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_builds_and_trains_a_step_in_every_family(family: str, backbone: str) -> None:
    module = DetectorModule(f"{family}_small", backbone=backbone, min_size=96, max_size=128)
    losses = module(*next(iter(_loader())))
    assert set(losses) == LOSSES[family] and all(torch.isfinite(v) for v in losses.values())
    assert module.hparams.backbone == backbone


def test_backbone_weights_from_a_local_file_and_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(5)
    classifier = resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), path)
    module = DetectorModule("fcos_small", backbone_weights=str(path))
    body = module.model.backbone.body
    assert torch.equal(body.conv1.weight, classifier.conv1.weight)
    assert torch.equal(body.layer3[1].bn2.running_var, classifier.layer3[1].bn2.running_var)
    assert not body.layer1[0].conv1.weight.requires_grad and body.layer3[0].conv1.weight.requires_grad  # 3 stages

    def offline(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(weights, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"pass model.backbone_weights=/path/to/efficientnet_b0_rwightman-"):
        DetectorModule("retinanet_small", backbone="efficientnet_b0", backbone_weights="imagenet")
    with pytest.raises(RuntimeError, match=r"pass model.weights=/path/to/retinanet_resnet50_fpn_v2_coco-"):
        DetectorModule("retinanet_r50_v2", weights="coco")
    with pytest.raises(UserError, match=r"no COCO weights for fcos_r50 with backbone resnet18"):
        DetectorModule("fcos_r50", backbone="resnet18", weights="coco")


def test_a_coco_style_checkpoint_swaps_the_class_head_of_one_stage_families(tmp_path: Path) -> None:
    for name in ("retinanet_small", "fcos_small"):
        coco_like = build_detector(name, num_classes=91)
        path = tmp_path / f"{name}.pth"
        torch.save(coco_like.state_dict(), path)
        module = DetectorModule(name, weights=str(path))
        cls_logits = module.model.head.classification_head.cls_logits
        assert cls_logits.out_channels == module.model.head.classification_head.num_anchors * 4
        reg = module.model.head.regression_head.bbox_reg
        assert torch.equal(reg.weight, coco_like.head.regression_head.bbox_reg.weight)


def test_pyproject_declares_the_built_in_families_as_entry_points() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    points = pyproject["project"]["entry-points"][registry.ENTRY_POINT_GROUP]
    assert set(points) == {"frcnn", "retinanet", "fcos"}
    for family, value in points.items():
        entries = importlib.metadata.EntryPoint(name=family, value=value, group=registry.ENTRY_POINT_GROUP).load()
        assert {entry.family for entry in entries} == {family}
        assert all(get_model(entry.name) is entry for entry in entries)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "nms_iou", "title"), [("retinanet_small", 0.5, "RetinaNet"), ("fcos_small", 0.6, "FCOS")]
)
def test_one_stage_families_predict_explain_and_export(
    name: str,
    nms_iou: float,
    title: str,
    tiny_checkpoint: Path,
    mammograms: dict[str, Path],
    tmp_path: Path,
) -> None:
    """The serving path (``Detector``, Grad-CAM, TorchScript/ONNX export, model card) on a RetinaNet and an FCOS
    checkpoint: the tiny run's checkpoint (its datamodule's preprocessing) with that family's weights."""
    from mammodet.export import main as export_main
    from mammodet.serving.explain import heat_maps
    from mammodet.serving.inference import Detector

    module = DetectorModule(name, score_thresh=0.001, detections_per_img=20, load_pretrained=False)
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"], checkpoint["state_dict"] = dict(module.hparams), module.state_dict()
    path = tmp_path / f"{name}.ckpt"
    torch.save(checkpoint, path)

    detector = Detector.from_checkpoint(path, "cpu")
    info = detector.info()
    assert (info["arch"], info["family"], info["backbone"]) == (name, get_model(name).family, "resnet18")
    assert info["thresholds"] == {"min_score": 0.001, "nms_iou": nms_iou, "max_detections": 20, "display_score": 0.3}
    prepared = detector.prepare(mammograms["lesions"])
    detections = detector.run([prepared])[0]
    assert 0 < len(detections.scores) <= 20 and detections.boxes.shape == (len(detections.scores), 4)
    assert detector.report(detections)["model"] == {"name": "mammodet", "version": detector.version, "arch": name}
    # an untrained FCOS also gives zero-area boxes, which Grad-CAM's IoU target cannot match: take a real one
    sides = detections.boxes[:, 2:] - detections.boxes[:, :2]
    (heat,) = heat_maps(detector, prepared, detections.select(np.flatnonzero(sides.min(axis=1) > 1)[:1]))
    assert heat.shape == (320, 200) and heat.dtype == np.float32 and 0 <= heat.min() <= heat.max() <= 1

    out = tmp_path / "model"
    export_main.__wrapped__(compose("export", [f"ckpt_path={path}", f"out_dir={out}"]))
    assert {p.name for p in out.iterdir()} >= {"README.md", "config.json", "model.pt", "model.safetensors"}
    card = (out / "README.md").read_text()
    assert f"{title} ({name}) that detects breast lesions" in card and f"mammodet-{name}" in card
    scripted = torch.jit.load(str(out / "model.pt"))
    _, (output,) = scripted([prepared.tensor])
    expected = detector.forward([prepared.tensor])[0]
    torch.testing.assert_close(output["boxes"], expected["boxes"], atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name", ["retinanet_small", "fcos_small"])
def test_one_stage_heads_never_detect_the_background_label(name: str) -> None:
    """torchvision's one-stage heads score label 0 too; mammodet's are 1..3, so label 0 must never be detected,
    and its score must stay above 0 so that Grad-CAM's backward pass through FCOS's sqrt stays finite."""
    module = DetectorModule(name, score_thresh=1e-6, detections_per_img=300, load_pretrained=False).eval()
    image = torch.rand(3, 160, 128, generator=torch.Generator().manual_seed(0), requires_grad=True)
    (output,) = module.model([image])
    assert len(output["labels"]) > 0 and int(output["labels"].min()) >= 1
    output["scores"].sum().backward()
    assert torch.isfinite(image.grad).all()
