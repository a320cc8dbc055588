"""The one inference path: a checkpoint becomes a ``Detector``; a file becomes boxes in its own pixels.

Used alike by ``mammodet.predict``, the web app, the export parity checks and Grad-CAM. It repeats the
whole-image validation of training: the file's content (never its name) says what it is: DICOM (``DICM``
after the 128-byte preamble), PNG or JPEG. DICOM is decoded by ``read_dicom`` to float 0..1 with the
checkpoint's gamma; PNG/JPEG are read as grayscale 0..1. The image is cropped to the breast when the
training conversion cropped (``breast_box``), shrunk so its longer side is at most the smaller of the
conversion's and the evaluation's ``max_side`` (``crop_and_resize``), and given to the model; the boxes are
mapped back to the original pixels (``unmap_boxes``).

Privacy: only pixels and pixel-describing attributes are read from a DICOM file; no text attribute reaches
an output, an error or a log.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mammodet import __version__
from mammodet.data.classes import CLASSES, LABEL_NAMES
from mammodet.data.conversion import ConvertSettings
from mammodet.data.detection_dataset import model_input, to_sample
from mammodet.data.dicom import DEFAULT_MAX_PIXELS, DicomError, read_dicom, read_dicom_header
from mammodet.data.preprocess import breast_box, crop_and_resize, unmap_boxes, white_level
from mammodet.data.provenance import Provenance, checkpoint_provenance
from mammodet.errors import UserError
from mammodet.models import DetectorModule, get_model
from mammodet.models.checkpoint import read_checkpoint

Forward = Callable[[list[Tensor]], list[dict[str, Tensor]]]
"""A detector runtime: images ``[3, H, W]`` in 0..1 -> ``dict(boxes, scores, labels)`` per image, on the CPU."""

ErrorKind = Literal["empty", "unsupported", "too_large", "invalid"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DICOM_MAGIC_AT = 128


class InputError(ValueError):
    """A file the detector cannot analyse: ``"<path>: <reason>"``; ``kind`` says why (the API maps it to 4xx)."""

    def __init__(self, path: Path, kind: ErrorKind, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.kind, self.reason = path, kind, reason


def sniff_format(head: bytes) -> Literal["dicom", "png", "jpeg"] | None:
    """The format told by a file's first 132 bytes (magic numbers), or None."""
    if head[_DICOM_MAGIC_AT : _DICOM_MAGIC_AT + 4] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    return None


