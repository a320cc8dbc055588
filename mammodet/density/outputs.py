"""``DensityReport``: the per-run outputs of the density study, written as training goes.

After every validation epoch: ``history.json`` and ``history.png`` (losses and metrics per epoch, best epoch
marked). Whenever the checkpoint callback that monitors ``val/selection`` saves a new best checkpoint (the
one rule for the best model: the decision is read from the callback, not repeated), the outputs of that
epoch replace the previous ones:
``val_metrics.json`` (every metric of the report, the epoch, the checkpoint), ``confusion_matrix.png``,
``val_predictions.csv`` (key, pseudonym, true and predicted class, probabilities: no path, no DICOM text)
and ``gradcam/<key>_true-<c>_pred-<c>.png`` for the first ``n_gradcam`` validation images. Without such a
checkpoint callback every epoch counts as the best.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from matplotlib.figure import Figure
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from mammodet.metrics.classification import json_ready

log = logging.getLogger(__name__)

SELECTION_KEY = "val/selection"
HISTORY_METRICS = ("bal_acc", "bal_acc_adj", "kappa", "macro_f1", "auc_ovr", "accuracy")
_ARRAYS = ("index", "probs", "target")


def plot_history(history: list[dict[str, Any]], best_epoch: int | None, path: Path) -> None:
    """Training and validation loss (left) and validation metrics (right) per epoch."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    loss_axes, metric_axes = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    loss_axes.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    loss_axes.plot(epochs, [row["loss"] for row in history], "o-", label="validation")
    loss_axes.set(xlabel="epoch", ylabel="weighted cross-entropy", title="loss")
    for name in HISTORY_METRICS:
        metric_axes.plot(epochs, [row[name] for row in history], "o-", label=name, markersize=3)
    metric_axes.set(xlabel="epoch", title="validation", ylim=(-0.35, 1.02))
    for axes in (loss_axes, metric_axes):
        if best_epoch is not None:
            axes.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best_epoch})")
        axes.legend(fontsize=8)
    figure.savefig(path, dpi=100)


def plot_confusion(confusion: list[list[int]], names: list[str], title: str, path: Path) -> None:
    """Counts with true classes as rows and predicted ones as columns, shaded by row share (recall)."""
    counts = np.asarray(confusion)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(0.8 * len(names) + 2, 0.7 * len(names) + 1.6), layout="constrained")
    axes = figure.subplots()
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(counts):
        axes.text(col, row, str(count), ha="center", va="center", color="white" if shares[row, col] > 0.5 else "black")
    ticks = range(len(names))
    axes.set(xticks=ticks, yticks=ticks, xticklabels=names, yticklabels=names, xlabel="predicted", ylabel="true")
    axes.set_title(title, fontsize=9)
    figure.savefig(path, dpi=100)


