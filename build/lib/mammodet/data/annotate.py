"""Boxes and labels of one mammogram, read from its ROI masks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mammodet.data.cbis import DataIssue, Mammogram
from mammodet.data.dicom import DicomError, read_raw_pixels
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


def annotate(
    mammogram: Mammogram, locator: DicomLocator, image_shape: tuple[int, int], mass_rule: str = "birads4"
) -> tuple[list[Annotation], list[DataIssue]]:
    """Read every ROI mask of a mammogram and return its annotations and the masks that were skipped."""
    annotations: list[Annotation] = []
    issues: list[DataIssue] = []
    for row in mammogram.abnormalities:
        where = (row.source_file, row.line)
        try:
            mask_file = locator.roi_mask(row.crop_path, row.mask_path)
            mask = read_raw_pixels(mask_file)
        except (LayoutError, DicomError) as error:
            issues.append(DataIssue(*where, "ROI mask file path", row.mask_path, redact(str(error)) + "; skipped"))
            continue
        box = box_from_mask(mask)
        if box is None:
            issues.append(DataIssue(*where, "ROI mask file path", row.mask_path, "mask is empty; skipped"))
            continue
        scaled = rescale_box(box, mask.shape, image_shape)
        if scaled is None:
            message = f"mask size {mask.shape} does not match image size {image_shape} in aspect ratio; skipped"
            issues.append(DataIssue(*where, "ROI mask file path", row.mask_path, message))
            continue
        if scaled != box:
            message = f"mask size {mask.shape} differs from image size {image_shape}; box rescaled"
            issues.append(DataIssue(*where, "ROI mask file path", row.mask_path, message))
        annotations.append(
            Annotation(
                box=scaled,
                label=lesion_label(row, mass_rule),
                abnormality_id=row.abnormality_id,
                abnormality_type=row.abnormality_type,
                pathology=row.pathology,
                assessment=row.assessment,
                subtlety=row.subtlety,
            )
        )
    return annotations, issues
