"""``python -m mammodet.export``: files, config, model card, and TorchScript/ONNX parity with PyTorch."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from helpers import random_checkpoint, real_mammogram_files
from safetensors.torch import load_file
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mammodet.config import compose
from mammodet.data.classes import CLASSES
from mammodet.export import main as export_main
from mammodet.models import FasterRCNNModule
from mammodet.serving import export as export_module
from mammodet.serving.export import (
    EXPORTER_NOTE,
    SYNTHETIC,
    checkpoint_data,
    export_model,
    exportable,
    onnx_forward,
    parity_matches,
    torchscript_forward,
    trained_on,
)
from mammodet.serving.inference import Detections, Detector, Forward, file_sha256
from mammodet.serving.model_card import model_card

METRICS = {  # as training's test_metrics.json spells them; the checkpoint is the tiny one exported
    "map": 0.25,
    "map_50": 0.5,
    "ap_50/mass_high": 0.75,
    "ap/calcification": -1.0,
    "f1_macro": 0.123456,
    "f1/mass_low": 0.4,
    "froc_cpm": 0.3,
    "sens_at_1fp": 0.6,
}


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported by the command's function, with metrics for the model card."""
    out = tmp_path_factory.mktemp("export")
    (out / "metrics.json").write_text(json.dumps({**METRICS, "checkpoint": str(tiny_checkpoint)}))
    cfg = compose(
        "export",
        [
            f"ckpt_path={tiny_checkpoint}",
            f"out_dir={out / 'model'}",
            f"metrics_path={out / 'metrics.json'}",  # dataset_name: from the checkpoint (synthetic data)
        ],
    )
    export_main.__wrapped__(cfg)
    return out / "model"


@pytest.fixture(scope="module")
def detector(tiny_checkpoint: Path) -> Detector:
    return Detector.from_checkpoint(tiny_checkpoint, "cpu")


def test_files_config_and_weights(exported: Path, detector: Detector) -> None:
    assert sorted(p.name for p in exported.iterdir() if not p.name.startswith(".")) == [
        "README.md",
        "config.json",
        "model.onnx",
        "model.pt",
        "model.safetensors",
    ]
    config = json.loads((exported / "config.json").read_text())
    assert {key: config[key] for key in detector.info()} == detector.info()
    assert config["files"] == {"safetensors": "model.safetensors", "torchscript": "model.pt", "onnx": "model.onnx"}
    assert config["exporter"] == {"tool": "torchscript", "why": EXPORTER_NOTE}
    assert config["onnx"]["input"] == {
        "name": "image",
        "shape": [1, 3, "height", "width"],
        "dtype": "float32",
        "range": [0.0, 1.0],
    }
    model = FasterRCNNModule(**config["hyper_parameters"]).model  # as the model card shows
    model.load_state_dict(load_file(exported / "model.safetensors"))
    expected = detector.model.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    onnx.checker.check_model(str(exported / "model.onnx"))
    umask = os.umask(0)
    os.umask(umask)
    assert {p.name: p.stat().st_mode & 0o777 for p in exported.iterdir() if p.is_file()} == dict.fromkeys(
        ["README.md", "config.json", "model.onnx", "model.pt", "model.safetensors"], 0o666 & ~umask
    )