def load_image(path: str | Path, gamma: float, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a DICOM, PNG or JPEG file to a 2-D float32 image in 0..1 (tissue bright).

    The pixel count is checked from the header before the pixels are decoded (``max_pixels``, by default
    ``mammodet.data.dicom.DEFAULT_MAX_PIXELS``); a JPEG too small to code the size its header claims, and an
    image whose decoded size differs from its header, are refused. Raises ``InputError``.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            head = file.read(_DICOM_MAGIC_AT + 4)
    except OSError as exc:
        raise InputError(path, "invalid", f"cannot read the file ({exc.strerror or type(exc).__name__})") from exc
    if not head:
        raise InputError(path, "empty", "empty file")
    kind = sniff_format(head)
    if kind is None:
        raise InputError(path, "unsupported", "not a DICOM, PNG or JPEG file (judged by its content)")
    if kind == "dicom":
        try:
            info = read_dicom_header(path)
            _check_pixels(path, info.columns, info.rows, max_pixels)
            return read_dicom(path, out_dtype="float32", gamma=gamma, max_pixels=max_pixels)
        except DicomError as exc:
            raise InputError(path, "invalid", str(exc).removeprefix(f"{path}: ")) from exc
    data = path.read_bytes()
    label = kind.upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data)).size
    except Image.DecompressionBombError as exc:
        raise InputError(path, "too_large", f"too many pixels (over Pillow's limit of {max_pixels})") from exc
    except (OSError, SyntaxError) as exc:
        raise InputError(path, "invalid", f"cannot read the {label} header") from exc
    _check_pixels(path, width, height, max_pixels)
    if kind == "jpeg" and len(data) * 8 < -(-width // 8) * -(-height // 8):
        # Every 8x8 block costs at least one bit of Huffman code: this header claims more pixels than the data hold
        # (a patched or truncated file, which the decoder would silently pad with grey).
        raise InputError(
            path, "invalid", f"the JPEG header claims {width} x {height} pixels, more than {len(data)} bytes can code"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    if image is None:
        raise InputError(path, "invalid", f"cannot decode the {label} data (truncated or corrupt)")
    if image.shape != (height, width):
        raise InputError(
            path,
            "invalid",
            f"decoded {image.shape[1]} x {image.shape[0]} pixels, but the {label} header says {width} x {height}",
        )
    return image.astype(np.float32) / white_level(image.dtype)


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(
            path, "too_large", f"{width} x {height} = {width * height} pixels, more than the limit of {max_pixels}"
        )


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU when CUDA is available, else the CPU; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Preprocessing:
    """How an image is prepared for the model, as in the checkpoint's evaluation."""

    gamma: float
    crop_breast: bool
    max_side: int | None

    @classmethod
    def from_datamodule(cls, hparams: dict[str, Any]) -> Preprocessing:
        """From ``checkpoint["datamodule_hyper_parameters"]`` (conversion defaults where unset)."""
        convert = hparams.get("convert") or {}
        sides = [side for side in (convert.get("max_side"), hparams["max_side"]) if side]
        return cls(
            gamma=float(hparams["image_gamma"]),
            crop_breast=bool(convert.get("crop_breast", ConvertSettings.crop_breast)),
            max_side=min(sides) if sides else None,
        )


@dataclass(frozen=True)
class Prepared:
    """A decoded image and the model input made from it, with the geometry that maps boxes back."""

    image: np.ndarray
    """The decoded image, original pixels, float32 0..1."""
    tensor: Tensor
    """Model input ``[3, h, w]``: the image cropped and shrunk."""
    crop_box: tuple[int, int, int, int] | None
    scale: tuple[float, float]


@dataclass(frozen=True)
class Detections:
    """Detected lesions in the original image's pixels, best score first."""

    boxes: np.ndarray
    """``(N, 4)`` float64 ``[x0, y0, x1, y1]``."""
    scores: np.ndarray
    labels: np.ndarray
    """Label ids: ``CLASSES[label - 1]``."""
    width: int
    height: int

    def select(self, keep: np.ndarray | slice) -> Detections:
        """The detections picked by a boolean mask, indices or a slice."""
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], self.width, self.height)

    def above(self, score_thresh: float) -> Detections:
        """Only the detections scoring at least ``score_thresh``."""
        return self.select(self.scores >= score_thresh)

    def as_list(self) -> list[dict[str, Any]]:
        """``[{"label", "score", "box"}]`` with class names, scores to 4 and boxes to 2 decimals."""
        return [
            {"label": LABEL_NAMES[int(label)], "score": round(float(score), 4), "box": [round(float(v), 2) for v in b]}
            for b, score, label in zip(self.boxes, self.scores, self.labels, strict=True)
        ]


def _inference_model(module: DetectorModule) -> nn.Module:
    """The module's torchvision detector in eval mode, without forward hooks.

    The only hooks are training-only ones (the family's statistics, e.g. Faster R-CNN's RoI accuracy): they
    would run Python on every call and keep TorchScript from compiling the model.
    """
    model = module.model
    for sub in model.modules():
        sub._forward_hooks.clear()
        sub._forward_pre_hooks.clear()
    return model.eval()


def model_resize(model: nn.Module) -> dict[str, Any] | None:
    """torchvision's resize inside the model (short side to ``min_size``, long side at most ``max_size``), or
    None when the model's transform does not resize (it only normalises and pads)."""
    transform = model.transform
    if type(transform).resize is not GeneralizedRCNNTransform.resize:
        return None
    return {"min_size": list(transform.min_size), "max_size": transform.max_size}


