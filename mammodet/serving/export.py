"""Export a detector: safetensors weights, TorchScript, ONNX, ``config.json`` and a Hugging Face model card.

``model.safetensors`` holds the torchvision detector's state dict only; ``config.json`` has what rebuilds
and feeds it (``hyper_parameters`` for ``DetectorModule``, classes, preprocessing, thresholds).
``model.pt`` is the scripted torchvision model: ``model(images)`` returns ``(losses, detections)`` with
``images`` a list of ``[3, H, W]`` tensors in 0..1 of any size. ``model.onnx`` takes one ``[1, 3, H, W]``
image of any height and width, the very tensor ``predict`` gives the model (``Detector.prepare``), and
returns ``boxes``, ``scores``, ``labels`` in that tensor's pixels. Both are checked against PyTorch by
``tests/test_export.py`` (and ONNX on the 8 real mammograms by ``bench/onnx_parity.py``) through
``torchscript_forward`` and ``onnx_forward``, runtimes for ``Detector.run``.

Both files come from torch's TorchScript-based tools (``torch.jit.script``, ``torch.onnx.export(dynamo=False)``),
which torch 2.14 deprecates: its maintained ``torch.export`` cannot capture torchvision's detection models
(``EXPORTER_NOTE``), so their deprecation warnings are silenced around these two calls only.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mammodet import __version__
from mammodet.data.provenance import checkpoint_provenance
from mammodet.metrics.matching import box_iou
from mammodet.serving.inference import Detections, Detector, Forward, model_resize
from mammodet.serving.model_card import SYNTHETIC, model_card

ONNX_OPSET = 17
ONNX_TRACE_SIZE = (256, 192)
"""The example image's (H, W) the ONNX graph is traced with; height and width stay dynamic in the graph."""

EXPORTER_NOTE = (
    "model.pt and model.onnx come from torch's TorchScript-based tools (torch.jit.script, "
    "torch.onnx.export(dynamo=False)), deprecated in torch 2.14, because its maintained torch.export "
    "(behind torch.onnx.export(dynamo=True)) cannot capture torchvision's Faster R-CNN: strict and non-strict "
    "export both stop at torchvision/ops/boxes.py batched_nms, whose branch on the number of boxes "
    "(boxes.numel() > 4000) depends on the data (GuardOnDataDependentSymNode; torch 2.14.1, torchvision 0.29.1)."
)
"""Why the export uses the deprecated exporters: ``config.json``'s ``exporter.why`` and the model card say it."""


class _ExactScaleTransform(GeneralizedRCNNTransform):
    """torchvision's transform, with the inference resize scale computed in double precision also when scripted.

    torchvision computes it in float32 under TorchScript and ONNX tracing but in double in eager PyTorch, so
    e.g. a 160 x 100 input with ``min_size`` 96 becomes 153 x 95 instead of 153 x 96 and the detections differ.
    """

    def resize(
        self,
        image: Tensor,
        target: Optional[dict[str, Tensor]] = None,  # noqa: UP045 (TorchScript needs Optional)
    ) -> tuple[Tensor, Optional[dict[str, Tensor]]]:  # noqa: UP045
        height, width = image.shape[-2:]
        scale = min(float(self.min_size[-1]) / min(height, width), float(self.max_size) / max(height, width))
        resized = F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
        )[0]
        return resized, target