def test_model_card(exported: Path, detector: Detector) -> None:
    card = (exported / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    metadata = yaml.safe_load(front)
    assert metadata["pipeline_tag"] == "object-detection" and metadata["datasets"] == ["synthetic CBIS-DDSM"]
    (entry,) = metadata["model-index"]
    assert entry["name"] == "mammodet-frcnn_small"
    (result,) = entry["results"]
    assert result["dataset"] == {"name": "synthetic CBIS-DDSM", "type": "synthetic-cbis-ddsm", "split": "test"}
    assert result["metrics"] == [  # each under its key in the file; -1 (undefined) and the checkpoint left out
        {"type": "map", "name": "mAP@[0.50:0.95]", "value": 0.25},
        {"type": "map_50", "name": "mAP@0.50", "value": 0.5},
        {"type": "f1_macro", "name": "F1 (macro)", "value": 0.1235},
        {"type": "froc_cpm", "name": "FROC CPM", "value": 0.3},
        {"type": "sens_at_1fp", "name": "sensitivity at 1 FP/image", "value": 0.6},
        {"type": "ap_50/mass_high", "name": "AP@0.50 mass_high", "value": 0.75},
        {"type": "f1/mass_low", "name": "F1 mass_low", "value": 0.4},
    ]
    assert (
        "From `metrics.json`: the test split of synthetic CBIS-DDSM, whole images, checkpoint `last.ckpt` "
        f"(SHA-256 `{detector.sha256}`). That is the checkpoint exported here.\n"
    ) in body
    table = [line for line in body.splitlines() if line.startswith("| `")]
    assert table == [
        "| `map` | mAP@[0.50:0.95] | 0.2500 |",
        "| `map_50` | mAP@0.50 | 0.5000 |",
        "| `f1_macro` | F1 (macro) | 0.1235 |",
        "| `froc_cpm` | FROC CPM | 0.3000 |",
        "| `sens_at_1fp` | sensitivity at 1 FP/image | 0.6000 |",
        "| `ap_50/mass_high` | AP@0.50 mass_high | 0.7500 |",
        "| `ap/calcification` | AP@[0.50:0.95] calcification | undefined |",
        "| `f1/mass_low` | F1 mass_low | 0.4000 |",
    ]
    assert "### Counts and settings" not in body  # test_metrics.json holds no counts
    for heading in ("## Intended use", "## Limitations", "## Training data", "## Files and how to load them"):
        assert heading in body
    assert "Research use only, not for clinical use" in body and detector.version in body
    assert "synthetic mammograms rendered by `mammodet.synth`" in body


def evaluate_metrics(checkpoint: Path) -> dict:
    """An evaluate ``metrics.json`` of 12 random images (6 patients), scored from ``checkpoint`` on the val split."""
    from helpers import random_data

    from mammodet.metrics.results import EvalSettings, evaluate_detections

    preds, targets = random_data(0, 12)
    groups = [i // 2 for i in range(12)]
    evaluation = evaluate_detections(preds, targets, groups, CLASSES, EvalSettings(n_boot=20))
    source = {"mode": "checkpoint", "checkpoint": str(checkpoint), "split": "val", "annotations": "val.json"}
    return json.loads(json.dumps({**evaluation.metrics, "source": source}))


def test_model_card_from_evaluate_metrics(exported: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Nested keys become dotted paths; counts and settings get their own table; split and checkpoint are named."""
    config = json.loads((exported / "config.json").read_text())
    metrics = evaluate_metrics(tiny_checkpoint)
    card = model_card(config, metrics, "CBIS-DDSM", tmp_path / "metrics.json")
    _, front, body = card.split("---\n", 2)
    (result,) = yaml.safe_load(front)["model-index"][0]["results"]
    assert result["dataset"]["split"] == "val"
    entries = {entry["type"]: entry for entry in result["metrics"]}
    assert entries["per_class.mass_low.ap_50"] == {
        "type": "per_class.mass_low.ap_50",
        "name": "AP@0.50 mass_low",
        "value": round(metrics["per_class"]["mass_low"]["ap_50"], 4),
    }
    assert entries["froc.sensitivity_at.0.125"]["name"] == "sensitivity at 0.125 FP/image"
    assert entries["froc.cpm"]["value"] == round(metrics["froc"]["cpm"], 4)
    assert entries["per_class.calcification.precision"]["name"] == "precision calcification"
    assert entries["per_class.mass_high.froc_cpm"]["name"] == "FROC CPM mass_high"
    assert {f"per_class.{c}.{k}" for c in CLASSES for k in ("ap", "ap_50", "ap_75")} <= set(entries)
    counted = ("num_images", "score_threshold", "criterion", "per_class.mass_low.tp", "froc.interpolation")
    assert not set(counted) & set(entries) and not any(key.startswith(("ci.", "values.")) for key in entries)
    metrics_table, counts_table = body.split("### Counts and settings")
    assert f"| `map_50` | mAP@0.50 | {metrics['map_50']:.4f} |" in metrics_table
    assert "| `num_images` | images scored | 12 |" in counts_table
    assert "| `criterion` | hit criterion (F1, FROC) | iou |" in counts_table
    mass_low = metrics["per_class"]["mass_low"]
    assert f"| `per_class.mass_low.tp` | true positives mass_low | {mass_low['tp']} |" in counts_table
    assert "`num_images`" not in metrics_table and "`per_class.mass_low.ap_50`" not in counts_table
    assert "the val split of CBIS-DDSM, whole images, checkpoint `last.ckpt` (SHA-256 " in body
    assert "That is the checkpoint exported here." in body

    other = tmp_path / "other.ckpt"
    other.write_bytes(b"another checkpoint")
    card = model_card(config, {**metrics, "source": {**metrics["source"], "checkpoint": str(other)}}, "CBIS-DDSM")
    assert f"checkpoint `other.ckpt` (SHA-256 `{file_sha256(other)}`). **That is not the checkpoint" in card
    card = model_card(config, {**metrics, "source": {**metrics["source"], "checkpoint": "gone.ckpt"}}, "CBIS-DDSM")
    assert "checkpoint `gone.ckpt` (not found at export, so its SHA-256 is unknown)" in card


def test_usage_snippets_run_as_written(exported: Path) -> None:
    """Every python block of the card runs, unchanged, in the export folder."""
    card = (exported / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(snippets) == 2
    for snippet in snippets:
        result = subprocess.run(
            [sys.executable, "-c", snippet],
            cwd=exported,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.startswith("{'boxes': (") and "'labels': (" in result.stdout


def test_the_card_names_the_data_the_checkpoint_was_trained_on(
    exported: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = checkpoint_data(tiny_checkpoint)  # csv_dir beside the generator's synth_truth.json
    assert data["dataset"] == "synthetic CBIS-DDSM" and trained_on(data) == "synthetic CBIS-DDSM"
    (tmp_path / "csv").mkdir()
    assert data["provenance"] == "synthetic"  # recorded at training
    real = {**data, "csv_dir": str(tmp_path / "csv"), "dataset": "CBIS-DDSM", "provenance": "real"}
    assert trained_on(real) == "CBIS-DDSM" and trained_on({**real, "dataset": None}) == "CBIS-DDSM"
    assert trained_on({**real, "provenance": "synthetic"}) == "synthetic CBIS-DDSM"  # even when the data are gone
    older = {key: value for key, value in real.items() if key != "provenance"}  # a checkpoint from before
    assert trained_on(older) == "CBIS-DDSM" and trained_on({**older, "dataset": "synthetic CBIS-DDSM"}) == SYNTHETIC
    config = json.loads((exported / "config.json").read_text())
    assert "mammodet.synth" not in model_card(config, None, "CBIS-DDSM")


def assert_same(a: Detections, b: Detections, box_atol: float, score_atol: float) -> None:
    """The same detections up to the tolerances; the order of near-equal scores may differ (the tiny model
    scores many boxes alike), so each detection of ``a`` is matched to an unused one of ``b``."""
    assert len(a.scores) == len(b.scores) > 0
    np.testing.assert_allclose(a.scores, b.scores, atol=score_atol, rtol=0)  # both sorted by score
    unused = set(range(len(b.scores)))
    for box, score, label in zip(a.boxes, a.scores, a.labels, strict=True):
        match = next(
            j
            for j in sorted(unused)
            if b.labels[j] == label
            and abs(b.scores[j] - score) <= score_atol
            and np.abs(b.boxes[j] - box).max() <= box_atol
        )
        unused.remove(match)


@pytest.fixture(scope="module")
def runtimes(exported: Path) -> dict[str, Forward]:
    """The exported TorchScript and ONNX models, loaded once."""
    return {
        "torchscript": torchscript_forward(exported / "model.pt"),
        "onnx": onnx_forward(exported / "model.onnx"),
    }


@pytest.mark.parametrize("image", ["lesions", "clear"])
def test_torchscript_and_onnx_match_pytorch(
    image: str, runtimes: dict[str, Forward], detector: Detector, mammograms: dict[str, Path]
) -> None:
    prepared = detector.prepare(mammograms[image])
    reference = detector.run([prepared])[0]
    assert_same(detector.run([prepared], runtimes["torchscript"])[0], reference, 1e-4, 1e-6)
    onnx_detections = detector.run([prepared], runtimes["onnx"])[0]
    assert parity_matches(reference, onnx_detections) == len(reference.scores) == len(onnx_detections.scores) > 0


@pytest.fixture(scope="module")
def random_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Detector, Path, list[warnings.WarningMessage]]:
    """A random-weight small detector exported to ONNX, with every warning the export raised."""
    work = tmp_path_factory.mktemp("random_export")
    detector = Detector.from_checkpoint(random_checkpoint(work / "random.ckpt"), "cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = export_model(detector, work / "model")
    return detector, files["onnx"], caught


def test_export_prints_no_deprecation_warning(random_export: tuple[Detector, Path, list]) -> None:
    caught = random_export[2]
    assert [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))] == []


def test_onnx_repeats_predict_on_a_real_mammogram(random_export: tuple[Detector, Path, list]) -> None:
    """The ONNX graph takes predict's own input (any size: here a real film mammogram cropped to the breast and
    shrunk to 512 px) and gives predict's detections; it was traced on a 256 x 192 image."""
    detector, onnx_path, _ = random_export
    prepared = detector.prepare(real_mammogram_files()[0])
    assert prepared.tensor.shape[1:] != (256, 192) and max(prepared.tensor.shape[1:]) == 512
    reference = detector.run([prepared])[0]
    exported = detector.run([prepared], onnx_forward(onnx_path))[0]
    assert len(reference.scores) == len(exported.scores) == 100  # the model's detections_per_img
    assert parity_matches(reference, exported) == 100
    np.testing.assert_allclose(exported.scores, reference.scores, atol=1e-4, rtol=0)


def test_parity_matches_counts_one_to_one() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5], [50, 50, 60, 60]], float)
    reference = Detections(boxes, np.array([0.9, 0.8, 0.7]), np.array([1, 1, 2]), 100, 100)
    assert parity_matches(reference, reference) == 3
    assert parity_matches(reference, reference.select(np.array([0, 2]))) == 2  # one box cannot match two
    shifted = Detections(boxes + 2, reference.scores, reference.labels, 100, 100)  # IoU 0.67 < 0.9
    assert parity_matches(reference, shifted) == 0
    rescored = Detections(boxes, reference.scores - 0.03, reference.labels, 100, 100)
    relabelled = Detections(boxes, reference.scores, np.array([2, 2, 1]), 100, 100)
    assert parity_matches(reference, rescored) == parity_matches(reference, relabelled) == 0