def grad_cam(model: nn.Module, layer: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """Grad-CAM maps ``[B, H, W]`` in 0..1 of ``images`` ``[B, C, H, W]`` for ``classes`` ``[B]``: the ``grad-cam``
    package's ``GradCAM`` (as ``mammodet explain`` uses for detections), in float32 and eval mode.

    The input requires gradients, so they reach ``layer`` through frozen layers (``head_only``); parameters are
    set not to require gradients meanwhile, so none is accumulated; mode and ``requires_grad`` are restored.
    """
    was_training = model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    cam = GradCAM(model=model, target_layers=[layer])  # sets eval mode
    try:
        for parameter in trainable:
            parameter.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(images.device.type, enabled=False):
            inputs = images.detach().clone().float().requires_grad_(True)
            return cam(input_tensor=inputs, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    finally:
        cam.activations_and_grads.release()
        for parameter in trainable:
            parameter.requires_grad_(True)
        model.train(was_training)


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """A BGR uint8 picture: the grayscale ``image`` (0..1) beside it with the ``cam`` heat map blended in."""
    gray = cv2.cvtColor(np.uint8(np.clip(image, 0, 1) * 255), cv2.COLOR_GRAY2BGR)
    heat = cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET)
    return np.concatenate([gray, cv2.addWeighted(gray, 0.55, heat, 0.45, 0)], axis=1)


class DensityReport(Callback):
    """Writes the density run's outputs into ``out_dir`` (see the module docstring)."""

    def __init__(self, out_dir: str, n_gradcam: int = 4) -> None:
        self.out_dir = Path(out_dir)
        self.n_gradcam = n_gradcam
        self.history: list[dict[str, Any]] = []
        self.best_epoch: int | None = None
        self._best_path: str | None = None
        self._pending: dict[str, Any] | None = None

    def _selection_checkpoint(self, trainer: L.Trainer) -> ModelCheckpoint | None:
        return next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == SELECTION_KEY), None)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep the epoch's validation report: its checkpoint is saved after this hook (checkpoint callbacks run
        last), so whether it is the new best is known at the next epoch's start or the end of fitting."""
        report = pl_module.reports.get("val")
        if report is not None and report["epoch"] == trainer.current_epoch:
            self._pending = report

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """History for the pending report and, when its checkpoint became the best, the best-epoch outputs.

        The weights are still those the report was computed with: no training step ran since.
        """
        report, self._pending = self._pending, None
        if report is None or not trainer.is_global_zero:
            return
        checkpoint = self._selection_checkpoint(trainer)
        is_best = checkpoint is None or checkpoint.best_model_path != self._best_path
        if is_best:
            self.best_epoch = report["epoch"]
            self._best_path = checkpoint.best_model_path if checkpoint else None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.history.append({k: v for k, v in report.items() if k in ("epoch", "train_loss", "loss", *HISTORY_METRICS)})
        (self.out_dir / "history.json").write_text(json.dumps(json_ready(self.history), indent=2))
        plot_history(self.history, self.best_epoch, self.out_dir / "history.png")
        if is_best:
            self._write_best(trainer, pl_module, report)

    def _write_best(self, trainer: L.Trainer, pl_module: L.LightningModule, report: dict[str, Any]) -> None:
        names = list(pl_module.names)
        summary = {k: v for k, v in report.items() if k not in _ARRAYS}
        summary |= {"classes": names, "checkpoint": self._best_path}
        (self.out_dir / "val_metrics.json").write_text(json.dumps(json_ready(summary), indent=2))
        title = (
            f"validation, epoch {report['epoch']}: bal_acc {report['bal_acc']:.3f}, "
            f"kappa {report['kappa']:.3f}, n={report['n']}"
        )
        plot_confusion(report["confusion"], names, title, self.out_dir / "confusion_matrix.png")
        records = trainer.datamodule.splits["val"]
        self._write_predictions(report, records, names)
        self._write_gradcam(trainer, pl_module, report, records, names)

    def _write_predictions(self, report: dict[str, Any], records: list[Any], names: list[str]) -> None:
        """One row per validation image: key, pseudonym, true and predicted class, class probabilities."""
        with (self.out_dir / "val_predictions.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["key", "patient_id", "true", "pred", *[f"prob_{n}" for n in names]])
            for index, target, probs in zip(report["index"], report["target"], report["probs"], strict=True):
                record = records[int(index)]
                row = [record.key, record.patient_id, names[int(target)], names[int(probs.argmax())]]
                writer.writerow(row + [f"{p:.6f}" for p in probs.tolist()])

    def _write_gradcam(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        report: dict[str, Any],
        records: list[Any],
        names: list[str],
    ) -> None:
        """Grad-CAM maps of the predicted class for the first ``n_gradcam`` validation images."""
        folder = self.out_dir / "gradcam"
        shutil.rmtree(folder, ignore_errors=True)
        count = min(self.n_gradcam, len(records))
        if count == 0:
            return
        folder.mkdir(parents=True)
        dataset = trainer.datamodule.dataset("val")
        images = torch.stack([dataset[i][0] for i in range(count)]).to(pl_module.device)
        position = {int(index): row for row, index in enumerate(report["index"])}
        preds = torch.stack([report["probs"][position[i]].argmax() for i in range(count)])
        maps = grad_cam(pl_module, pl_module.gradcam_layer, images, preds)
        for i in range(count):
            true, pred = names[dataset.labels[i]], names[int(preds[i])]
            picture = overlay(images[i, 0].cpu().numpy(), maps[i])
            cv2.imwrite(str(folder / f"{records[i].key}_true-{true}_pred-{pred}.png"), picture)
        log.info("Grad-CAM maps of %d validation images written to %s", count, folder)
