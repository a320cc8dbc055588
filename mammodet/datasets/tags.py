"""The few DICOM header fields readers take from a file: pixel spacing, and nothing that identifies anyone."""

from __future__ import annotations

import os

import pydicom

from mammodet.data.dicom import DicomError

_SPACING_TAGS = ("PixelSpacing", "ImagerPixelSpacing")


def pixel_spacing(path: str | os.PathLike) -> float | None:
    """The row spacing in mm from PixelSpacing (else ImagerPixelSpacing), None when the file has neither."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_SPACING_TAGS))
    except Exception as exc:  # pydicom raises many types on malformed input; report them as one
        raise DicomError(f"{path}: cannot read the DICOM header ({type(exc).__name__})") from exc
    for keyword in _SPACING_TAGS:
        value = ds.get(keyword)
        if value is not None and len(value) >= 1 and float(value[0]) > 0:
            return float(value[0])
    return None
