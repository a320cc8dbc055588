"""Labels on predict's PNG and the validation images never overlap each other or leave the image (issue 20)."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from mammodet.models.drawing import _text_size, draw_detections, label_font, label_rects
from mammodet.serving.inference import Detections
from mammodet.serving.render import annotate


def many_close_and_edge_boxes(width: int, height: int) -> list[list[float]]:
    """A cluster of 30 boxes a few pixels apart, and boxes touching or crossing every edge and corner."""
    cluster = [[100 + 3 * i, 120 + 2 * i, 140 + 3 * i, 160 + 2 * i] for i in range(30)]
    edges = [
        [0, 0, 30, 30],
        [width - 30, 0, width + 10, 25],
        [-5, height - 20, 40, height],
        [width - 40, height - 40, width, height],
        [0, height / 2, 20, height / 2 + 20],
        [width - 15, 60, width, 90],
    ]
    return cluster + edges


def test_label_rects_never_overlap_and_stay_inside() -> None:
    width, height = 480, 640
    boxes = many_close_and_edge_boxes(width, height)
    sizes = [_text_size(label_font(height), f"calcification 0.{i:02d}") for i in range(len(boxes))]
    rects = label_rects(boxes, sizes, width, height)
    placed = [r for r in rects if r is not None]
    assert len(placed) == len(boxes)  # room for every label on this image
    assert all(0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height for x0, y0, x1, y1 in placed)
    for a, b in itertools.combinations(placed, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    assert [(r[2] - r[0], r[3] - r[1]) for r in placed] == sizes


def test_a_label_with_no_room_is_left_out() -> None:
    rects = label_rects([[0, 0, 10, 10]] * 3 + [[0, 0, 5, 5]], [(40, 10), (40, 10), (40, 10), (50, 10)], 40, 20)
    assert rects == [(0, 0, 40, 10), (0, 10, 40, 20), None, None]  # 2 fit a 40 x 20 image; one is wider


def test_drawn_labels_are_the_laid_out_rectangles() -> None:
    """The picture: each label's filled rectangle (red, black text) lies where ``label_rects`` put it."""
    width, height = 480, 640
    boxes = np.array(many_close_and_edge_boxes(width, height), float)
    scores = np.linspace(0.99, 0.5, len(boxes))
    detections = Detections(boxes, scores, np.full(len(boxes), 1), width, height)
    picture = annotate(np.zeros((height, width), np.float32), detections, 0.3)
    names = [f"calcification {score:.2f}" for score in scores]
    sizes = [_text_size(label_font(height), name) for name in names]
    rects = [r for r in label_rects(boxes.tolist(), sizes, width, height) if r is not None]
    assert len(rects) == len(boxes)
    red = (picture[..., 0] == 255) & (picture[..., 1] == 0) & (picture[..., 2] == 0)
    dark_red = (picture[..., 0] < 128) & (picture[..., 1] == 0) & (picture[..., 2] == 0)
    for x0, y0, x1, y1 in rects:  # each label: a red rectangle (mostly) with dark text, where it was laid out
        assert red[y0:y1, x0:x1].mean() > 0.5 and dark_red[y0:y1, x0:x1].any()


def test_validation_images_label_ground_truth_and_predictions_apart() -> None:
    image = torch.zeros(1, 64, 96, dtype=torch.uint8)
    box = torch.tensor([[10.0, 10.0, 40.0, 40.0]])
    drawn = draw_detections(
        image,
        {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([2])},
        {"boxes": box, "labels": torch.tensor([2])},
    )
    assert drawn.shape == (3, 64, 96) and drawn.dtype == torch.uint8
    green = (drawn[1] == 255) & (drawn[0] == 0)
    red = (drawn[0] == 255) & (drawn[1] == 0)
    assert green.any() and red.any()
