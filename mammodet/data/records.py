"""The one record model of a mammogram and its findings, as every dataset reader yields it.

A reader (``mammodet.datasets.<name>``) turns a dataset's files into ``MammogramRecord``s; conversion decodes
``pixels``, crops, resizes and writes COCO from them without knowing which dataset they came from. Boxes are
``[x0, y0, x1, y1]`` in the source image's pixels (continuous coordinates, docs/architecture.md). A finding
whose ``label`` is None is an ignore region: neither a lesion nor background.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

Box = tuple[float, float, float, float]

LATERALITIES = ("LEFT", "RIGHT")
VIEWS = ("CC", "MLO")
DENSITIES = ("A", "B", "C", "D")
SPACING_SOURCES = ("dicom", "publisher", "default")
PIXEL_FORMATS = ("dicom", "pgm")
_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Finding:
    """One annotated finding: its box (or ROI mask file) in source pixels, its class or None (ignore region)."""

    finding: str  # the dataset's own name for it ("Mass", "Cluster", "CIRC", ...)
    label: str | None  # a class name of the dataset's class list; None: an ignore region
    box: Box | None = None
    mask_path: str | None = None
    birads: str | None = None  # as the dataset states it ("4", "4a", ...), None when it has none

    @property
    def ignore(self) -> bool:
        """True for a finding outside the class map: it is never background and never a lesion."""
        return self.label is None


@dataclass(frozen=True)
class PixelSource:
    """Where an image's pixels are: a file and its format (``dicom`` or ``pgm``)."""

    path: Path
    format: str = "dicom"

    def __post_init__(self) -> None:
        """Reject formats that no decoder reads."""
        if self.format not in PIXEL_FORMATS:
            raise ValueError(f"pixel format must be one of {PIXEL_FORMATS}, got {self.format!r}")


@dataclass(frozen=True)
class MammogramRecord:
    """One image of a dataset with its findings, split and physical scale; ``excluded`` names why it is left out."""

    dataset: str
    source_key: str  # the dataset's own image name (VinDr image_id, INbreast FileName, MIAS refnum)
    patient: str
    study: str
    laterality: str  # LEFT | RIGHT
    view: str  # CC | MLO
    density: str | None  # A-D, None when unknown
    pixel_spacing_mm: float
    pixel_spacing_source: str  # dicom | publisher | default
    split: str  # train | val | test
    pixels: PixelSource
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    excluded: str | None = None  # a lesion that cannot be located: the image stays out of the COCO files

    def __post_init__(self) -> None:
        """Reject values outside the shared vocabularies, naming the image."""
        if not _SAFE_KEY.fullmatch(self.source_key):
            raise ValueError(f"{self.dataset}: image name {self.source_key!r} is not a safe file name")
        checks = (
            ("laterality", self.laterality, LATERALITIES),
            ("view", self.view, VIEWS),
            ("pixel_spacing_source", self.pixel_spacing_source, SPACING_SOURCES),
        )
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{self.dataset} {self.source_key}: {name} must be one of {allowed}, got {value!r}")
        if self.density is not None and self.density not in DENSITIES:
            raise ValueError(f"{self.dataset} {self.source_key}: density must be one of {DENSITIES} or None")
        if not self.pixel_spacing_mm > 0:
            raise ValueError(f"{self.dataset} {self.source_key}: pixel spacing must be positive")

    @property
    def key(self) -> str:
        """The name of its converted files: dataset-unique and free of identifiers."""
        return self.source_key

    @property
    def lesions(self) -> tuple[Finding, ...]:
        """The findings that are lesions of a class (ignore regions left out)."""
        return tuple(f for f in self.findings if not f.ignore)

    @property
    def ignore_regions(self) -> tuple[Finding, ...]:
        """The findings outside the class map."""
        return tuple(f for f in self.findings if f.ignore)


@dataclass(frozen=True)
class ReadProblem:
    """An entry of a dataset's files that yields no record, for the conversion report (never an identifier)."""

    file: str
    line: int | None
    field: str
    value: str
    reason: str


@dataclass(frozen=True)
class DatasetRecords:
    """What a reader yields: the records, and the entries it could not turn into one."""

    records: list[MammogramRecord]
    problems: list[ReadProblem] = field(default_factory=list)
