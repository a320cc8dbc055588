"""Density model and runs: freezing, weights, Grad-CAM, configs, a tiny end-to-end run and its outputs."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from omegaconf import open_dict

from mammodet.config import compose
from mammodet.density.data import DensityDataModule
from mammodet.density.model import DensityClassifier, build_classifier
from mammodet.density.outputs import grad_cam
from mammodet.synthetic.cbis import PLANTED_IDENTIFIERS
from mammodet.synthetic.density import generate
from mammodet.train import train


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 synthetic patients (5 per density), two views each, at 128x80."""
    out = tmp_path_factory.mktemp("density_synth")
    generate(out, n_patients=20, height=128, width=80, seed=5, class_shares=(1, 1, 1, 1))
    return out


def tiny_overrides(synth: Path, work: Path) -> list[str]:
    """The demo experiment on the fixture at 64 px: seconds on a CPU."""
    return [
        "experiment=density_demo",
        f"paths.output_dir={work / 'run'}",
        f"data.csv_path={synth / 'train.csv'}",
        f"data.image_root={synth / 'images'}",
        "synthesize=null",
        "data.image_size=48",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.max_epochs=2",
        "logger=none",
        "callbacks.density_report.n_gradcam=3",
    ]


def _datamodule(synth: Path, classes: int = 4) -> DensityDataModule:
    dm = DensityDataModule(
        csv_path=str(synth / "train.csv"),
        image_root=str(synth / "images"),
        classes=classes,
        image_size=64,
        batch_size=8,
        num_workers=0,
    )
    dm.setup()
    return dm


def _trainable(model: DensityClassifier) -> set[str]:
    return {name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad}


def test_freezing_strategies_and_frozen_batchnorm() -> None:
    assert _trainable(DensityClassifier("resnet18", freeze="head_only")) == {"fc"}
    assert _trainable(DensityClassifier("resnet18", freeze="last_block")) == {"layer4", "fc"}
    assert len(_trainable(DensityClassifier("resnet18", freeze="full"))) == 7
    effnet = DensityClassifier("efficientnet_b0", classes=2, freeze="last_block")
    trainable = {".".join(n.split(".")[:2]) for n, p in effnet.net.named_parameters() if p.requires_grad}
    assert trainable == {"features.7", "features.8", "classifier.1"}
    assert effnet.net.classifier[-1].out_features == 2
    model = DensityClassifier("resnet18", freeze="last_block").train()
    assert not model.net.bn1.training and not model.net.layer3[0].bn1.training and model.net.layer4[0].bn1.training
    with pytest.raises(ValueError, match="unknown freeze strategy"):
        DensityClassifier("resnet18", freeze="partial")


def test_weights_from_a_torchvision_state_dict_and_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()  # 1000-class head: left out when loading
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    net = build_classifier("resnet18", 4, str(tmp_path / "resnet18.pth"))
    assert torch.equal(net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight) and net.fc.out_features == 4
    model = DensityClassifier("resnet18", weights=str(tmp_path / "resnet18.pth"))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "density.ckpt")
    again = build_classifier("resnet18", 4, str(tmp_path / "density.ckpt"))
    assert torch.equal(again.fc.weight, model.net.fc.weight)
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(ValueError, match="not a state dict of this architecture"):
        build_classifier("resnet18", 4, str(tmp_path / "resnet34.pth"))


def test_grad_cam_runs_through_frozen_layers_and_touches_no_parameter() -> None:
    torch.manual_seed(0)
    model = DensityClassifier("resnet18", freeze="head_only").train()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    maps = grad_cam(model, model.gradcam_layer, torch.rand(2, 1, 64, 64), torch.tensor([2, 3]))
    # Min-max scaled per image; not all zero: the gradient reached layer4 although it is frozen.
    assert maps.shape == (2, 64, 64) and maps.min(axis=(1, 2)).tolist() == [0.0, 0.0]
    assert maps.max(axis=(1, 2)).tolist() == pytest.approx([1.0, 1.0])
    assert model.training and not model.net.bn1.training  # mode restored, frozen BatchNorm still in eval
    assert all(p.grad is None for p in model.parameters())
    assert (
        [name for name, p in model.named_parameters() if p.requires_grad]
        == trainable
        == ["net.fc.weight", "net.fc.bias"]
    )


@pytest.mark.parametrize("experiment", ["density_resnet50_4class", "density_effnet_binary"])
@pytest.mark.parametrize("freeze", ["full", "last_block", "head_only"])
def test_study_configs_compose_for_every_freezing_strategy(experiment: str, freeze: str, tmp_path: Path) -> None:
    cfg = compose("train", [f"experiment={experiment}", f"model.freeze={freeze}", f"paths.output_dir={tmp_path}"])
    arch, classes = ("resnet50", 4) if experiment == "density_resnet50_4class" else ("efficientnet_b0", 2)
    assert (cfg.model.arch, cfg.model.classes, cfg.data.classes, cfg.model.freeze) == (arch, classes, classes, freeze)
    assert cfg.model.weights == "imagenet" and cfg.optimized_metric == "val/selection"
    assert cfg.callbacks.model_checkpoint.monitor == "val/selection"
    assert cfg.model.selection_metric == "bal_acc_adj" and cfg.data._target_.endswith("DensityDataModule")


