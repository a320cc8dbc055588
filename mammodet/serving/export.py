"""Export a detector: safetensors weights, TorchScript, ONNX, ``config.json`` and a Hugging Face model card.

``model.safetensors`` holds the torchvision detector's state dict only; ``config.json`` has what rebuilds
and feeds it (``hyper_parameters`` for ``FasterRCNNModule``, classes, preprocessing, thresholds).
``model.pt`` is the scripted torchvision model: ``model(images)`` returns ``(losses, detections)`` with
``images`` a list of ``[3, H, W]`` tensors in 0..1 of any size. ``model.onnx`` takes one fixed-size
``[1, 3, H, W]`` image (torchvision's ONNX export works at a fixed size) and returns ``boxes``, ``scores``,
``labels``: put the preprocessed image at the top-left of a zero canvas of that size (``padded``); boxes then
come out in the preprocessed image's pixels. Both are checked against PyTorch by ``tests/test_export.py``
through ``torchscript_forward`` and ``onnx_forward``, runtimes for ``Detector.run``.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mammodet import __version__
from mammodet.serving.inference import Detector, Forward, model_resize
from mammodet.serving.model_card import SYNTHETIC, model_card

ONNX_OPSET = 17


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


def onnx_input_size(detector: Detector, size: list[int] | None) -> tuple[int, int]:
    """The ONNX input ``(H, W)``: ``size``, else a square of the preprocessing's ``max_side``."""
    if size:
        height, width = size
        return int(height), int(width)
    side = detector.preprocessing.max_side
    if side is None:
        raise ValueError("the checkpoint sets no max_side: give the ONNX input size as onnx_size=[H,W]")
    return side, side


def padded(forward: Forward, size: tuple[int, int]) -> Forward:
    """``forward`` run on each image placed at the top-left of a zero canvas of ``size`` (H, W).

    Boxes are then in the image's own pixels; they are clipped to it.
    """
    height, width = size

    def run(images: list[Tensor]) -> list[dict[str, Tensor]]:
        canvases = []
        for image in images:
            _, h, w = image.shape
            if h > height or w > width:
                raise ValueError(f"image {h} x {w} does not fit the {height} x {width} input")
            canvas = image.new_zeros((3, height, width))
            canvas[:, :h, :w] = image
            canvases.append(canvas)
        outputs = forward(canvases)
        for image, output in zip(images, outputs, strict=True):
            _, h, w = image.shape
            output["boxes"] = torch.stack(
                [
                    output["boxes"][:, 0].clamp(0, w),
                    output["boxes"][:, 1].clamp(0, h),
                    output["boxes"][:, 2].clamp(0, w),
                    output["boxes"][:, 3].clamp(0, h),
                ],
                dim=1,
            )
        return outputs

    return run


def torchscript_forward(path: str | Path) -> Forward:
    """A ``Forward`` running an exported ``model.pt`` on the CPU."""
    module = torch.jit.load(str(path), map_location="cpu")

    def run(images: list[Tensor]) -> list[dict[str, Tensor]]:
        with torch.inference_mode():
            _, detections = module(images)
        return detections

    return run


def onnx_forward(path: str | Path, size: tuple[int, int]) -> Forward:
    """A ``Forward`` running an exported ``model.onnx`` with onnxruntime on the CPU, image by image, padded."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(images: list[Tensor]) -> list[dict[str, Tensor]]:
        outputs = []
        for image in images:
            boxes, scores, labels = session.run(None, {"image": np.ascontiguousarray(image[None].numpy())})
            arrays = {"boxes": boxes, "scores": scores, "labels": labels}
            outputs.append({key: torch.from_numpy(value) for key, value in arrays.items()})
        return outputs

    return padded(run, size)


def trained_on(data_hparams: Mapping[str, Any]) -> str:
    """The data a checkpoint was trained on, from its ``datamodule_hyper_parameters``: ``SYNTHETIC`` when
    ``data.csv_dir`` sits beside the generator's ``synth_truth.json``, else the run's ``data.dataset`` (the demo
    sets ``SYNTHETIC``), ``CBIS-DDSM`` by default."""
    csv_dir = data_hparams.get("csv_dir")
    if csv_dir and (Path(csv_dir).parent / "synth_truth.json").is_file():
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
    onnx_size: list[int] | None = None,
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
    torch.jit.script(model).save(str(files["torchscript"]))
    config: dict[str, Any] = {
        **info,
        "mammodet_version": __version__,
        "hyper_parameters": {**detector.hyper_parameters, "load_pretrained": False},
        "files": {"safetensors": "model.safetensors", "torchscript": "model.pt"},
    }
    if onnx:
        height, width = onnx_input_size(detector, onnx_size)
        files["onnx"] = out / "model.onnx"
        _export_onnx(model, files["onnx"], height, width)
        config["files"]["onnx"] = "model.onnx"
        config["onnx"] = {
            "input": {"name": "image", "shape": [1, 3, height, width], "dtype": "float32", "range": [0.0, 1.0]},
            "outputs": ["boxes", "scores", "labels"],
            "note": "the preprocessed image goes at the top-left of a zero canvas; boxes are in its pixels",
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


def _export_onnx(model: nn.Module, path: Path, height: int, width: int) -> None:
    """Trace ``model`` for one ``[1, 3, height, width]`` image to ONNX (TorchScript-based exporter)."""
    example = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)  # torchvision's tracing notes, about code it handles
        torch.onnx.export(
            _OneImage(model),
            (example,),
            str(path),
            opset_version=ONNX_OPSET,
            dynamo=False,
            input_names=["image"],
            output_names=["boxes", "scores", "labels"],
        )


def push_to_hub(out_dir: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload an export folder to a Hugging Face model repository (needs network and a token); its URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return str(api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, repo_type="model"))
