"""Class labels for abnormalities and boxes derived from ROI masks."""

from __future__ import annotations

import numpy as np

from mammodet.data.cbis import CaseRow
from mammodet.data.classes import LABEL_IDS

MASS_RULES = ("birads4", "pathology")
"""``birads4``: a mass is ``mass_high`` when its BI-RADS assessment is >= 4 (the default; a mass without an
assessment falls back to its pathology, BI-RADS 0 follows ``birads0``); ``pathology``: a mass is ``mass_high``
when it is MALIGNANT."""

BIRADS0_RULES = ("pathology", "mass_low", "mass_high")
"""What a BI-RADS 0 mass ("incomplete: needs more imaging", no suspicion level) becomes under ``birads4``:
``pathology`` (the default: ``mass_high`` when MALIGNANT, else ``mass_low``), or always ``mass_low`` /
``mass_high``. The real CSVs hold 162 such masses (129 official train, 33 test), 22 of them MALIGNANT."""

Box = tuple[float, float, float, float]


def lesion_label(row: CaseRow, mass_rule: str = "birads4", birads0: str = "pathology") -> int:
    """The detector label id (1..3) of one abnormality under the chosen mass rule and BI-RADS 0 rule."""
    if birads0 not in BIRADS0_RULES:
        raise ValueError(f"unknown birads0 rule {birads0!r}; choose one of {BIRADS0_RULES}")
    if row.abnormality_type == "calcification":
        return LABEL_IDS["calcification"]
    if mass_rule == "birads4" and row.assessment == 0 and birads0 != "pathology":
        return LABEL_IDS[birads0]
    if mass_rule == "birads4" and row.assessment not in (None, 0):
        high = row.assessment >= 4
    elif mass_rule in MASS_RULES:  # pathology rule, a mass without assessment, or BI-RADS 0 by pathology
        high = row.pathology == "MALIGNANT"
    else:
        raise ValueError(f"unknown mass_rule {mass_rule!r}; choose one of {MASS_RULES}")
    return LABEL_IDS["mass_high" if high else "mass_low"]


def box_from_mask(mask: np.ndarray) -> Box | None:
    """The extent ``[x0, y0, x1, y1]`` of a mask's non-zero pixels (x1, y1 exclusive), or None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def rescale_box(
    box: Box, mask_shape: tuple[int, int], image_shape: tuple[int, int], tolerance: float = 0.01
) -> Box | None:
    """Map a box from a mask's pixel grid to its image's; None when the aspect ratios differ.

    CBIS-DDSM has masks whose size differs from their mammogram. When both have the same aspect ratio
    (within ``tolerance``, relative) the mask is a scaled copy and its box scales; otherwise the mask
    cannot be placed and the caller skips and reports it.
    """
    (mh, mw), (ih, iw) = mask_shape, image_shape
    if (mh, mw) == (ih, iw):
        return box
    sy, sx = ih / mh, iw / mw
    if abs(sy - sx) > tolerance * max(sy, sx):
        return None
    x0, y0, x1, y1 = box
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