def test_demo_trains_and_writes_every_output(synth: Path, tmp_path: Path) -> None:
    cfg = compose("train", tiny_overrides(synth, tmp_path))
    metrics, objects = train(cfg)
    run = tmp_path / "run"
    assert math.isfinite(metrics["val/selection"]) and "test/bal_acc_adj" in metrics
    best = Path(objects["trainer"].checkpoint_callback.best_model_path)
    assert best.parent == run / "checkpoints" and (run / "checkpoints" / "last.ckpt").is_file()
    summary = json.loads((run / "val_metrics.json").read_text())
    for key in ("accuracy", "bal_acc", "bal_acc_adj", "kappa", "auc_ovr", "macro_f1", "pred_counts", "pred_unique"):
        assert key in summary
    assert set(summary["f1"]) == {"A", "B", "C", "D"} and len(summary["confusion"]) == 4
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    assert summary["epoch"] == checkpoint["epoch"] and summary["checkpoint"] == str(best)
    assert summary["selection"] == pytest.approx(float(objects["trainer"].checkpoint_callback.best_model_score))
    assert checkpoint["hyper_parameters"]["load_pretrained"] is False
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1]
    for name in ("history.png", "confusion_matrix.png"):
        assert (run / name).stat().st_size > 1000
    rows = list(csv.DictReader((run / "val_predictions.csv").open()))
    val = objects["datamodule"].splits["val"]
    assert [r["key"] for r in rows] == [r.key for r in val] and [r["patient_id"] for r in rows] == [
        r.patient_id for r in val
    ]
    assert set(rows[0]) == {"key", "patient_id", "true", "pred", "prob_A", "prob_B", "prob_C", "prob_D"}
    maps = sorted((run / "gradcam").glob("*.png"))
    assert len(maps) == 3 and maps[0].name.startswith(val[0].key + "_true-")
    texts = [p.read_text(errors="ignore") for p in run.rglob("*") if p.suffix in (".json", ".csv", ".log", ".yaml")]
    for value in PLANTED_IDENTIFIERS.values():
        assert not any(value in text for text in texts)
    for name in ("val_metrics.json", "val_predictions.csv", "history.json", "test_metrics.json"):
        assert ".dcm" not in (run / name).read_text()  # no image path either
    model = DensityClassifier.load_from_checkpoint(best, map_location="cpu")
    assert model.hparams.arch == "resnet18" and model.class_weights.shape == (4,)


def test_collapse_warning_and_selection_fallback(synth: Path, caplog: pytest.LogCaptureFixture) -> None:
    dm = _datamodule(synth)
    model = DensityClassifier("resnet18", weights="none", freeze="full")
    with torch.no_grad():
        model.net.fc.bias.copy_(torch.tensor([0.0, 100.0, 0.0, 0.0]))  # always B
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with caplog.at_level(logging.WARNING, logger="mammodet.density.model"):
        trainer.validate(model, datamodule=dm, verbose=False)
    report = model.reports["val"]
    assert report["collapsed"] and report["pred_counts"] == [0, len(dm.splits["val"]), 0, 0]
    assert "predictions collapsed onto 1 of the 4 classes present" in caplog.text
    assert report["selection_metric"] == "bal_acc_adj" and report["selection"] == pytest.approx(0.0)

    dm.splits["val"] = [r for r in dm.splits["val"] if r.density == 2]  # one class: bal_acc_adj undefined
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mammodet.density.model"):
        trainer.validate(model, datamodule=dm, verbose=False)
    report = model.reports["val"]
    assert math.isnan(report["bal_acc_adj"]) and report["selection_metric"] == "bal_acc"
    assert report["selection"] == 1.0 and trainer.callback_metrics["val/selection"] == 1.0
    assert "bal_acc_adj is undefined; model selection uses bal_acc" in caplog.text
    assert "no one-vs-rest AUC for A, B, C, D" in caplog.text


def test_model_and_data_must_agree_on_the_task(synth: Path) -> None:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"model\.classes=4 but data\.classes=2"):
        trainer.validate(DensityClassifier("resnet18"), datamodule=_datamodule(synth, classes=2), verbose=False)


def test_binary_run_with_sampler_sgd_and_plateau(synth: Path, tmp_path: Path) -> None:
    cfg = compose(
        "train",
        [
            *tiny_overrides(synth, tmp_path),
            "data.classes=2",
            "data.sampler_alpha=1.0",
            "model.class_weight_alpha=0.0",
            "model.optimizer=sgd",
            "model.lr=0.01",
            "model.scheduler=plateau",
            "model.freeze=last_block",
            "trainer.max_epochs=1",
            "test=false",
        ],
    )
    with open_dict(cfg):
        cfg.callbacks.density_report.n_gradcam = 0
    metrics, _ = train(cfg)
    summary = json.loads((tmp_path / "run" / "val_metrics.json").read_text())
    assert summary["classes"] == ["AB", "CD"] and set(summary["auc"]) == {"AB", "CD"}
    assert "val/kappa" in metrics and not (tmp_path / "run" / "gradcam").exists()


@pytest.mark.slow
def test_ddp_validation_counts_every_image_once(synth: Path, tmp_path: Path) -> None:
    overrides = [o for o in tiny_overrides(synth, tmp_path) if not o.startswith("paths.output_dir")]
    overrides = [*overrides, "trainer=ddp", "trainer.devices=3", "trainer.sync_batchnorm=false", "trainer.max_epochs=1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mammodet.train", *overrides, f"hydra.run.dir={tmp_path / 'ddp'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "val_metrics.json").read_text())
    rows = list(csv.DictReader((tmp_path / "ddp" / "val_predictions.csv").open()))
    assert summary["n"] == len(rows) == len({r["key"] for r in rows}) == sum(summary["target_counts"])
    assert len(rows) % 3  # the distributed sampler pads with repeats: each image is still counted once
