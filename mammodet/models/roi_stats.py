"""Fast R-CNN classification accuracy on the sampled ROI proposals (Detectron2's ``fast_rcnn/*`` scalars).

torchvision's ``RoIHeads`` returns only the losses, so :class:`RoISampleRecorder` watches a training
forward pass through three forward hooks, without touching torchvision's code:

1. a pre-hook on ``roi_heads`` keeps the targets it receives (boxes already resized by the transform, so in
   the proposals' frame);
2. a pre-hook on ``roi_heads.box_roi_pool`` keeps the proposals it pools: in training these are exactly the
   ones ``select_training_samples`` sampled (positives and negatives, ground-truth boxes included);
3. a hook on ``roi_heads.box_predictor`` keeps the ``class_logits`` that ``fastrcnn_loss`` scores.

The class each sampled proposal was trained towards is then recomputed with torchvision's own
``roi_heads.assign_targets_to_proposals``: the assignment of a proposal depends only on its IoU with the
ground truth, so on the sampled subset it gives the labels the loss used.

While ``active`` is False the hooks keep nothing: ``FasterRCNNModule`` turns it on only for the steps it logs
(``log_every_n_steps``), so the other steps pay neither the assignment nor the read-back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads


def fast_rcnn_accuracy(class_logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Detectron2's Fast R-CNN accuracies over sampled proposals (background is label 0 here).

    ``cls_accuracy``: fraction whose arg-max class is their assigned class; ``fg_cls_accuracy``: the same among
    foreground proposals; ``false_negative``: fraction of foreground proposals predicted as background. The
    foreground ones are left out when no proposal is foreground, and all are when there is no proposal.
    """
    if labels.numel() == 0:
        return {}
    predicted = class_logits.argmax(dim=1)
    result = {"cls_accuracy": (predicted == labels).float().mean()}
    foreground = labels > 0
    if bool(foreground.any()):
        result["fg_cls_accuracy"] = (predicted[foreground] == labels[foreground]).float().mean()
        result["false_negative"] = (predicted[foreground] == 0).float().mean()
    return result


class RoISampleRecorder:
    """Record what the box head saw in the last training forward pass; see the module docstring."""

    def __init__(self, roi_heads: RoIHeads) -> None:
        self.roi_heads = roi_heads
        self.active = True
        self._targets: list[dict[str, Tensor]] | None = None
        self._proposals: list[Tensor] | None = None
        self._class_logits: Tensor | None = None
        roi_heads.register_forward_pre_hook(self._on_roi_heads)
        roi_heads.box_roi_pool.register_forward_pre_hook(self._on_box_roi_pool)
        roi_heads.box_predictor.register_forward_hook(self._on_box_predictor)

    def _on_roi_heads(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        # RoIHeads.forward(features, proposals, image_shapes, targets)
        if self.active and module.training and len(args) > 3 and args[3] is not None:
            self._targets = [{"boxes": t["boxes"].detach(), "labels": t["labels"]} for t in args[3]]

    def _on_box_roi_pool(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        # MultiScaleRoIAlign.forward(features, proposals, image_shapes)
        if self.active and self.roi_heads.training:
            self._proposals = [p.detach() for p in args[1]]

    def _on_box_predictor(self, module: nn.Module, args: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        if self.active and self.roi_heads.training:
            self._class_logits = output[0].detach()

    def sampled_labels(self) -> tuple[Tensor, Tensor] | None:
        """``(class_logits [R, C], assigned labels [R])`` of the last training pass, then forget them."""
        targets, proposals, class_logits = self._targets, self._proposals, self._class_logits
        self._targets = self._proposals = self._class_logits = None
        if targets is None or proposals is None or class_logits is None:
            return None
        with torch.no_grad():
            gt_boxes = [t["boxes"].to(proposals[0].dtype) for t in targets]
            gt_labels = [t["labels"] for t in targets]
            _, labels = self.roi_heads.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        return class_logits, torch.cat(labels)

    def accuracy(self) -> dict[str, Tensor]:
        """:func:`fast_rcnn_accuracy` of the last training pass (empty when none was recorded)."""
        recorded = self.sampled_labels()
        return {} if recorded is None else fast_rcnn_accuracy(*recorded)
