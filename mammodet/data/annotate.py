"""Boxes and labels of one mammogram, read from its ROI masks; lesions that cannot be located are returned as lost.

A lesion whose mask is missing, unreadable, empty or of another aspect ratio than its mammogram has no box. The
conversion then leaves the whole mammogram out: kept without the lesion, it would teach and score that lesion's
region as background.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mammodet.data.cbis import DataIssue, Mammogram
from mammodet.data.dicom import DEFAULT_MAX_PIXELS, DicomError, read_raw_pixels
from mammodet.data.labels import box_from_mask, lesion_label, rescale_box
from mammodet.data.layout import DicomLocator, LayoutError

_DATE = re.compile(r"\b\d{1,2}-\d{1,2}-\d{4}\b|\b(19|20)\d{6}\b")


def redact(text: str) -> str:
    """Remove date-like strings (TCIA folder names carry study dates) from a message before it is written."""
    return _DATE.sub("<date>", text)


@dataclass(frozen=True)
class Annotation:
    """One abnormality's box in source (DICOM) pixels, its label and its CSV attributes."""

    box: tuple[float, float, float, float]
    label: int
    abnormality_id: int
    abnormality_type: str
    pathology: str
    assessment: int | None
    subtlety: int | None
    mask_file: str = ""  # the ROI mask file the box was read from (checked when a conversion resumes)


@dataclass(frozen=True)
class LostLesion:
    """A CSV abnormality whose ROI mask gives no box: its label, id and why."""

    label: int
    abnormality_id: int
    abnormality_type: str
    reason: str


def annotate(
    mammogram: Mammogram,
    locator: DicomLocator,
    image_shape: tuple[int, int],
    mass_rule: str = "birads4",
    birads0: str = "pathology",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[list[Annotation], list[DataIssue], list[LostLesion]]:
    """Read every ROI mask of a mammogram: its annotations, the problems found and the lesions that are lost."""
    annotations: list[Annotation] = []
    issues: list[DataIssue] = []
    lost: list[LostLesion] = []
    for row in mammogram.abnormalities:
        where = (row.source_file, row.line)
        label = lesion_label(row, mass_rule, birads0)
        reason = None
        try:
            mask_file = locator.roi_mask(row.crop_path, row.mask_path, max_pixels)
            mask = read_raw_pixels(mask_file, max_pixels)
        except (LayoutError, DicomError) as error:
            reason = redact(str(error))
        else:
            box = box_from_mask(mask)
            scaled = None if box is None else rescale_box(box, mask.shape, image_shape)
            if box is None:
                reason = "mask is empty"
            elif scaled is None:
                reason = f"mask size {mask.shape} does not match image size {image_shape} in aspect ratio"
        if reason is not None:
            issues.append(DataIssue(*where, "ROI mask file path", row.mask_path, reason + "; lesion lost"))
            lost.append(LostLesion(label, row.abnormality_id, row.abnormality_type, reason))
            continue
        if scaled != box:
            message = f"mask size {mask.shape} differs from image size {image_shape}; box rescaled"
            issues.append(DataIssue(*where, "ROI mask file path", row.mask_path, message))
        annotations.append(
            Annotation(
                box=scaled,
                label=label,
                abnormality_id=row.abnormality_id,
                abnormality_type=row.abnormality_type,
                pathology=row.pathology,
                assessment=row.assessment,
                subtlety=row.subtlety,
                mask_file=str(mask_file),
            )
        )
    return annotations, issues, lost
