"""Training augmentations: one albumentations pipeline per run, composed from ``data.augment``, boxes following.

``data.augment`` either sets the default pipeline's probabilities and ranges (``hflip``, ``vflip``, ``affine``,
``brightness_contrast``, ``gamma`` and their limits: ``default_pipeline``) or composes any pipeline with Hydra
(``_target_: albumentations.Compose``, its ``transforms`` and ``bbox_params`` with ``format: pascal_voc`` and
``label_fields: [labels]``; ``conf/data/augment/albumentations.yaml`` is the default written out). albumentations
is the only path since it came within 2x of the hand-written one on the default operations (uint8 800-px
crops, 1.5 to 1.9x, ``bench/augment_cost.py``, docs/benchmarks.md).

Two things are this project's, not albumentations': boxes move with the pixels and are clipped and kept by
``mammodet.data.preprocess.visible_boxes`` at ``data.min_visibility`` (it replaces albumentations' own box filter,
after every transform and at the end, so ``bbox_params`` leaves ``min_visibility``, ``min_area``, ``min_width``,
``min_height`` and ``max_accept_ratio`` unset); and the pipeline is seeded from torch's generator before every
call, so ``seed_everything`` reproduces a run and every DataLoader worker (seeded differently by torch) draws
differently, where albumentations' own random state, copied into forked workers, repeats itself. uint8 and
float32 images go in as they are; uint16 ones (a 16-bit cache) go in as float32 in [0, 1] and come back as
uint16, albumentations' transforms taking uint8 and float32. albumentations is imported only when a pipeline is
built, so inference does not load it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mammodet.data.preprocess import visible_boxes, white_level

if TYPE_CHECKING:
    import albumentations as A

UNUSED_BBOX_PARAMS = {"min_area": 0.0, "min_visibility": 0.0, "min_width": 0.0, "min_height": 0.0}
"""``bbox_params`` filters that ``data.min_visibility`` replaces, with the defaults they must keep."""


def default_pipeline(
    hflip: float = 0.5,
    vflip: float = 0.5,
    affine: float = 0.3,
    scale: Sequence[float] = (0.9, 1.1),
    translate: float = 0.05,
    brightness_contrast: float = 0.5,
    gamma: float = 0.3,
    brightness_limit: float = 0.1,
    contrast_limit: float = 0.1,
    gamma_limit: Sequence[float] = (0.8, 1.2),
) -> A.Compose:
    """Flips, a small scale/translate affine, brightness/contrast and gamma, each with its probability: per-axis
    scale in ``scale``, shift up to ``translate`` of the side, zero fill; contrast 1 +- ``contrast_limit``,
    brightness +- ``brightness_limit`` of white, gamma in ``gamma_limit``."""
    import albumentations as A

    return A.Compose(
        [
            A.HorizontalFlip(p=hflip),
            A.VerticalFlip(p=vflip),
            A.Affine(scale=tuple(scale), translate_percent=(-translate, translate), p=affine),
            A.RandomBrightnessContrast(
                brightness_limit=brightness_limit, contrast_limit=contrast_limit, p=brightness_contrast
            ),
            A.RandomGamma(gamma_limit=tuple(100 * g for g in gamma_limit), p=gamma),
        ],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
    )


def clip_rule_filter(data: np.ndarray, shape: Mapping[str, int], min_visibility: float) -> np.ndarray:
    """albumentations' box filter as ``visible_boxes``: rows of normalised xyxy boxes (then label columns),
    clipped to the image, only those kept."""
    height, width = shape["height"], shape["width"]
    scale = np.array([width, height, width, height], dtype=np.float64)
    clipped, keep = visible_boxes(data[:, :4] * scale, width, height, min_visibility)
    kept = np.array(data[keep], copy=True)
    kept[:, :4] = clipped[keep] / scale
    return kept


class AlbumentationsAugment:
    """An ``albumentations.Compose`` with boxes (pascal_voc, ``labels``) as the training transform: the image
    keeps its dtype, boxes follow ``visible_boxes``, the randomness is torch's (see the module docstring)."""

    def __init__(self, pipeline: A.Compose, min_visibility: float) -> None:
        processor = pipeline.processors.get("bboxes")
        if processor is None:
            raise ValueError("data.augment: the albumentations.Compose needs bbox_params (format: pascal_voc)")
        params = processor.params
        if params.format != "pascal_voc" or "labels" not in (params.label_fields or []):
            raise ValueError(
                f"data.augment.bbox_params: need format: pascal_voc and label_fields: [labels]; got format: "
                f"{params.format}, label_fields: {params.label_fields}"
            )
        changed = [k for k, v in UNUSED_BBOX_PARAMS.items() if getattr(params, k) != v]
        if changed or params.max_accept_ratio is not None:
            raise ValueError(
                f"data.augment.bbox_params: {changed or ['max_accept_ratio']} are not used: boxes are clipped and "
                "kept by data.min_visibility; remove them"
            )
        # The processor is shared by every transform and nested compose of the pipeline: one rule everywhere.
        processor.filter = functools.partial(clip_rule_filter, min_visibility=min_visibility)
        self.pipeline, self.min_visibility = pipeline, min_visibility

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augment a 2-D image and its boxes (xyxy, pixel edges), seeded from torch's generator."""
        self.pipeline.set_random_seed(int(torch.randint(0, 2**62, ()).item()))
        stored = image.dtype
        if stored == np.uint16:
            image = image.astype(np.float32) / np.float32(white_level(stored))
        out = self.pipeline(
            image=image,
            bboxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        )
        result = out["image"]
        if stored == np.uint16:
            result = np.rint(np.clip(result, 0.0, 1.0) * white_level(stored)).astype(stored)
        boxes_out = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        return np.ascontiguousarray(result), boxes_out, np.asarray(out["labels"], dtype=np.int64).reshape(-1)


def composed(options: Mapping[str, Any]) -> A.Compose:
    """The pipeline a ``data.augment`` with a ``_target_`` (``enabled`` removed) describes, built by Hydra."""
    import albumentations as A
    import hydra
    from hydra.errors import InstantiationException

    try:
        pipeline = hydra.utils.instantiate(dict(options), _convert_="all")
    except InstantiationException as error:
        raise ValueError(f"data.augment: cannot build {options['_target_']}: {error}") from error
    if not isinstance(pipeline, A.Compose):
        raise ValueError(
            f"data.augment._target_: {options['_target_']} built a {type(pipeline).__name__}, "
            "not an albumentations.Compose"
        )
    return pipeline


DEFAULT_KEYS = tuple(inspect.signature(default_pipeline).parameters)
"""The ``data.augment`` keys of the default pipeline."""


def build_augment(options: Mapping[str, Any] | None, min_visibility: float) -> AlbumentationsAugment | None:
    """The training transform ``data.augment`` describes: none when ``enabled`` is false, the pipeline it
    composes when it has a ``_target_``, else ``default_pipeline`` with its keys; boxes kept by ``min_visibility``."""
    options = dict(options or {})
    if not options.pop("enabled", True):
        return None
    if "_target_" in options:
        return AlbumentationsAugment(composed(options), min_visibility)
    try:
        pipeline = default_pipeline(**options)
    except TypeError as error:
        raise ValueError(f"data.augment: {error} (keys: enabled, {', '.join(DEFAULT_KEYS)}; or a _target_)") from None
    return AlbumentationsAugment(pipeline, min_visibility)
