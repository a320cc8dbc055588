"""``python -m mammodet.evaluate``: test-set metrics with patient-bootstrap intervals, plots and galleries.

``ckpt_path=FILE [split=test]`` runs a checkpoint on a split's whole images (the checkpoint's datamodule
settings, overridable by ``data.*``); ``annotations=COCO.json predictions=RESULTS.json [image_dir=DIR]``
scores any detector's COCO results. Both then take the same path: predictions in COCO results format, in
the annotation file's pixels, scored by :func:`mammodet.metrics.results.evaluate_detections` (the
``DetectionEvaluator`` that validation logs, plus intervals). Outputs are listed in :data:`OUTPUTS`; see
``docs/evaluation.md``. File mode imports neither torch nor Lightning (checkpoint mode does, when it runs).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from mammodet.cli import command
from mammodet.data.classes import CLASSES
from mammodet.data.coco import ImageRecord
from mammodet.errors import UserError
from mammodet.metrics.coco_io import (
    coco_results,
    predictions_from_results,
    read_annotations,
    read_ground_truth,
    read_json,
)
from mammodet.metrics.plots import (
    draw_gallery,
    missed_lesions,
    plot_confusion_matrix,
    plot_froc,
    plot_pr_curves,
    worst_false_positives,
)
from mammodet.metrics.results import EvalSettings, evaluate_detections, markdown_table
from mammodet.metrics.strata import density_values

if TYPE_CHECKING:
    from mammodet.data.sources import ImageSource
    from mammodet.training.datamodule import DetectionDataModule

log = logging.getLogger(__name__)

OUTPUTS = (
    "metrics.json",
    "metrics.md",
    "predictions.json",
    "pr_curves.png",
    "froc.png",
    "confusion_matrix.png",
    "gallery_false_positives.png",
    "gallery_missed_lesions.png",
)
"""Files written to ``out_dir`` (the galleries only when image pixels are available)."""


def default_out_dir(ckpt_path: str | None, split: str, log_dir: str, stamp: str) -> str:
    """Checkpoint mode: ``<run>/evaluate_<split>_<stamp>`` beside the run's ``checkpoints/`` folder (where
    ``python -m mammodet.report`` finds it); file mode: ``<log_dir>/evaluate/<stamp>``."""
    if ckpt_path is None:
        return str(Path(log_dir) / "evaluate" / stamp)
    folder = Path(ckpt_path).parent
    run = folder.parent if folder.name == "checkpoints" else folder
    return str(run / f"evaluate_{split}_{stamp}")


OmegaConf.register_new_resolver("evaluate_out_dir", default_out_dir, replace=True)


def checkpoint_datamodule(ckpt_path: Path, overrides: dict[str, Any]) -> DetectionDataModule:
    """The datamodule a checkpoint was trained with, with the non-null ``overrides`` applied."""
    from mammodet.models.checkpoint import read_checkpoint  # torch: imported only in checkpoint mode
    from mammodet.training.datamodule import DetectionDataModule

    checkpoint = read_checkpoint(ckpt_path, mmap=True)
    if "datamodule_hyper_parameters" not in checkpoint:
        raise UserError(f"ckpt_path={ckpt_path}: holds no datamodule settings (not written by mammodet.train)")
    settings = dict(checkpoint["datamodule_hyper_parameters"])
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return DetectionDataModule(**settings)


def predict_split(
    ckpt_path: str, split: str, data: dict[str, Any], device: str, batch_size: int, num_workers: int
) -> tuple[list[ImageRecord], tuple[str, ...], list[dict[str, Any]], ImageSource, Path]:
    """Run a checkpoint on a split's whole images (as validation does) and return its records, class names,
    predictions in the records' pixels, the image source and the annotation file."""
    # torch, torchvision and Lightning are imported only in checkpoint mode: scoring files needs none of them.
    import torch
    from torch.utils.data import DataLoader

    from mammodet.data.detection_dataset import collate
    from mammodet.data.preprocess import unmap_boxes
    from mammodet.models import DetectorModule
    from mammodet.serving.inference import resolve_device

    path = Path(ckpt_path)
    datamodule = checkpoint_datamodule(path, data)
    annotations = datamodule.image_dir / "annotations" / f"{split}.json"
    if not annotations.is_file():
        raise UserError(
            f"split={split}: {annotations} does not exist; expected the COCO file that python -m mammodet.convert "
            f"writes in data.image_dir={datamodule.image_dir} (the checkpoint's, unless data.image_dir=... is given)"
        )
    records, class_names = read_annotations(annotations)
    if tuple(class_names) != CLASSES:
        raise UserError(
            f"{annotations}: its categories are {', '.join(class_names) or 'none'}; the checkpoint detects "
            f"{', '.join(CLASSES)} (in this order)"
        )
    if not records:
        raise UserError(f"{annotations}: holds no image to evaluate")
    datamodule.records[split] = records
    dataset = datamodule.eval_dataset(split)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    torch_device = resolve_device(device)
    model = DetectorModule.load_from_checkpoint(path, map_location=torch_device).eval()
    preds: list[dict[str, Any]] = []
    with torch.inference_mode():
        for batch_idx, (images, targets) in enumerate(loader):
            outputs = model.predict_step(([image.to(torch_device) for image in images], targets), batch_idx)
            for image, output in zip(images, outputs, strict=True):
                record = records[len(preds)]
                scale = (image.shape[-1] / record.width, image.shape[-2] / record.height)
                preds.append({**output, "boxes": unmap_boxes(output["boxes"].numpy(), None, scale)})
            log.info("predicted %d/%d images", len(preds), len(records))
    return records, class_names, preds, dataset.source, annotations


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score as configured, write every output to ``cfg.out_dir`` and return the ``metrics.json`` content."""
    checkpoint_mode = cfg.get("ckpt_path") is not None
    file_mode = cfg.get("annotations") is not None or cfg.get("predictions") is not None
    if checkpoint_mode == file_mode:
        raise UserError("give either ckpt_path=FILE [split=test] or annotations=COCO.json predictions=RESULTS.json")
    if file_mode:
        if cfg.get("annotations") is None or cfg.get("predictions") is None:
            raise UserError("file mode needs both annotations=COCO.json and predictions=RESULTS.json")
        for key, expected in (("annotations", "a COCO instances json"), ("predictions", "a COCO results json")):
            if not Path(cfg[key]).is_file():
                raise UserError(f"{key}={cfg[key]}: no such file; expected {expected}")
        if cfg.get("image_dir") and not Path(cfg.image_dir).is_dir():
            raise UserError(f"image_dir={cfg.image_dir}: no such folder; expected the annotations' images")
    out_dir = Path(cfg.out_dir)
    source: ImageSource | None
    if checkpoint_mode:
        data = {key: cfg.data.get(key) for key in ("image_dir", "source", "dicom_root", "max_side")}
        records, class_names, raw, source, annotations = predict_split(
            cfg.ckpt_path, cfg.split, data, cfg.device, cfg.batch_size, cfg.num_workers
        )
        results = coco_results(records, raw)
        records, class_names, targets = read_ground_truth(annotations)
        origin = {"mode": "checkpoint", "checkpoint": str(cfg.ckpt_path), "split": cfg.split}
    else:
        annotations = Path(cfg.annotations)
        records, class_names, targets = read_ground_truth(annotations)
        results = read_json(cfg.predictions, "predictions")
        source = None
        if cfg.get("image_dir"):
            from mammodet.data.sources import FileSource  # torch: only to draw the galleries

            source = FileSource(cfg.image_dir)
        origin = {"mode": "files", "predictions": str(cfg.predictions)}
    preds_path = out_dir / "predictions.json"
    # Checkpoint predictions are scored as written, so re-scoring predictions.json gives the same numbers.
    preds = predictions_from_results(
        results, records, len(class_names), preds_path if checkpoint_mode else Path(cfg.predictions)
    )
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: every input has been read
    settings = EvalSettings(
        cfg.score_threshold,
        cfg.iou_threshold,
        cfg.criterion,
        cfg.n_boot,
        cfg.confidence,
        cfg.seed,
        tuple(cfg.froc_fp_rates),
        cfg.froc_interpolation,
    )
    groups = [record.patient_id or f"image {record.image_id}" for record in records]
    image_ids = [record.image_id for record in records]
    evaluation = evaluate_detections(preds, targets, groups, class_names, settings, image_ids)
    metrics = {**evaluation.metrics, "source": {**origin, "annotations": str(annotations)}}
    density_of = {image["id"]: image.get("density") for image in read_json(annotations, "annotations")["images"]}
    densities = [density_of.get(record.image_id) for record in records]
    metrics.update(density_values(preds, targets, densities, class_names, settings.iou_threshold, settings.criterion))

    table = markdown_table(metrics)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "metrics.md").write_text(table + "\n")
    preds_path.write_text(json.dumps(results))
    ap_50 = {name: c["ap_50"] for name, c in metrics["per_class"].items()}
    plot_pr_curves(evaluation.matches, class_names, ap_50, settings.score_threshold, out_dir / "pr_curves.png")
    plot_froc(evaluation.froc, out_dir / "froc.png")
    plot_confusion_matrix(
        evaluation.confusion_matrix, metrics["confusion_matrix"]["labels"], out_dir / "confusion_matrix.png"
    )
    if source is None:
        print("no image_dir given: galleries skipped (file mode draws them from image_dir/<file_name>)")
    else:
        galleries = {
            "gallery_false_positives.png": (
                "Highest-scoring false positives",
                worst_false_positives(evaluation.matches, preds, records, class_names, cfg.gallery_size),
            ),
            "gallery_missed_lesions.png": (
                "Missed lesions",
                missed_lesions(
                    evaluation.lesions, targets, records, class_names, settings.score_threshold, cfg.gallery_size
                ),
            ),
        }
        for name, (title, items) in galleries.items():
            draw_gallery(items, records, source, preds, settings.score_threshold, title, out_dir / name)
    print(table)
    print(f"\noutputs in {out_dir}")
    return metrics


@command("evaluate")
def main(cfg: DictConfig) -> None:
    """Evaluate; bad input stops with one line naming the file (``mammodet.cli``)."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
