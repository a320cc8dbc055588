"""Where a record's pixels come from: the converted images (``FileSource``), the DICOM files (``DicomSource``) or
the training cache (``CacheSource``, arrays that ``mammodet.data.cache.build_cache`` made); every source gives
the same image geometry (the record's crop box and size), so boxes are shared. Also the sizes the datasets ask
for: whole images at ``max_side``, and the image training crops are cut from."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from mammodet.data.coco import ImageRecord
from mammodet.data.dicom import read_dicom
from mammodet.data.layout import DicomLocator
from mammodet.data.preprocess import resize_scale, white_level
from mammodet.errors import UserError


class ImageSource(Protocol):
    """Loads a record's image as float32 in [0, 1], shape (height, width) of the record."""

    def load(self, record: ImageRecord) -> np.ndarray: ...


class FileSource:
    """Converted JPEG (8-bit) or PNG (16-bit) images under ``image_dir`` (a ``ResizedSource``)."""

    def __init__(self, image_dir: str | os.PathLike) -> None:
        self.image_dir = Path(image_dir)

    def read(self, record: ImageRecord) -> np.ndarray:
        """The file's pixels as stored: uint8 (JPEG) or uint16 (PNG), (height, width)."""
        path = self.image_dir / record.file_name
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise FileNotFoundError(f"{path}: image missing or unreadable; re-run python -m mammodet.convert")
        return image[..., 0] if image.ndim == 3 else image

    def load(self, record: ImageRecord) -> np.ndarray:
        image = self.read(record)
        return image.astype(np.float32) / white_level(image.dtype)

    def load_resized(self, record: ImageRecord, size: tuple[int, int]) -> np.ndarray:
        """At the file's own size its stored pixels; at another, the float image shrunk with ``INTER_AREA``."""
        image = self.read(record)
        if image.shape == (size[1], size[0]):
            return image
        return cv2.resize(image.astype(np.float32) / white_level(image.dtype), size, interpolation=cv2.INTER_AREA)


