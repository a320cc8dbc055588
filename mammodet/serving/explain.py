"""Grad-CAM heat maps of detections: where the features that gave each lesion its score lie.

pytorch-grad-cam's ``GradCAM`` with its ``FasterRCNNBoxScoreTarget`` (the score of the output box that matches
the lesion, plus their IoU) on the FPN's output convolutions, every pyramid level: a box is pooled from the
level its size picks, the other levels get no gradient and add nothing. The map is computed on the model
input and laid over the original image, inside the breast crop.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

from mammodet.data.preprocess import map_boxes
from mammodet.serving.inference import Detections, Detector, Prepared
from mammodet.serving.render import annotate


def heat_maps(detector: Detector, prepared: Prepared, detections: Detections) -> list[np.ndarray]:
    """One Grad-CAM map per detection, ``(H, W)`` float 0..1 over the original image (0 outside the crop)."""
    model_boxes = map_boxes(detections.boxes, prepared.crop_box, prepared.scale)
    _, height, width = prepared.tensor.shape
    image = padded_input(detector.model, prepared.tensor)[None].contiguous()
    cam = GradCAM(model=detector.model, target_layers=list(detector.model.backbone.fpn.layer_blocks))
    try:  # not GradCAM's context manager: its exit swallows IndexError
        maps = []
        for box, label in zip(model_boxes, detections.labels, strict=True):
            target = FasterRCNNBoxScoreTarget([int(label)], [torch.as_tensor(box, dtype=torch.float32)])
            heat = cam(input_tensor=image, targets=[target])[0][:height, :width]  # the padding cut off
            maps.append(_on_original(heat / max(float(heat.max()), 1e-7), prepared))
    finally:
        cam.activations_and_grads.release()
        detector.model.zero_grad(set_to_none=True)
    return maps


def padded_input(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """``image`` padded at the right and bottom to the model's ``size_divisible``, with the value that normalises
    to 0: the very tensor the model pads itself, so detections are unchanged, but Grad-CAM now sees its size.

    Grad-CAM resizes each feature map to the size of the tensor it was given: given the unpadded image, it
    stretched maps that cover the padded one over it, moving the map and its padding (where the image's edge
    against the padding makes strong features) onto the image: the hottest region sat at the crop border.
    """
    transform = model.transform
    divisor = transform.size_divisible
    _, height, width = image.shape
    out = torch.empty((3, -(-height // divisor) * divisor, -(-width // divisor) * divisor), dtype=image.dtype)
    out[:] = torch.as_tensor(transform.image_mean, dtype=image.dtype)[:, None, None]
    out[:, :height, :width] = image
    return out


def _on_original(small: np.ndarray, prepared: Prepared) -> np.ndarray:
    """A map over the model input, resized into the crop box of a zero map of the original image's size."""
    height, width = prepared.image.shape
    x0, y0, x1, y1 = prepared.crop_box or (0, 0, width, height)
    full = np.zeros((height, width), np.float32)
    full[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return full


def explain_file(
    detector: Detector, path: str | Path, score_thresh: float, max_lesions: int
) -> tuple[list[np.ndarray], float | None]:
    """RGB uint8 pictures, one per detection scoring at least ``score_thresh`` (best ``max_lesions`` first):
    the image with that lesion's heat map and box; and the best detection's score (None: no detection at all),
    so a caller can say what threshold would have shown something."""
    prepared = detector.prepare(path)
    detections = detector.run([prepared])[0]
    best = float(detections.scores[0]) if len(detections.scores) else None
    shown = detections.above(score_thresh).select(slice(0, max_lesions))
    gray = np.repeat(np.clip(prepared.image, 0, 1)[..., None], 3, axis=2)
    pictures = []
    for k, heat in enumerate(heat_maps(detector, prepared, shown)):
        overlay = show_cam_on_image(gray, heat, use_rgb=True, image_weight=0.6)
        pictures.append(annotate(overlay, shown.select(slice(k, k + 1)), 0.0))
    return pictures, best
