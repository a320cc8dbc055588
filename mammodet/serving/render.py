"""Pictures of results: the annotated PNG of ``mammodet.predict`` and the web page's preview image."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import torch

from mammodet.data.preprocess import crop_and_resize
from mammodet.models.drawing import draw_detections
from mammodet.serving.inference import Detections

NO_TARGET = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}


def annotate(image: np.ndarray, detections: Detections, score_thresh: float) -> np.ndarray:
    """``image`` (grayscale float 0..1, or RGB uint8) as RGB uint8 with the detections scoring at least
    ``score_thresh`` drawn in red and labelled with class and score, as on the validation images."""
    prediction = {
        "boxes": torch.as_tensor(detections.boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.as_tensor(detections.scores, dtype=torch.float32),
        "labels": torch.as_tensor(detections.labels, dtype=torch.int64),
    }
    pixels = torch.from_numpy(np.ascontiguousarray(image))
    tensor = pixels.permute(2, 0, 1).float() / 255 if pixels.ndim == 3 else pixels.float()[None].expand(3, -1, -1)
    return draw_detections(tensor, prediction, NO_TARGET, score_thresh).permute(1, 2, 0).numpy()


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a grayscale (H, W) or RGB (H, W, 3) uint8 image."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def preview_data_url(image: np.ndarray, max_side: int) -> str:
    """The image (float 0..1) shrunk to ``max_side`` as an 8-bit grayscale PNG ``data:`` URL, for the page."""
    small, _ = crop_and_resize(image, None, max_side)
    pixels = np.rint(np.clip(small, 0, 1) * 255).astype(np.uint8)
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")
