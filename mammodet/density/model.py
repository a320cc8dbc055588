"""``DensityClassifier``: BI-RADS density (A/B/C/D, or AB vs CD) from a torchvision ResNet or EfficientNet.

Batches are ``(images [B, 1, S, S] float 0..1, labels [B], indices [B])`` (``DensityDataModule``); the
grayscale image is repeated to 3 channels and normalised with ImageNet's statistics inside ``forward``, so
ImageNet weights apply and Grad-CAM sees the same input the dataset gives. Every validation (and test)
epoch computes ``mammodet.metrics.classification.classification_report`` over the whole split and logs its
scalars as ``<stage>/<name>`` (per class: ``<stage>/<metric>/<class>``), plus ``<stage>/selection``: the
value of ``selection_metric``, or when that is undefined (NaN) of the first defined metric of
``selection_fallback``. ``val/selection`` is the one rule for the best model: the checkpoint callback, the
plateau scheduler and the report callback all use it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torchvision
from lightning import LightningModule
from torch import Tensor, nn
from torch.nn import functional as F

from mammodet.density.labels import class_names, class_weights
from mammodet.metrics.classification import (
    PER_CLASS_METRICS,
    SCALAR_METRICS,
    classification_report,
    collapse_message,
)

log = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor, Tensor]

ARCHS = ("resnet18", "resnet34", "resnet50", "efficientnet_b0")
"""Backbones: the study's ``resnet50`` and ``efficientnet_b0``; ``resnet18``/``resnet34`` for fast CPU runs."""
FREEZE = ("full", "last_block", "head_only")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "plateau", "step", "none")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_classifier(arch: str, classes: int, weights: str = "none", load_pretrained: bool = True) -> nn.Module:
    """A torchvision classifier with a ``classes``-way head.

    ``weights``: ``none``, ``imagenet`` (torchvision's default ImageNet weights, downloaded once to the torch
    hub cache) or a path to a state dict: a torchvision classification state dict (its 1000-class head is
    left out) or a mammodet checkpoint (``state_dict`` with ``net.`` keys). Only the head may be missing.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    imagenet = weights == "imagenet" and load_pretrained
    net = torchvision.models.get_model(arch, weights="DEFAULT" if imagenet else None)
    head_name = "fc" if arch.startswith("resnet") else "classifier"
    if head_name == "fc":
        net.fc = nn.Linear(net.fc.in_features, classes)
    else:
        net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, classes)
    if weights not in ("none", "imagenet") and load_pretrained:
        _load_state(net, weights, head_name)
    return net


def _load_state(net: nn.Module, path: str, head_name: str) -> None:
    """Load a state dict file into ``net``; head tensors of another shape are skipped, any other difference raises."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state:  # a Lightning checkpoint of this module
        state = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    wrong = [k for k in (*own, *state) if k not in usable and not k.startswith(head_name)]
    if wrong:
        raise ValueError(f"{path}: not a state dict of this architecture; missing, extra or mismatched {wrong[:5]}")
    net.load_state_dict(usable, strict=False)


def trainable_parts(net: nn.Module, arch: str, freeze: str) -> list[nn.Module]:
    """The modules left trainable by a freezing strategy.

    ``full``: the whole network. ``head_only``: the classifier head. ``last_block``: the head plus the last
    stage: ResNet ``layer4``; EfficientNet the last MBConv stage and the final 1x1 convolution
    (``features[-2:]``).
    """
    if freeze not in FREEZE:
        raise ValueError(f"unknown freeze strategy {freeze!r}; choose one of {FREEZE}")
    resnet = arch.startswith("resnet")
    head = net.fc if resnet else net.classifier
    if freeze == "full":
        return [net]
    if freeze == "head_only":
        return [head]
    return [head, net.layer4] if resnet else [head, net.features[-2:]]


def target_layer(net: nn.Module, arch: str) -> nn.Module:
    """The last convolutional stage, whose activations Grad-CAM weighs."""
    return net.layer4[-1] if arch.startswith("resnet") else net.features[-1]