def test_scripted_torchvision_resize_matches_eager(detector: Detector, tmp_path: Path) -> None:
    """torchvision scripts its resize scale in float32: a 160 x 100 image would become 153 x 95, not 153 x 96."""
    model = copy.deepcopy(detector.model)
    transform = model.transform
    model.transform = GeneralizedRCNNTransform(96, 160, transform.image_mean, transform.image_std).eval()
    with export_module._legacy_tools():
        torch.jit.script(exportable(model)).save(str(tmp_path / "model.pt"))
    image = torch.rand(3, 160, 100, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        eager = model([image])[0]
    scripted = torchscript_forward(tmp_path / "model.pt")([image])[0]
    assert torch.equal(scripted["scores"], eager["scores"])
    size = {"height": 160, "width": 100}
    assert_same(
        *(
            Detections(o["boxes"].double().numpy(), o["scores"].double().numpy(), o["labels"].numpy(), **size)
            for o in (scripted, eager)
        ),
        1e-4,
        0.0,
    )


def test_push_to_hub_uploads_the_folder(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the call is checked, with a stand-in client: nothing goes to the network."""
    calls = []

    class FakeApi:
        def create_repo(self, repo_id: str, **options: object) -> None:
            calls.append(("create_repo", repo_id, options))

        def upload_folder(self, **options: object) -> str:
            calls.append(("upload_folder", options))
            return "https://huggingface.co/user/model/commit/1"

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    assert export_module.push_to_hub(exported, "user/model") == "https://huggingface.co/user/model/commit/1"
    assert calls == [
        ("create_repo", "user/model", {"repo_type": "model", "private": True, "exist_ok": True}),
        ("upload_folder", {"folder_path": str(exported), "repo_id": "user/model", "repo_type": "model"}),
    ]
