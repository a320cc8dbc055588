"""Decode single-frame grayscale DICOM images (CBIS-DDSM mammograms) into tissue-bright arrays.

``read_dicom`` runs: stored values -> modality LUT (Modality LUT Sequence or Rescale Slope/Intercept) ->
VOI (the VOI LUT Sequence, else Window Center/Width with VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID;
the first of several) or, when the file has no usable VOI, a window between two percentiles of the
foreground pixels -> MONOCHROME1 inverted so tissue is bright -> [0, 1] -> ``x ** gamma`` -> uint8, uint16
or float32.

Every step depends on the stored value alone (the percentile window needs only the histogram), so the
pipeline is evaluated once per possible stored value (at most 65536) into a lookup table that is applied to
the image with one gather: a 4000x3000 uint16 mammogram costs a histogram and a table lookup, not several
full-size float passes.

Compressed pixel data is decoded by pydicom's pixel-data plugins, first that succeeds in pydicom's order
(all permissively licensed; GPL pylibjpeg-libjpeg is not used):
RLE Lossless: pylibjpeg-rle, then pydicom's own decoder. JPEG 2000 (lossless and lossy): python-gdcm, then
pylibjpeg-openjpeg, then Pillow. JPEG Lossless (Process 14 and its SV1 form) and JPEG-LS: python-gdcm.
JPEG Baseline/Extended: python-gdcm, then Pillow. HTJ2K: pylibjpeg-openjpeg. Uncompressed and deflated
syntaxes need no plugin.

Privacy: only pixel-describing attributes and the study/series UIDs are ever converted from the data set;
errors name the file path and the reason, never a DICOM text attribute, and this module logs nothing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
import pydicom.config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_windowing, get_decoder

from mammodet.data.preprocess import white_level

OutDtype = Literal["uint8", "uint16", "float32"]

DEFAULT_MAX_PIXELS = 50_000_000
"""Images with more pixels are refused from their header, before decoding: full-field mammograms (film scans
included) have at most about 40 million, and a 16-bit image of the limit takes 100 MB (a hostile header
declaring 60000 x 60000 would take 7.2 GB)."""

_UNDEFINED_LENGTH = 0xFFFFFFFF
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
"""pydicom's reading validation warns (and logs) with the invalid value itself, e.g. a PhotometricInterpretation
or a Transfer Syntax UID holding a name; this module checks the values it uses and names only the attribute."""
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class DicomError(ValueError):
    """A file that is not a decodable single-frame grayscale DICOM image; the message is ``"<path>: <reason>"``."""


class PixelLimitError(DicomError):
    """An image whose header declares more pixels than the limit; refused before its pixels are decoded."""


def check_pixel_count(path: str | os.PathLike, width: int, height: int, max_pixels: int | None) -> None:
    """Raise ``PixelLimitError`` when ``width x height`` is over ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise PixelLimitError(
            f"{path}: {width} x {height} = {width * height} pixels, more than the limit of {max_pixels} (max_pixels)"
        )


@dataclass(frozen=True)
class DicomImageInfo:
    """Pixel-describing attributes of a DICOM image, plus the UIDs used to match files to CSV paths."""

    rows: int
    columns: int
    photometric: str
    bits_stored: int
    transfer_syntax: str
    study_uid: str
    series_uid: str