class DicomSource:
    """The original DICOM files, decoded on the fly with the record's crop box and size."""

    def __init__(self, dicom_root: str | os.PathLike, gamma: float = 0.8) -> None:
        self.locator = DicomLocator(dicom_root)
        self.gamma = gamma

    def load(self, record: ImageRecord) -> np.ndarray:
        pixels = read_dicom(self.locator.full_image(record.image_file_path), out_dtype="float32", gamma=self.gamma)
        x0, y0, x1, y1 = record.crop_box
        pixels = pixels[y0:y1, x0:x1]
        if pixels.shape != (record.height, record.width):
            pixels = cv2.resize(pixels, (record.width, record.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(pixels)


@runtime_checkable
class ResizedSource(Protocol):
    """A source that gives images at a requested size as stored (``FileSource``, ``CacheSource``).

    ``load_resized`` gives the record's image at ``size`` (width, height): uint8 or uint16 (white is the dtype's
    maximum, possibly memory-mapped, so a training crop reads only its pixels) or float32 in [0, 1].
    """

    def load_resized(self, record: ImageRecord, size: tuple[int, int]) -> np.ndarray: ...


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) of an image resized by ``scale``: the image training crops are cut from."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def whole_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) of a whole image shrunk so its longer side is at most ``max_side`` (as ``crop_and_resize``)."""
    scale = resize_scale(height, width, max_side)
    return (width, height) if scale == 1.0 else scaled_size(width, height, scale)


def train_size(width: int, height: int, crop_scale: float | None, max_side: int | None) -> tuple[int, int]:
    """(width, height) of the image training crops are cut from: at the evaluation scale (``crop_scale`` None:
    the whole image shrunk to ``max_side``, as ``whole_size``, so a lesion has the same size in pixels in a
    training crop and in the evaluated image), or resized by ``crop_scale``."""
    if crop_scale is None:
        return whole_size(width, height, max_side)
    return scaled_size(width, height, crop_scale)


def load_resized(source: ImageSource, record: ImageRecord, size: tuple[int, int]) -> np.ndarray:
    """The record's image at ``size`` (width, height): as a ``ResizedSource`` stores it, else loaded as float32
    and shrunk with ``INTER_AREA``."""
    if isinstance(source, ResizedSource):
        return source.load_resized(record, size)
    image = source.load(record)
    if image.shape != (size[1], size[0]):
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


INPUTS = ("jpeg", "dicom")
DTYPES = ("uint8", "uint16")

Size = tuple[int, int]


class CacheError(ValueError):
    """A cache file that is missing or unreadable; the message is ``"<path>: <reason>; <what to do>"``."""


@dataclass(frozen=True)
class CacheSettings:
    """What a cache holds; arrays made with other settings are not used (their file names differ)."""

    input: str = "jpeg"  # "jpeg": the converted images under image_dir | "dicom": decoded from dicom_root
    dtype: str = "uint8"  # "uint8" | "uint16"
    gamma: float = 0.8  # DICOM display gamma (input=dicom)

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ValueError(f"unknown cache input {self.input!r}; choose one of {INPUTS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown cache dtype {self.dtype!r}; choose one of {DTYPES}")


def check_cache_input(settings: CacheSettings, dicom_root: str | os.PathLike | None) -> None:
    """Refuse a cache that decodes from DICOM without a ``data.dicom_root`` to decode from."""
    if settings.input == "dicom" and not dicom_root:
        raise UserError("a cache with data.cache.input=dicom needs data.dicom_root")


def input_source(settings: CacheSettings, image_dir: str | os.PathLike, dicom_root: str | None) -> ImageSource:
    """Where the build decodes pixels from (and ``CacheSource.load`` falls back to)."""
    check_cache_input(settings, dicom_root)
    if settings.input == "dicom":
        return DicomSource(dicom_root, settings.gamma)
    return FileSource(image_dir)


def array_path(cache_dir: Path, record: ImageRecord, size: Size, settings: CacheSettings) -> Path:
    """The file of a record's array at ``size`` (width, height) under these settings."""
    geometry = [record.file_name, record.image_file_path, list(record.crop_box), record.width, record.height]
    text = json.dumps([asdict(settings), geometry, list(size)])
    fingerprint = hashlib.sha1(text.encode()).hexdigest()[:12]
    return cache_dir / "images" / f"{record.key}.{size[0]}x{size[1]}.{fingerprint}.npy"


def open_array(path: Path, size: Size, dtype: str) -> np.ndarray:
    """The array at ``path``, memory-mapped, checked to be ``dtype`` at ``size``; ``CacheError`` otherwise."""
    hint = "delete it and run training with data.source=cache again (prepare_data rebuilds what is missing)"
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise CacheError(f"{path}: cache file missing; {hint}") from None
    except (ValueError, OSError, EOFError) as error:
        raise CacheError(f"{path}: unreadable cache file ({error}); {hint}") from None
    if array.shape != (size[1], size[0]) or array.dtype != np.dtype(dtype):
        raise CacheError(
            f"{path}: cache file holds {array.dtype}{list(array.shape)}, expected {dtype}[{size[1]}, {size[0]}]; {hint}"
        )
    return array


class CacheSource:
    """Images from a cache made by ``build_cache``: memory-mapped arrays already at the size a dataset asks
    for (a ``ResizedSource``). ``load`` (the ``ImageSource`` protocol: float32 at the record's size) reads the
    cache when it holds that size and otherwise decodes the input (galleries, prediction at other sizes); the
    input is opened only then, so a cache trains without it."""

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        settings: CacheSettings,
        image_dir: str | os.PathLike,
        dicom_root: str | os.PathLike | None = None,
    ) -> None:
        self.cache_dir, self.settings, self.unit = Path(cache_dir), settings, white_level(settings.dtype)
        self.image_dir, self.dicom_root = image_dir, str(dicom_root) if dicom_root else None
        self._input: ImageSource | None = None

    def load_resized(self, record: ImageRecord, size: Size) -> np.ndarray:
        """The record's stored array at ``size`` (width, height), memory-mapped (uint8 or uint16)."""
        path = array_path(self.cache_dir, record, size, self.settings)
        return open_array(path, size, self.settings.dtype)

    def load(self, record: ImageRecord) -> np.ndarray:
        """The record's image as float32 in [0, 1] at its own size."""
        size = (record.width, record.height)
        if array_path(self.cache_dir, record, size, self.settings).is_file():
            return self.load_resized(record, size).astype(np.float32) / self.unit
        if self._input is None:
            self._input = input_source(self.settings, self.image_dir, self.dicom_root)
        return self._input.load(record)
