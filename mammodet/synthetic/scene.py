"""One synthetic mammogram with its lesions' boxes, shared by the synthetic trees of the public datasets."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mammodet.data.labels import box_from_mask
from mammodet.synthetic.images import LesionSpec, breast_region, render_mammogram, sample_lesions

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Scene:
    """12-bit pixels (tissue bright), each lesion as rendered, its ROI mask and the box of that mask."""

    pixels: np.ndarray
    lesions: list[LesionSpec]
    masks: list[np.ndarray]
    boxes: list[Box]


def render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    side: str,
    view: str,
    kinds: list[str],
    *,
    density: float = 0.3,
    integer_centres: bool = False,
) -> Scene:
    """Render ``kinds`` ("mass" / "calcification") in a breast; ``integer_centres`` puts every lesion centre on
    whole pixel coordinates (for formats that store a centre as integers)."""
    breast = breast_region(rng, height, width, side, view)
    specs = sample_lesions(rng, breast, kinds.count("mass"), kinds.count("calcification"))
    by_kind = {k: [s for s in specs if s.kind == k] for k in ("mass", "calcification")}
    lesions = [by_kind[k].pop(0) for k in kinds]
    if integer_centres:
        lesions = [replace(s, center=(float(round(s.center[0])), float(round(s.center[1])))) for s in lesions]
    image = render_mammogram(rng, height, width, side, view, lesions, density=density, breast_mask=breast)
    boxes = [box_from_mask(mask) for mask in image.lesion_masks]
    return Scene(image.pixels, lesions, image.lesion_masks, boxes)