def exportable(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode detector that scripts and traces to the eager model's results."""
    clone = copy.deepcopy(model)
    transform = model.transform
    if model_resize(model) is not None and transform.fixed_size is None:  # torchvision's scale-based resize
        clone.transform = _ExactScaleTransform(
            transform.min_size,
            transform.max_size,
            transform.image_mean,
            transform.image_std,
            transform.size_divisible,
        )
    return clone.eval()


class _OneImage(nn.Module):
    """The detector for one ``[1, 3, H, W]`` image, returning ``(boxes, scores, labels)``: what ONNX exports."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        output = self.model([image[0]])[0]
        return output["boxes"], output["scores"], output["labels"]


def torchscript_forward(path: str | Path) -> Forward:
    """A ``Forward`` running an exported ``model.pt`` on the CPU."""
    with _legacy_tools():
        module = torch.jit.load(str(path), map_location="cpu")

    def run(images: list[Tensor]) -> list[dict[str, Tensor]]:
        with _legacy_tools(), torch.inference_mode():  # and torchvision's note that scripting returns losses too
            _, detections = module(images)
        return detections

    return run


def onnx_forward(path: str | Path) -> Forward:
    """A ``Forward`` running an exported ``model.onnx`` with onnxruntime on the CPU, image by image."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(images: list[Tensor]) -> list[dict[str, Tensor]]:
        outputs = []
        for image in images:
            boxes, scores, labels = session.run(None, {"image": np.ascontiguousarray(image[None].numpy())})
            arrays = {"boxes": boxes, "scores": scores, "labels": labels}
            outputs.append({key: torch.from_numpy(value) for key, value in arrays.items()})
        return outputs

    return run


PARITY_IOU = 0.9
PARITY_SCORE = 0.02
"""An exported model's detection is the same as PyTorch's at IoU >= ``PARITY_IOU``, same label, scores within
``PARITY_SCORE``."""


def parity_matches(reference: Detections, exported: Detections) -> int:
    """How many of ``reference``'s detections an exported model repeats, one to one: each (best score first)
    takes the unused ``exported`` detection of its label within ``PARITY_SCORE`` that overlaps it most, when
    their IoU is at least ``PARITY_IOU``."""
    if not len(reference.scores) or not len(exported.scores):
        return 0
    ious = box_iou(reference.boxes, exported.boxes)
    used = np.zeros(len(exported.scores), bool)
    matches = 0
    for i in np.argsort(-reference.scores, kind="stable"):
        fits = (
            ~used
            & (exported.labels == reference.labels[i])
            & (np.abs(exported.scores - reference.scores[i]) <= PARITY_SCORE)
            & (ious[i] >= PARITY_IOU)
        )
        if fits.any():
            used[np.flatnonzero(fits)[np.argmax(ious[i][fits])]] = True
            matches += 1
    return matches


def trained_on(data_hparams: Mapping[str, Any]) -> str:
    """The data a checkpoint was trained on, from its ``datamodule_hyper_parameters``: ``SYNTHETIC`` when it
    records (or, written before that was recorded, its dataset name or csv_dir shows) ``provenance`` synthetic,
    else the run's ``data.dataset``, ``CBIS-DDSM`` by default."""
    if checkpoint_provenance(data_hparams) == "synthetic":
        return SYNTHETIC
    return data_hparams.get("dataset") or "CBIS-DDSM"


def checkpoint_data(path: str | Path) -> dict[str, Any]:
    """A checkpoint's ``datamodule_hyper_parameters`` (memory-mapped: the weights are not read)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return dict(checkpoint.get("datamodule_hyper_parameters") or {})


def export_model(
    detector: Detector,
    out_dir: str | Path,
    metrics: dict[str, Any] | None = None,
    onnx: bool = True,
    dataset_name: str = "CBIS-DDSM",
    metrics_path: str | Path | None = None,
) -> dict[str, Path]:
    """Write the export files of a CPU ``detector`` to ``out_dir``; returns them by kind.

    ``metrics`` (read from ``metrics_path``: ``evaluate``'s ``metrics.json`` or a run's ``test_metrics.json``) fill
    the model card's ``model-index`` and Evaluation section (:mod:`mammodet.serving.model_card`).
    """
    if detector.device.type != "cpu":
        raise ValueError("export a detector loaded on the CPU")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = exportable(detector.model)
    info = detector.info()
    files = {"safetensors": out / "model.safetensors", "torchscript": out / "model.pt"}
    state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(files["safetensors"]), metadata={"format": "pt", "version": detector.version})
    with _legacy_tools():
        torch.jit.script(model).save(str(files["torchscript"]))
    config: dict[str, Any] = {
        **info,
        "mammodet_version": __version__,
        "hyper_parameters": {**detector.hyper_parameters, "load_pretrained": False},
        "files": {"safetensors": "model.safetensors", "torchscript": "model.pt"},
    }
    config["exporter"] = {"tool": "torchscript", "why": EXPORTER_NOTE}
    if onnx:
        files["onnx"] = out / "model.onnx"
        _export_onnx(model, files["onnx"])
        config["files"]["onnx"] = "model.onnx"
        config["onnx"] = {
            "opset": ONNX_OPSET,
            "input": {
                "name": "image",
                "shape": [1, 3, "height", "width"],
                "dtype": "float32",
                "range": [0.0, 1.0],
            },
            "outputs": ["boxes", "scores", "labels"],
            "note": "the image as predict prepares it (decoded, cropped, shrunk), any size; boxes in its pixels",
        }
    files["config"] = out / "config.json"
    files["config"].write_text(json.dumps(config, indent=2))
    files["card"] = out / "README.md"
    files["card"].write_text(model_card(config, metrics, dataset_name, metrics_path))
    umask = os.umask(0)
    os.umask(umask)
    for path in files.values():  # safetensors writes its file 0600; every file gets what the umask allows
        path.chmod(0o666 & ~umask)
    return files


@contextlib.contextmanager
def _legacy_tools() -> Iterator[None]:
    """Silence torch's deprecation of its TorchScript-based tools (see ``EXPORTER_NOTE``) and the tracer's notes
    on torchvision code written for tracing, around our own export calls only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.jit\.(script|load)` is deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*legacy TorchScript-based ONNX")
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)  # torchvision's and the exporter's notes on code they handle
        yield


def _export_onnx(model: nn.Module, path: Path) -> None:
    """Trace ``model`` for one ``[1, 3, H, W]`` image to ONNX with height and width left dynamic."""
    example = torch.rand(1, 3, *ONNX_TRACE_SIZE, generator=torch.Generator().manual_seed(0))
    with _legacy_tools(), torch.no_grad():
        torch.onnx.export(
            _OneImage(model),
            (example,),
            str(path),
            opset_version=ONNX_OPSET,
            dynamo=False,
            input_names=["image"],
            output_names=["boxes", "scores", "labels"],
            dynamic_axes={
                "image": {2: "height", 3: "width"},
                "boxes": {0: "detections"},
                "scores": {0: "detections"},
                "labels": {0: "detections"},
            },
        )


def push_to_hub(out_dir: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload an export folder to a Hugging Face model repository (needs network and a token); its URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return str(api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, repo_type="model"))
