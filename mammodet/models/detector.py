"""``DetectorModule``: train, validate, test and predict with any registered torchvision-style detector in Lightning.

Batches follow torchvision (``docs/architecture.md``): ``(images, targets)`` with ``images`` a list of
``[3, H, W]`` float tensors in 0..1 and ``targets`` a list of ``dict(boxes [N, 4] xyxy, labels [N], ...)``. The
datasets' images arrive as stored (``[1, H, W]`` uint8, uint16 or float) and become those float images on the
device, in ``forward`` (``mammodet.data.detection_dataset.model_input``).
The training step is torchvision's reference loop: the model returns its losses, their sum is the loss.
Optimisation is automatic; gradient clipping and precision are set on the Trainer by the config,
``channels_last``, ``compile`` and ``size_divisible`` on this module.

Nothing on the training hot path waits for the GPU (see ``docs/training.md``): a non-finite loss or gradient
makes the fused SGD step a no-op on the device (``optimizer.found_inf``, as ``GradScaler`` does), its counters
stay on the device, and the logs (losses, the family's statistics such as Faster R-CNN's RoI accuracy, step and
data-wait times, non-finite counts) are made
every ``trainer.log_every_n_steps`` steps only, where Lightning reads them back anyway.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import torch
from lightning import LightningModule
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from mammodet.data.classes import CLASSES, LABEL_NAMES, NUM_CLASSES
from mammodet.data.detection_dataset import model_input
from mammodet.errors import UserError
from mammodet.metrics import DetectionEvaluator
from mammodet.models.builders import build_detector
from mammodet.models.drawing import log_detections
from mammodet.models.hparams import require_plain
from mammodet.models.optim import SCHEDULERS, lr_factor, parameter_groups
from mammodet.models.registry import get_model
from mammodet.models.step_state import IntervalTimer, StepCounters

log = logging.getLogger(__name__)

Batch = tuple[list[Tensor], list[dict[str, Any]]]


LEGACY_ARCHS = {
    "fasterrcnn_resnet50_fpn": "frcnn_r50",
    "fasterrcnn_resnet50_fpn_v2": "frcnn_r50_v2",
    "fasterrcnn_resnet18_fpn": "frcnn_small",
    "fasterrcnn_mobilenet_v3_large_fpn": "frcnn_mobilenet_v3_large",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "frcnn_mobilenet_v3_large_320",
}
"""``arch`` of checkpoints written before the model registry -> the model name that builds the same modules."""


class DetectorModule(LightningModule):
    """Lesion detector of any registered family: torchvision model, SGD with warmup, COCO mAP on validation and test.

    Every argument is a plain value, saved as a hyperparameter (with the model name and backbone resolved), so
    ``load_from_checkpoint(path)`` rebuilds the module and ``torch.load(path, weights_only=True)`` reads the
    checkpoint.

    Args:
        model_name: a registered model (``frcnn_r50``, ``frcnn_r50_v2``, ``retinanet_r50_v2``, ``fcos_r50``,
            ``frcnn_small``, ``retinanet_small``, ``fcos_small`` or a plugin's; see ``mammodet.models.registry``).
            None: ``frcnn_r50``.
        backbone: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``mobilenet_v3_large``,
            ``efficientnet_b0`` or ``convnext_tiny`` (None: the model's default).
        num_classes: detector outputs including background.
        weights: ``"none"``, ``"coco"`` (torchvision's COCO weights, class head swapped for a ``num_classes``
            one) or a path to a torchvision COCO or mammodet checkpoint.
        backbone_weights: ``"none"``, ``"imagenet"`` or a path to a classification state dict.
        trainable_backbone_layers: backbone stages trained when starting from pretrained weights (None: 3).
        min_size, max_size: with ``resize_in_model``, images are resized so the short side is ``min_size``
            unless the long side would exceed ``max_size``.
        image_mean, image_std: per-channel normalisation (None: ImageNet's); a grayscale image repeated to
            3 channels can use the same value three times.
        lr: base learning rate (torchvision's recipe uses 0.02 for 16 images per step; scale linearly).
        momentum, weight_decay: SGD's.
        norm_bias_weight_decay: weight decay of normalisation weights and biases (None: ``weight_decay``).
        scheduler: ``multistep`` or ``cosine``, after a linear warmup; stepped every optimizer step.
        warmup_steps, warmup_factor: warmup length in steps and its starting factor.
        milestones: ``multistep`` steps at which the learning rate is multiplied by ``gamma``
            (None: 2/3 and 8/9 of the total steps, Detectron2's "1x" proportions).
        gamma: ``multistep`` factor.
        max_steps: total optimizer steps of the schedule (None: the Trainer's estimated stepping batches).
        max_nonfinite_in_a_row: after this many consecutive non-finite losses training stops with an error.
        n_log_images: validation images drawn to TensorBoard (the first ones of the first batch).
        eval_score_thresh: score threshold of the validation and test precision/recall/F1 (as ``evaluate``'s
            ``score_threshold``).
        load_pretrained: read/download ``weights`` and ``backbone_weights`` when building. Checkpoints store
            False, so restoring one never downloads: its state dict replaces those weights anyway.
        resize_in_model: keep torchvision's internal resize to ``min_size``/``max_size`` (default False: the
            data pipeline already gives crops and whole images at the training scale).
        size_divisible: batches are zero-padded to a multiple of this (None: torchvision's 32). A larger value
            (the recipe's 256) puts whole images of varying size into a few shapes, so ``trainer.benchmark``
            (cuDNN autotuning) tunes each bucket once instead of every new validation image.
        channels_last: store the convolution weights channels-last (NHWC), so cuDNN runs its tensor-core
            kernels without layout conversions under mixed precision.
        compile: ``torch.compile`` the backbone (and FPN) when training starts; the state dict keys do not change.
        arch: the torchvision architecture name that checkpoints written before the model registry hold
            (``LEGACY_ARCHS``); new code gives ``model_name``.
        **settings: the family's settings (anchors, RPN/box-head or head thresholds, ``detector_kwargs``): the
            fields of the family's settings class (``FasterRCNNSettings``, ``RetinaNetSettings``,
            ``FCOSSettings``); None: the model's default.
    """

    def __init__(
        self,
        model_name: str | None = None,
        backbone: str | None = None,
        num_classes: int = NUM_CLASSES,
        weights: str = "none",
        backbone_weights: str = "none",
        trainable_backbone_layers: int | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        norm_bias_weight_decay: float | None = None,
        scheduler: str = "multistep",
        warmup_steps: int = 1000,
        warmup_factor: float = 0.001,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        max_steps: int | None = None,
        max_nonfinite_in_a_row: int = 20,
        n_log_images: int = 4,
        eval_score_thresh: float = 0.5,
        load_pretrained: bool = True,
        resize_in_model: bool = False,
        size_divisible: int | None = None,
        channels_last: bool = False,
        compile: bool = False,
        arch: str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {SCHEDULERS}")
        if arch is not None:
            if arch not in LEGACY_ARCHS:
                raise UserError(f"arch={arch}: no registered model builds it; choose one of {sorted(LEGACY_ARCHS)}")
            if model_name is not None and model_name != LEGACY_ARCHS[arch]:
                raise UserError(f"arch={arch} and model_name={model_name} disagree; give model_name only")
            model_name = LEGACY_ARCHS[arch]
        model_name = model_name or "frcnn_r50"
        self.entry = get_model(model_name)
        backbone = backbone or self.entry.backbone
        self.save_hyperparameters(ignore=["arch"])
        self.hparams["model_name"], self.hparams["backbone"] = model_name, backbone
        require_plain(dict(self.hparams), "hyperparameters")
        self.model = build_detector(
            model_name,
            backbone=backbone,
            num_classes=num_classes,
            weights=weights,
            backbone_weights=backbone_weights,
            trainable_backbone_layers=trainable_backbone_layers,
            load_pretrained=load_pretrained,
            resize_in_model=resize_in_model,
            transform={
                "min_size": min_size,
                "max_size": max_size,
                "image_mean": image_mean,
                "image_std": image_std,
                "size_divisible": size_divisible,
            },
            settings=settings,
        )
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.train_stats = self.entry.train_stats(self.model)
        self.val_evaluator = self._evaluator()
        self.test_evaluator = self._evaluator()
        self.nonfinite_skipped = 0
        self._nonfinite_in_a_row = 0
        self._nonfinite = StepCounters()
        self._timer = IntervalTimer()
        self._last_loss: Tensor | None = None
        self._logging = False

    def _evaluator(self) -> DetectionEvaluator:
        """The validation or test evaluator: the ``DetectionEvaluator`` of ``evaluate`` (COCO mAP, F1 at
        ``eval_score_thresh``, FROC), whose flat dict is logged as ``<stage>/<key>``."""
        names = [LABEL_NAMES.get(label, str(label)) for label in range(1, self.hparams.num_classes)]
        return DetectionEvaluator(names, score_threshold=self.hparams.eval_score_thresh)

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        """The torchvision model: predictions in eval mode, the loss dict in train mode (with targets).

        ``images`` come as the datasets store them (``[1, H, W]`` uint8 or uint16, a twelfth of the bytes of a
        three-channel float image for uint8, all the way to the device) or as float images; ``model_input`` makes
        the float ``[3, H, W]`` images here, on the device."""
        return self.model([model_input(image) for image in images], targets)

    # ---------------------------------------------------------------- training

    def setup(self, stage: str) -> None:
        """Compile the backbone for training when ``compile`` is set (lazily: at its first call)."""
        if stage == "fit" and self.hparams.get("compile", False):
            self.model.backbone.compile()

    def _logging_step(self) -> bool:
        """Whether the step about to run is one Lightning writes to the loggers (``log_every_n_steps``; asked
        before the optimizer step, like Lightning's own test)."""
        every = self.trainer.log_every_n_steps
        return bool(self.trainer.fast_dev_run) or (every > 0 and (self.global_step + 1) % every == 0)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Sum the model's losses; log them (and the family's statistics) at the logging interval only.

        A non-finite loss is not read back here: ``configure_gradient_clipping`` turns it into a skipped step
        on the device.
        """
        images, targets = batch
        logging = self._logging = self._logging_step()
        self.train_stats.active = logging
        loss_dict = self(images, targets)
        loss = sum(loss_dict.values())
        self._last_loss = loss.detach()
        if logging:
            batch_size = len(images)
            values: dict[str, Tensor | float] = {f"train/{name}": value.detach() for name, value in loss_dict.items()}
            values["train/loss"] = loss.detach()
            values["train/lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
            values.update({f"train/{name}": value for name, value in self.train_stats.values().items()})
            self.log_dict(values, on_step=True, on_epoch=False, batch_size=batch_size)
        return loss

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip as configured, then mark the step non-finite on the device when the loss or the gradient norm is.

        The fused SGD of ``configure_optimizers`` reads ``optimizer.found_inf`` and leaves parameters and momentum
        unchanged where it is 1, with no host read. It is used without a GradScaler only (32-true, bf16-mixed), so
        its gradients are clipped here with torch's functions: Lightning's mixed-precision plugin refuses to clip
        for any fused optimizer, scaler or not. Under ``16-mixed`` (plain SGD) Lightning clips the unscaled
        gradients and the GradScaler skips non-finite steps itself. The counts reach the host at the logging
        interval (``on_train_batch_end``).
        """
        fused = bool(optimizer.defaults.get("fused"))
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = None
        if not fused:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        elif gradient_clip_val and gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        elif gradient_clip_val:
            norm = torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
        if norm is None:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
        finite = torch.isfinite(norm)
        if self._last_loss is not None:
            finite = finite & torch.isfinite(self._last_loss)
        found_inf = (~finite).to(self.device, torch.float32)
        if fused:
            optimizer.found_inf = found_inf
        self._nonfinite.update(found_inf)

    def on_train_epoch_start(self) -> None:
        """Start the data-wait clock: the first batch's wait includes starting the dataloader."""
        self._timer.restart()

    def on_validation_end(self) -> None:
        """Restart the data-wait clock so that validation in the middle of an epoch is not counted."""
        self._timer.restart()

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        """Add the time since the previous step ended (waiting for this batch) to the interval's data wait."""
        self._timer.batch_start()

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        """At the logging interval: log the mean ``train/step_s`` (compute) and ``train/data_wait_s`` per step over
        the interval, and ``train/nonfinite_skipped``; raise after ``max_nonfinite_in_a_row`` skipped steps.

        Times are host wall time over the interval, without synchronising the GPU: Lightning's read-back of the
        logged values at each interval makes the host wait for the GPU there, so their mean per step is exact in
        a steady state (the GPU work of the last steps lands in the next interval).
        """
        self._timer.batch_end()
        if not self._logging:
            return
        batch_size = len(batch[0])
        step_s, wait_s = self._timer.interval()
        if step_s is not None:
            self.log("train/step_s", step_s, on_step=True, on_epoch=False, batch_size=batch_size)
            self.log("train/data_wait_s", wait_s, on_step=True, on_epoch=False, batch_size=batch_size)
        total, in_a_row = self._nonfinite.read()
        if total > self.nonfinite_skipped:
            log.warning(
                "%d non-finite losses or gradients up to step %d (%d in a row): those steps were skipped",
                total - self.nonfinite_skipped,
                self.global_step,
                in_a_row,
            )
        self.nonfinite_skipped, self._nonfinite_in_a_row = total, in_a_row
        self.log("train/nonfinite_skipped", float(total), on_step=True, on_epoch=False, batch_size=batch_size)
        if in_a_row >= self.hparams.max_nonfinite_in_a_row:
            raise RuntimeError(
                f"{in_a_row} non-finite losses in a row (max_nonfinite_in_a_row="
                f"{self.hparams.max_nonfinite_in_a_row}), last at step {self.global_step - 1}. Training diverged: "
                "lower lr, lengthen warmup_steps, or check the data for NaN pixels or degenerate boxes."
            )

    def configure_optimizers(self) -> dict[str, Any]:
        """SGD with momentum (fused: it skips non-finite steps on the device; foreach under a GradScaler, whose
        unscaling Lightning does before clipping); warmup then multistep or cosine, stepped every optimizer step."""
        hp = self.hparams
        fused = getattr(self.trainer.precision_plugin, "scaler", None) is None
        groups = parameter_groups(self.model, hp.weight_decay, hp.norm_bias_weight_decay)
        optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, fused=fused)
        if fused and hp.momentum:
            # Fused SGD allocates momentum buffers uninitialised at its first step, even one it skips: zeros give the
            # same first update (buffer = gradient) and make a skipped first step harmless.
            for group in groups:
                for parameter in group["params"]:
                    optimizer.state[parameter]["momentum_buffer"] = torch.zeros_like(parameter)
        max_steps = hp.max_steps
        if max_steps is None:
            estimated = self.trainer.estimated_stepping_batches
            if not math.isfinite(estimated):
                raise ValueError("set max_steps (module or Trainer) or max_epochs: the schedule needs a length")
            max_steps = int(estimated)
        milestones = hp.milestones if hp.milestones is not None else [max_steps * 2 // 3, max_steps * 8 // 9]
        schedule = functools.partial(
            lr_factor,
            warmup_steps=hp.warmup_steps,
            warmup_factor=hp.warmup_factor,
            scheduler=hp.scheduler,
            milestones=list(milestones),
            gamma=hp.gamma,
            max_steps=max_steps,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": LambdaLR(optimizer, schedule), "interval": "step", "frequency": 1},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store ``load_pretrained=False`` (the checkpoint holds the weights, restoring it must not download) and
        the class names, which ``mammodet.models.checkpoint.check_classes`` compares at load time."""
        checkpoint["hyper_parameters"]["load_pretrained"] = False
        checkpoint["classes"] = list(CLASSES)

    # ---------------------------------------------------------------- evaluation

    def _update_evaluator(
        self, evaluator: DetectionEvaluator, predictions: list[dict[str, Tensor]], targets: list[dict[str, Any]]
    ) -> None:
        """Feed one batch to the evaluator (it keeps NumPy copies on the CPU)."""
        evaluator.update(predictions, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])

    def _log_evaluator(self, evaluator: DetectionEvaluator, stage: str) -> None:
        """Gather every process's images (DDP), compute, log the flat dict as ``<stage>/<key>`` and reset."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, evaluator.state())
            evaluator.merge_states(states)
        values = evaluator.compute()
        evaluator.reset()
        self.log_dict({f"{stage}/{key}": float(value) for key, value in values.items()})

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Predict whole images, update the evaluator, and draw the first batch to TensorBoard."""
        images, targets = batch
        predictions = self(images)
        self._update_evaluator(self.val_evaluator, predictions, targets)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            log_detections(self.loggers, images, predictions, targets, self.hparams.n_log_images, self.global_step)

    def on_validation_epoch_end(self) -> None:
        """Log the evaluator's dict: ``val/map``, ``val/map_50``, ``val/map_75``, ``val/mar_100``, ``val/ap_10``,
        ``val/ap/<class>``, ``val/ap_50/<class>``, ``val/f1_macro``, ``val/f1/<class>``, ``val/froc_cpm``,
        ``val/sens_at_1fp``, ... (any can be ``optimized_metric``; list in ``docs/evaluation.md``)."""
        self._log_evaluator(self.val_evaluator, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Predict whole images and update the test evaluator."""
        images, targets = batch
        self._update_evaluator(self.test_evaluator, self(images), targets)

    def on_test_epoch_end(self) -> None:
        """Log the ``test/...`` values (the keys of ``test_metrics.json``)."""
        self._log_evaluator(self.test_evaluator, "test")

    def predict_step(
        self, batch: Batch | list[Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> list[dict[str, Tensor]]:
        """Predictions ``dict(boxes [M, 4], scores [M], labels [M])`` per image, on the CPU.

        ``batch`` is a list of images (as stored or already float) or an ``(images, targets)`` pair (targets ignored).
        """
        images = batch if isinstance(batch[0], Tensor) else batch[0]
        return [{key: value.cpu() for key, value in p.items()} for p in self(images)]


FasterRCNNModule = DetectorModule
"""The name of ``DetectorModule`` before the model registry, kept for notebooks and scripts."""