def read_dicom(
    path: str | os.PathLike,
    *,
    out_dtype: OutDtype = "uint8",
    gamma: float = 0.8,
    percentiles: tuple[float, float] = (0.5, 99.5),
    apply_voi: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode the image at ``path`` to a 2-D tissue-bright array.

    The VOI of the file is used when present and ``apply_voi``; otherwise the window spans ``percentiles`` of
    the pixels brighter than the image's darkest value, so a large black background does not pull it down.
    The [0, 1] result is raised to ``gamma`` and returned as uint8 (0..255), uint16 (0..65535) or float32
    (0..1) per ``out_dtype``. Raises ``DicomError`` for a file it cannot decode, ``PixelLimitError`` (before
    decoding) when the header declares more than ``max_pixels`` pixels.
    """
    if out_dtype not in ("uint8", "uint16", "float32"):
        raise ValueError(f"out_dtype must be 'uint8', 'uint16' or 'float32', got {out_dtype!r}")
    if not gamma > 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    if not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    path = Path(path)
    ds, info, raw = _decode(path, max_pixels)
    index, stored = _lookup_index(raw)
    values = _modality(ds, stored, path).astype(np.float64, copy=False)
    unit = _voi_unit(ds, values, path) if apply_voi else None
    if unit is None:
        if info.photometric == "MONOCHROME1":
            # Mirror within the modality range of the storable values, so an M1 image stored as
            # ``2**BitsStored - 1 - p`` gives exactly the values of the M2 image p.
            storable = _storable_range(info.bits_stored, signed=raw.dtype.kind == "i")
            values = _modality(ds, storable, path).astype(np.float64).sum() - values
        counts = np.bincount(index.reshape(-1), minlength=values.size)
        unit = _percentile_unit(values, counts, percentiles)
    elif info.photometric == "MONOCHROME1":
        unit = 1.0 - unit
    np.clip(unit, 0.0, 1.0, out=unit)
    if gamma != 1:
        unit **= gamma
    if out_dtype == "float32":
        return unit.astype(np.float32)[index]
    return np.rint(unit * white_level(out_dtype)).astype(out_dtype)[index]


def read_raw_pixels(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Stored values of the image at ``path`` after the modality LUT: no VOI, no MONOCHROME1 inversion.

    The decoded integer array itself is returned when the modality LUT is the identity (the usual case);
    a rescale gives float32, a Modality LUT Sequence its uint8/uint16 entries. Used to tell a binary ROI
    mask from a grey crop. Raises ``DicomError`` for a file it cannot decode or over ``max_pixels``.
    """
    path = Path(path)
    ds, _, raw = _decode(path, max_pixels)
    index, stored = _lookup_index(raw)
    values = _modality(ds, stored, path)
    if np.array_equal(values, stored):
        return raw
    return values.astype(np.float32 if values.dtype.kind == "f" else values.dtype, copy=False)[index]


def read_dicom_header(path: str | os.PathLike) -> DicomImageInfo:
    """Describe the image at ``path`` without reading its pixel data.

    Raises ``DicomError`` when the file is not a single-frame grayscale image in a transfer syntax an
    installed plugin decodes; the pixel data itself is only checked by ``read_dicom``.
    """
    path = Path(path)
    return _check_image(_read_dataset(path, header_only=True), path)


def is_binary_mask(pixels: np.ndarray) -> bool:
    """True when ``pixels`` holds at most two distinct values, one of them 0 (CBIS-DDSM ROI masks are 0/255
    or 0/65535); False for a grey image such as a lesion crop, and for an empty array."""
    if pixels.size == 0:
        return False
    low, high = pixels.min(), pixels.max()
    if low != 0 and high != 0:
        return False
    return bool(low == high or np.count_nonzero(pixels == low) + np.count_nonzero(pixels == high) == pixels.size)


def _error(path: Path, reason: str) -> DicomError:
    """The one error type for bad files: the path and the reason, nothing from the data set's text."""
    return DicomError(f"{path}: {reason}")


def _read_dataset(path: Path, *, header_only: bool) -> Dataset:
    """Parse ``path`` (up to the pixel data when ``header_only``), turning pydicom's failures into DicomError."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError as exc:
        reason = "empty file" if path.stat().st_size == 0 else "not a DICOM file (no 'DICM' after the preamble)"
        raise _error(path, reason) from exc
    except OSError as exc:
        raise _error(path, f"cannot read the file ({exc.strerror or type(exc).__name__})") from exc
    except Exception as exc:  # pydicom raises many types on malformed input; report them as one
        raise _error(path, f"cannot parse the DICOM data set ({type(exc).__name__})") from exc
    if _is_truncated(ds):
        raise _error(path, "truncated file (it ends inside a data element)")
    return ds


def _is_truncated(ds: Dataset) -> bool:
    """True when pydicom hit the end of the file early.

    pydicom then silently keeps a short last value, or, when the end falls inside an undefined-length element
    (encapsulated pixel data, a sequence), returns a data set with no element at all.
    """
    if len(ds) == 0:
        return True
    last = ds.get_item(next(reversed(ds.keys())))
    return (
        isinstance(last, RawDataElement)
        and last.length != _UNDEFINED_LENGTH
        and last.value is not None
        and len(last.value) < last.length
    )


def _int_attribute(ds: Dataset, keyword: str, path: Path, default: int | None = None) -> int:
    """The integer value of ``keyword`` in ``ds``; DicomError naming the attribute when missing or invalid."""
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise _error(path, f"missing {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise _error(path, f"invalid {keyword}") from exc


def _check_image(ds: Dataset, path: Path) -> DicomImageInfo:
    """Check ``ds`` describes a single-frame grayscale image in a decodable transfer syntax; describe it."""
    samples = _int_attribute(ds, "SamplesPerPixel", path)
    if samples != 1:
        raise _error(path, f"colour image ({samples} samples per pixel); only grayscale is supported")
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        state = "unsupported" if photometric else "missing"  # the value itself is never echoed (free text)
        raise _error(path, f"{state} PhotometricInterpretation; only MONOCHROME1/2 (grayscale) images are supported")
    frames = _int_attribute(ds, "NumberOfFrames", path, default=1)
    if frames > 1:
        raise _error(path, f"multi-frame image ({frames} frames); only single-frame images are supported")
    rows, columns = _int_attribute(ds, "Rows", path), _int_attribute(ds, "Columns", path)
    if rows == 0 or columns == 0:
        raise _error(path, f"empty image ({rows} x {columns} pixels)")
    bits_allocated = _int_attribute(ds, "BitsAllocated", path)
    if bits_allocated not in (8, 16):
        raise _error(path, f"{bits_allocated} bits allocated per pixel; only 8 or 16 are supported")
    bits_stored = _int_attribute(ds, "BitsStored", path, default=bits_allocated)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if not syntax:
        raise _error(path, "missing Transfer Syntax UID in the file meta information")
    if not _UID.fullmatch(str(syntax)):
        raise _error(path, "invalid Transfer Syntax UID in the file meta information (not a dotted number)")
    label = syntax.name if syntax.name == str(syntax) else f"{syntax.name} ({syntax})"
    try:
        decodable = get_decoder(syntax).is_available
    except NotImplementedError:
        decodable = False
    if not decodable:
        raise _error(
            path,
            f"unsupported transfer syntax {label}: no installed pixel-data plugin decodes it "
            "(a plugin is missing; the permissive ones are python-gdcm, pylibjpeg-openjpeg, pylibjpeg-rle)",
        )
    return DicomImageInfo(
        rows=rows,
        columns=columns,
        photometric=photometric,
        bits_stored=bits_stored,
        transfer_syntax=syntax.name,
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
    )


def _decode(path: Path, max_pixels: int | None) -> tuple[Dataset, DicomImageInfo, np.ndarray]:
    """Read, check and decode ``path``: the data set, its description and the stored 2-D pixel values.

    The pixel count is checked against ``max_pixels`` from the header alone, so a small file declaring a huge
    image fails before any pixel buffer is allocated.
    """
    ds = _read_dataset(path, header_only=False)
    info = _check_image(ds, path)
    check_pixel_count(path, info.columns, info.rows, max_pixels)
    if "PixelData" not in ds:
        raise _error(path, "no pixel data")
    if not ds.PixelData:
        raise _error(path, "empty pixel data")
    frame_bytes = info.rows * info.columns * _int_attribute(ds, "BitsAllocated", path) // 8
    if not ds.file_meta.TransferSyntaxUID.is_compressed and len(ds.PixelData) >= 2 * frame_bytes:
        frames = len(ds.PixelData) // frame_bytes
        raise _error(path, f"pixel data holds {frames} frames but NumberOfFrames is 1 or absent; only single frames")
    try:
        raw = ds.pixel_array
    except Exception as exc:  # a plugin's or pydicom's failure, of whatever type, is a bad file here
        raise _error(path, f"cannot decode the {info.transfer_syntax} pixel data ({type(exc).__name__})") from exc
    if raw.shape != (info.rows, info.columns):
        raise _error(path, f"pixel data decodes to shape {raw.shape}, expected one {info.rows} x {info.columns} frame")
    return ds, info, raw


def _lookup_index(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``raw``'s pixels into a lookup table, and the stored value of each table entry.

    Unsigned images index the table directly (no copy); signed ones with negative values are shifted.
    """
    base = min(int(raw.min()), 0)
    stored = np.arange(base, int(raw.max()) + 1)
    index = raw if base == 0 else np.subtract(raw, base, dtype=np.int32)
    return index, stored


def _storable_range(bits_stored: int, *, signed: bool) -> np.ndarray:
    """The lowest and highest values ``bits_stored`` bits can hold."""
    low = -(2 ** (bits_stored - 1)) if signed else 0
    return np.array([low, low + 2**bits_stored - 1])


def _modality(ds: Dataset, stored: np.ndarray, path: Path) -> np.ndarray:
    """pydicom's modality LUT (Modality LUT Sequence, else Rescale Slope/Intercept) applied to ``stored``.

    A degenerate one (Rescale Slope 0, a non-finite slope or intercept, a non-finite result) would map every
    pixel to one value or to NaN, i.e. a blank image: it raises instead.
    """
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        value = ds.get(keyword)
        if value is None or value == "" or "ModalityLUTSequence" in ds:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise _error(path, f"invalid {keyword}") from exc
        if not np.isfinite(number) or (keyword == "RescaleSlope" and number == 0):
            raise _error(path, f"degenerate modality LUT ({keyword} {number}): every pixel would get one value")
    try:
        values = apply_modality_lut(stored, ds)
    except (AttributeError, IndexError, TypeError, ValueError) as exc:  # malformed LUT or rescale values
        raise _error(path, "invalid modality LUT (Modality LUT Sequence or Rescale Slope/Intercept)") from exc
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise _error(path, "degenerate modality LUT: non-finite values")
    return values


def _voi_unit(ds: Dataset, values: np.ndarray, path: Path) -> np.ndarray | None:
    """The VOI of ``ds`` applied to modality ``values``, scaled to [0, 1]; None when it has no usable VOI.

    The VOI LUT Sequence wins over Window Center/Width, as in pydicom's ``apply_voi_lut``. A malformed VOI
    (a window pydicom rejects: width below 1 for LINEAR, not positive otherwise, unknown VOI LUT Function;
    unreadable LUT data) counts as absent, so the percentile window is used. A degenerate VOI LUT (a
    LUT Descriptor of 0 bits per entry, or LUT data of one value) raises ``DicomError``: it would blank the image.
    """
    sequence = ds.get("VOILUTSequence")
    if sequence:
        try:
            return _voi_lut_unit(ds, sequence[0], values, path)
        except DicomError:
            raise
        except (TypeError, ValueError):  # malformed LUT data
            return None
    try:
        if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
            return None
        with np.errstate(over="ignore"):  # SIGMOID: exp overflows to inf far below the window, giving 0
            # pydicom scales the window to the modality output range; windowing -inf and +inf gives its ends.
            window = apply_windowing(np.concatenate([values, [-np.inf, np.inf]]), ds)
    except (TypeError, ValueError):  # malformed LUT data or window values
        return None
    low, high = window[-2], window[-1]
    return (window[:-2] - low) / (high - low)


def _voi_lut_unit(ds: Dataset, item: Dataset, values: np.ndarray, path: Path) -> np.ndarray | None:
    """Look ``values`` up in a VOI LUT Sequence item, scaled to [0, 1] by the LUT's bit depth.

    Not pydicom's ``apply_voi``: pydicom 3.0.2 builds its indices in the dtype of the LUT entries, so an
    8-bit LUT with more than 256 entries (12-bit input to 8-bit output) is looked up wrongly.
    """
    descriptor, lut_data = item.get("LUTDescriptor"), item.get("LUTData")
    if descriptor is None or lut_data is None or len(descriptor) != 3:
        return None
    entries, first, bits = (int(v) for v in descriptor)
    if not 1 <= bits <= 16:
        raise _error(path, f"degenerate VOI LUT (LUT Descriptor gives {bits} bits per entry; 1..16 are valid)")
    if isinstance(lut_data, bytes):  # OW: 16-bit words in the file's byte order
        data = np.frombuffer(lut_data, dtype="<u2" if ds.original_encoding[1] else ">u2")
    else:  # US: a list of ints, or one int
        data = np.asarray(lut_data, dtype=np.float64).reshape(-1)
    if data.size == 0:
        return None
    if data.max() == data.min():
        raise _error(path, "degenerate VOI LUT (every entry has one value): the image would be blank")
    last = min(entries or 65536, data.size) - 1
    index = np.clip(np.rint(values) - first, 0, last).astype(np.intp)
    return data[index] / max(2**bits - 1, float(data.max()))


def _percentile_unit(values: np.ndarray, counts: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Window ``values`` between ``percentiles`` of the pixels above the darkest present value, in [0, 1].

    ``counts[i]`` is the number of pixels with value ``values[i]``; the percentiles are numpy's default
    ('linear') ones of those pixels, computed from the histogram instead of sorting the image. A constant
    image gives 0 everywhere; a foreground of one value gives 1 there.
    """
    present = counts > 0
    foreground = present & (values > values[present].min())
    if not foreground.any():
        return np.zeros_like(values)
    order = np.argsort(values[foreground], kind="stable")
    ordered = values[foreground][order]
    cumulative = np.cumsum(counts[foreground][order])
    last = cumulative[-1] - 1
    rank = np.asarray(percentiles, dtype=np.float64) / 100 * last
    below = np.floor(rank)
    lower = ordered[np.searchsorted(cumulative, below, side="right")]
    upper = ordered[np.searchsorted(cumulative, np.minimum(below + 1, last), side="right")]
    low, high = lower + (upper - lower) * (rank - below)
    if high <= low:
        return (values >= high).astype(np.float64)
    return (values - low) / (high - low)