class DensityClassifier(LightningModule):
    """Breast-density classifier with imbalance-aware loss, full-split metrics and one model-selection rule.

    Every argument is a plain value saved as a hyperparameter (``load_from_checkpoint`` rebuilds the module,
    ``torch.load(path, weights_only=True)`` reads the checkpoint).

    Args:
        arch: one of ``ARCHS``.
        classes: 4 (A/B/C/D) or 2 (AB/CD); must equal the datamodule's.
        weights: ``none``, ``imagenet`` or a state-dict path (see :func:`build_classifier`).
        freeze: ``full``, ``last_block`` (the source study's recommendation) or ``head_only``; frozen
            BatchNorm layers keep their running statistics (they stay in eval mode).
        optimizer: ``adamw`` or ``sgd`` (with ``momentum``, Nesterov).
        lr, weight_decay, momentum: the optimizer's.
        scheduler: per epoch: ``cosine`` (to 0 at the trainer's ``max_epochs``), ``plateau`` (times
            ``gamma`` after ``patience`` epochs without a better ``val/selection``), ``step`` (times ``gamma``
            every ``step_size`` epochs) or ``none``.
        class_weight_alpha: cross-entropy class weights ``(N / (K n_c)) ** alpha`` from the training split's
            counts (0: unweighted, 1: inverse frequency); see also the datamodule's ``sampler_alpha``.
        selection_metric: the metric that chooses the best model (a ``SCALAR_METRICS`` name).
        selection_fallback: metrics used in order when ``selection_metric`` is undefined (NaN).
        load_pretrained: read/download ``weights`` when building; checkpoints store False (their state dict
            holds the weights).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        classes: int = 4,
        weights: str = "none",
        freeze: str = "last_block",
        optimizer: str = "adamw",
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: str = "cosine",
        gamma: float = 0.1,
        step_size: int = 10,
        patience: int = 3,
        class_weight_alpha: float = 0.0,
        selection_metric: str = "bal_acc_adj",
        selection_fallback: list[str] | None = None,
        load_pretrained: bool = True,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {SCHEDULERS}")
        fallback = ["bal_acc", "accuracy"] if selection_fallback is None else list(selection_fallback)
        unknown = [m for m in [selection_metric, *fallback] if m not in SCALAR_METRICS]
        if unknown:
            raise ValueError(f"unknown selection metric(s) {unknown}; choose from {SCALAR_METRICS}")
        self.save_hyperparameters()
        self.names = class_names(classes)
        self.selection_order = [selection_metric, *fallback]
        self.net = build_classifier(arch, classes, weights, load_pretrained)
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)
        for part in trainable_parts(self.net, arch, freeze):
            for parameter in part.parameters():
                parameter.requires_grad_(True)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("class_weights", torch.ones(classes))
        self.reports: dict[str, dict[str, Any]] = {}
        """The latest report per stage (``val``, ``test``) with ``epoch``, ``index`` and ``probs`` added."""
        self._outputs: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {"val": [], "test": []}
        self._train_loss = torch.zeros(2)  # sum and count of the epoch's training losses

    @property
    def gradcam_layer(self) -> nn.Module:
        """The layer Grad-CAM explains."""
        return target_layer(self.net, self.hparams.arch)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``[B, classes]`` of grayscale ``[B, 1, H, W]`` images in 0..1."""
        return self.net((images.expand(-1, 3, -1, -1) - self.mean) / self.std)

    def train(self, mode: bool = True) -> DensityClassifier:
        """Set the mode; BatchNorm layers with frozen parameters stay in eval mode."""
        super().train(mode)
        for module in self.net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()
            ):
                module.eval()
        return self

    def setup(self, stage: str) -> None:
        """Check the datamodule's task and, for fitting, set the loss weights from its training counts."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "class_counts"):
            raise ValueError("DensityClassifier needs a DensityDataModule")
        if datamodule.classes != self.hparams.classes:
            raise ValueError(f"model.classes={self.hparams.classes} but data.classes={datamodule.classes}")
        if stage == "fit":
            weights = class_weights(datamodule.class_counts("train"), self.hparams.class_weight_alpha)
            self.class_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))
            log.info("class weights %s", dict(zip(self.names, [round(w, 3) for w in weights.tolist()], strict=True)))

    # ---------------------------------------------------------------- training

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, labels, _ = batch
        loss = F.cross_entropy(self(images).float(), labels, weight=self.class_weights)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self._train_loss += torch.tensor([loss.item() * len(labels), len(labels)])
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_loss.zero_()

    def configure_optimizers(self) -> dict[str, Any]:
        """The optimizer over the trainable parameters and the per-epoch scheduler."""
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, nesterov=True, weight_decay=hp.weight_decay
            )
        if hp.scheduler == "none":
            return {"optimizer": optimizer}
        if hp.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.trainer.max_epochs))
        elif hp.scheduler == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
        else:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=hp.gamma, patience=hp.patience
            )
        config = {"scheduler": scheduler, "interval": "epoch", "monitor": "val/selection"}
        return {"optimizer": optimizer, "lr_scheduler": config}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store ``load_pretrained=False``: the checkpoint holds the weights, restoring it must not download."""
        checkpoint["hyper_parameters"]["load_pretrained"] = False

    # ---------------------------------------------------------------- evaluation

    def _eval_step(self, batch: Batch, stage: str) -> None:
        images, labels, indices = batch
        logits = self(images).float()
        self._outputs[stage].append((logits.detach(), labels.detach(), indices.detach()))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _gather(self, stage: str) -> tuple[Tensor, Tensor, Tensor]:
        """The stage's logits, labels and dataset indices from every process, each image once, by index."""
        logits, labels, indices = (torch.cat(parts) for parts in zip(*self._outputs[stage], strict=True))
        self._outputs[stage].clear()
        if self.trainer.world_size > 1:  # the distributed sampler pads with repeats: keep each index once
            logits, labels, indices = (self.all_gather(t).flatten(0, 1) for t in (logits, labels, indices))
        order = torch.argsort(indices)
        indices, first = torch.unique_consecutive(indices[order], return_counts=True)
        keep = order[torch.cumsum(first, 0) - first]
        return logits[keep], labels[keep], indices

    def _eval_epoch_end(self, stage: str) -> None:
        if not self._outputs[stage]:
            return
        logits, labels, indices = self._gather(stage)
        if self.trainer.sanity_checking:
            return
        probs = logits.softmax(dim=1)
        report = classification_report(probs, labels, self.names)
        report["loss"] = float(F.cross_entropy(logits, labels, weight=self.class_weights))
        used = next((m for m in self.selection_order if not math.isnan(report[m])), None)
        report["selection_metric"] = used
        report["selection"] = report[used] if used else math.nan
        values = {name: report[name] for name in (*SCALAR_METRICS, "loss", "selection")}
        values |= {f"{metric}/{name}": report[metric][name] for metric in PER_CLASS_METRICS for name in self.names}
        values |= {f"pred_count/{name}": count for name, count in zip(self.names, report["pred_counts"], strict=True)}
        values["collapsed"] = float(report["collapsed"])
        self.log_dict({f"{stage}/{k}": float(v) for k, v in values.items()}, sync_dist=False)
        if report["collapsed"]:
            log.warning("%s epoch %d: %s", stage, self.current_epoch, collapse_message(report, self.names))
        if report["auc_note"]:
            log.warning("%s epoch %d: %s", stage, self.current_epoch, report["auc_note"])
        if used != self.hparams.selection_metric:
            log.warning("%s: %s is undefined; model selection uses %s", stage, self.hparams.selection_metric, used)
        total, count = self._train_loss.tolist()
        report |= {"epoch": self.current_epoch, "train_loss": total / count if count else math.nan}
        report |= {"index": indices.cpu(), "probs": probs.cpu(), "target": labels.cpu()}
        self.reports[stage] = report

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
