"""Write single-frame grayscale DICOM files: used by the synthetic dataset and the tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

DIGITAL_MAMMOGRAPHY_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.2")
# Syntaxes pydicom has no encoder for: written uncompressed, then transcoded with GDCM (python-gdcm, BSD).
GDCM_ENCODED_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless})


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    series_description: str = "full mammogram images",
    patient_id: str = "",
    laterality: str = "",
    view: str = "",
    window: tuple[float, float] | None = None,
    voi_lut_function: str | None = None,
    rescale: tuple[float, float] | None = None,
    transfer_syntax: str | None = None,
    extra: dict[str, object] | None = None,
) -> Path:
    """Write ``pixels`` (2-D uint8/uint16) as a DICOM file and return its path.

    ``window`` is (center, width); ``rescale`` is (slope, intercept); ``transfer_syntax`` compresses the
    pixel data with pydicom's encoders (e.g. RLE Lossless, JPEG 2000 Lossless) or, for the JPEG syntaxes in
    ``GDCM_ENCODED_SYNTAXES`` (JPEG Lossless, JPEG-LS, 8-bit JPEG baseline), with GDCM. ``extra`` sets further
    attributes by keyword (used by tests to plant identifiers that must never leak).
    """
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_dicom needs a 2-D uint8 or uint16 array, got {pixels.dtype} {pixels.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid or generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = UID(study_uid or generate_uid())
    ds.SeriesInstanceUID = UID(series_uid or generate_uid())
    ds.SeriesDescription = series_description
    ds.Modality = "MG"
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    if laterality:
        ds.ImageLaterality = laterality[0]
    if view:
        ds.ViewPosition = view
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
    if voi_lut_function is not None:
        ds.VOILUTFunction = voi_lut_function
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = float(rescale[0]), float(rescale[1])
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    syntax = UID(transfer_syntax or ExplicitVRLittleEndian)
    if syntax != ExplicitVRLittleEndian and syntax not in GDCM_ENCODED_SYNTAXES:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    if syntax in GDCM_ENCODED_SYNTAXES:
        _transcode_with_gdcm(path, syntax)
    return path


def _transcode_with_gdcm(path: Path, syntax: UID) -> None:
    """Re-encode the DICOM file at ``path`` in place to ``syntax`` with GDCM."""
    import gdcm  # imported here: only these JPEG syntaxes need it

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise ValueError(f"{path}: GDCM cannot read the file it is to transcode")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(str(syntax))))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise ValueError(f"{path}: GDCM cannot encode these pixels as {syntax.name}")
    tmp = path.with_name(path.name + ".tmp")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(tmp))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{path}: GDCM cannot write the {syntax.name} file")
    os.replace(tmp, path)