class Detector:
    """A trained detector with its preprocessing: ``detect(path) -> Detections``.

    Args:
        model: a registered torchvision-style detector in eval mode, on ``device``.
        preprocessing: how images are prepared (from the checkpoint).
        hyper_parameters: the ``DetectorModule`` arguments that rebuild ``model`` (exported with it); their
            ``model_name`` names the registered model.
        sha256: the checkpoint's SHA-256; its first 12 digits make the model version.
        device: where the model runs.
        score_thresh: the score from which a lesion is drawn and shown by default (all detections the model
            keeps, from its own ``box_score_thresh``, are returned).
        max_pixels: larger images are refused before decoding.
        provenance: what the model was trained on (``mammodet.data.provenance``): ``"synthetic"`` makes
            ``predict`` warn that its predictions on real mammograms mean nothing.
        checkpoint: the file it was loaded from (logged by ``predict``).
    """

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Preprocessing,
        hyper_parameters: dict[str, Any],
        sha256: str,
        device: torch.device,
        score_thresh: float = 0.3,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        provenance: Provenance = "real",
        checkpoint: Path | None = None,
    ) -> None:
        self.model, self.preprocessing, self.hyper_parameters = model, preprocessing, hyper_parameters
        self.provenance, self.checkpoint = provenance, checkpoint
        self.sha256, self.device = sha256, device
        self.score_thresh, self.max_pixels = score_thresh, max_pixels
        self.version = f"{__version__}+{sha256[:12]}"
        # One forward at a time: each already uses every CPU core (or the GPU's memory); concurrent callers wait.
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **options: Any) -> Detector:
        """Load a training checkpoint (model and datamodule hyperparameters); ``options`` go to ``__init__``."""
        path = Path(path)
        checkpoint = read_checkpoint(path)
        if "datamodule_hyper_parameters" not in checkpoint:
            raise UserError(
                f"ckpt_path={path}: no datamodule_hyper_parameters, so the evaluation preprocessing is unknown; "
                "use a checkpoint written by python -m mammodet.train"
            )
        module = DetectorModule(**checkpoint["hyper_parameters"])
        module.load_state_dict(checkpoint["state_dict"])
        hyper_parameters = dict(module.hparams)  # every argument, defaults included, so exports rebuild it alike
        torch_device = resolve_device(device)
        return cls(
            _inference_model(module).to(torch_device),
            Preprocessing.from_datamodule(checkpoint["datamodule_hyper_parameters"]),
            hyper_parameters,
            file_sha256(path),
            torch_device,
            provenance=checkpoint_provenance(checkpoint["datamodule_hyper_parameters"]),
            checkpoint=path,
            **options,
        )

    @property
    def model_name(self) -> str:
        """The registered model's name (``frcnn_small``, ...): the ``arch`` of the JSON answers."""
        return str(self.hyper_parameters["model_name"])

    def prepare(self, path: str | Path) -> Prepared:
        """Decode ``path`` and make the model input; raises ``InputError`` for a file it cannot use."""
        image = load_image(path, self.preprocessing.gamma, self.max_pixels)
        crop_box = breast_box(image) if self.preprocessing.crop_breast else None
        resized, scale = crop_and_resize(image, crop_box, self.preprocessing.max_side)
        sample, _ = to_sample(resized, np.zeros((0, 4)), np.zeros(0), 0)  # the evaluation datasets' conversion
        tensor = model_input(sample)
        return Prepared(image, tensor, crop_box, scale)

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """The PyTorch model on ``images`` (a ``Forward``): predictions on the CPU."""
        with self._lock, torch.inference_mode():
            outputs = self.model([image.to(self.device) for image in images])
        return [{key: value.cpu() for key, value in output.items()} for output in outputs]

    def run(self, batch: Sequence[Prepared], forward: Forward | None = None) -> list[Detections]:
        """Detect on prepared images in one call of ``forward`` (default: the PyTorch model)."""
        outputs = (forward or self.forward)([p.tensor for p in batch])
        return [self._detections(p, output) for p, output in zip(batch, outputs, strict=True)]

    def detect(self, path: str | Path, forward: Forward | None = None) -> Detections:
        """Detect lesions in one file; boxes in its pixels."""
        return self.run([self.prepare(path)], forward)[0]

    @staticmethod
    def _detections(prepared: Prepared, output: dict[str, Tensor]) -> Detections:
        height, width = prepared.image.shape
        return Detections(
            boxes=unmap_boxes(output["boxes"].double().numpy(), prepared.crop_box, prepared.scale),
            scores=output["scores"].double().numpy(),
            labels=output["labels"].numpy().astype(np.int64),
            width=width,
            height=height,
        )

    def info(self) -> dict[str, Any]:
        """What ``GET /v1/model`` and ``config.json`` describe: version, classes, preprocessing, thresholds."""
        transform, entry = self.model.transform, get_model(self.model_name)
        return {
            "name": "mammodet",
            "version": self.version,
            "checkpoint_sha256": self.sha256,
            "arch": self.model_name,
            "family": entry.family,
            "backbone": self.hyper_parameters["backbone"],
            "classes": list(CLASSES),
            "preprocessing": {
                "gamma": self.preprocessing.gamma,
                "crop_breast": self.preprocessing.crop_breast,
                "max_side": self.preprocessing.max_side,
                "model_resize": model_resize(self.model),
                "image_mean": list(transform.image_mean),
                "image_std": list(transform.image_std),
            },
            "thresholds": {**entry.thresholds(self.model), "display_score": self.score_thresh},
        }

    def report(self, detections: Detections) -> dict[str, Any]:
        """The JSON answer for one image: ``{"detections", "image", "model"}``."""
        return {
            "detections": detections.as_list(),
            "image": {"width": detections.width, "height": detections.height},
            "model": {"name": "mammodet", "version": self.version, "arch": self.model_name},
        }
