"""Image geometry shared by conversion, loading and augmentation: breast crop, resize, the box clip rule and the
white level."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Box = tuple[float, float, float, float]


def white_level(dtype: np.dtype | str) -> float:
    """The stored value of white: the integer maximum (255 for uint8, 65535 for uint16), or 1.0 for float
    images; the one definition every reader, writer and augmentation scales by."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def visible_boxes(boxes: np.ndarray, width: int, height: int, min_visibility: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (xyxy, pixel edges) clipped to a ``width`` x ``height`` image, and the mask of those kept: the box
    clip rule of crops, the affine and albumentations pipelines. A box is kept when some of it is inside and at
    least ``min_visibility`` of its area is."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    clipped = boxes.clip(0, np.array([width, height, width, height], dtype=np.float32))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    return clipped, (visible > 0) & (visible >= min_visibility * area)


def breast_box(image: np.ndarray, margin: int = 8) -> tuple[int, int, int, int]:
    """The bounding box ``[x0, y0, x1, y1]`` of the breast: the largest bright region once thin structures are gone.

    On a copy whose longer side is 512 pixels, tissue is what is brighter than half Otsu's threshold (half: the
    faint skin line and fatty edge stay in). An opening with a disc of 2.5 % of the longer side removes what is
    thinner than that: film markers ("RMLO"), scanner labels and the bright film edges that would otherwise join
    the breast to the image border. The largest remaining component, grown back by the same disc within the
    thresholded tissue, is the breast; ``margin`` pixels are added around it. Falls back to the whole image when
    nothing is found. The image is first brought to 8 bits (float in [0, 1] and uint16 scaled to 0..255), so a
    float image and its 8-bit conversion get the same box.
    """
    h, w = image.shape
    if image.dtype == np.uint16:
        image = np.rint(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    scale = min(1.0, 512 / max(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    small8 = cv2.normalize(small, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    otsu, _ = cv2.threshold(small8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    tissue = (small8 > otsu / 2).astype(np.uint8)
    size = max(3, round(max(small.shape) * 0.025)) | 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    opened = cv2.morphologyEx(tissue, cv2.MORPH_OPEN, disc)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n <= 1:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(tissue, connectivity=8)  # only thin structures
        if n <= 1:
            return (0, 0, w, h)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = cv2.dilate((labels == largest).astype(np.uint8), disc) & tissue
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    x0 = max(0, int(np.floor(cols[0] / scale)) - margin)
    y0 = max(0, int(np.floor(rows[0] / scale)) - margin)
    x1 = min(w, int(np.ceil((cols[-1] + 1) / scale)) + margin)
    y1 = min(h, int(np.ceil((rows[-1] + 1) / scale)) + margin)
    return (x0, y0, x1, y1)


def crop_box_covering(image: np.ndarray, boxes: Sequence[Box], margin: int = 8) -> tuple[int, int, int, int]:
    """The breast box grown to contain every lesion box, so a crop never cuts a lesion."""
    x0, y0, x1, y1 = breast_box(image, margin)
    h, w = image.shape
    for bx0, by0, bx1, by1 in boxes:
        x0, y0 = min(x0, max(0, int(np.floor(bx0)))), min(y0, max(0, int(np.floor(by0))))
        x1, y1 = max(x1, min(w, int(np.ceil(bx1)))), max(y1, min(h, int(np.ceil(by1))))
    return (x0, y0, x1, y1)


def resize_scale(height: int, width: int, max_side: int | None) -> float:
    """The factor that brings the longer side down to ``max_side`` (never up); 1.0 when None."""
    if not max_side or max(height, width) <= max_side:
        return 1.0
    return max_side / max(height, width)


def crop_and_resize(
    image: np.ndarray, crop_box: tuple[int, int, int, int] | None, max_side: int | None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Crop to ``crop_box`` (source pixels) then shrink to ``max_side``; returns the image and (sx, sy).

    The per-axis scales are the exact ratios of output to input size, so boxes map without rounding drift.
    """
    if crop_box is not None:
        x0, y0, x1, y1 = crop_box
        image = image[y0:y1, x0:x1]
    h, w = image.shape[:2]
    scale = resize_scale(h, w, max_side)
    if scale == 1.0:
        return np.ascontiguousarray(image), (1.0, 1.0)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, (size[0] / w, size[1] / h)


def map_boxes(boxes: np.ndarray, crop_box: Sequence[int] | None, scale: tuple[float, float]) -> np.ndarray:
    """Source-pixel boxes to output-pixel boxes: shift by the crop origin, then scale by (sx, sy)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if crop_box is not None:
        boxes = boxes - np.array([crop_box[0], crop_box[1], crop_box[0], crop_box[1]], dtype=np.float64)
    return boxes * np.array([scale[0], scale[1], scale[0], scale[1]])


def unmap_boxes(boxes: np.ndarray, crop_box: Sequence[int] | None, scale: tuple[float, float]) -> np.ndarray:
    """Output-pixel boxes back to source (DICOM) pixels: the inverse of ``map_boxes``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / np.array([scale[0], scale[1], scale[0], scale[1]])
    if crop_box is not None:
        boxes = boxes + np.array([crop_box[0], crop_box[1], crop_box[0], crop_box[1]], dtype=np.float64)
    return boxes
