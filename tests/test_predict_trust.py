"""What ``python -m mammodet.predict`` says is true (issue 20): the warning for a synthetic-only model, a log of
what ran, its own outputs never read back, bad DICOM files skipped and named without their attribute values."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from helpers import random_checkpoint, two_frames_unannounced

from mammodet.config import compose
from mammodet.predict import main as predict_main
from mammodet.serving.inference import Detector, file_sha256
from mammodet.serving.predict import predict_files
from mammodet.training.datamodule import DetectionDataModule


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-weight checkpoints recording synthetic and real training data, whose data folders are gone."""
    work = tmp_path_factory.mktemp("provenance")
    gone = str(work / "deleted" / "csv")  # neither its synth_truth.json nor its name tells what it was
    return {
        kind: random_checkpoint(work / f"{kind}.ckpt", dataset="CBIS-DDSM", csv_dir=gone, provenance=kind)
        for kind in ("synthetic", "real")
    }


@pytest.fixture(scope="module")
def detector(checkpoints: dict[str, Path]) -> Detector:
    return Detector.from_checkpoint(checkpoints["real"], "cpu")


def test_training_records_the_provenance_of_its_data(synthetic_classic: Path, tmp_path: Path) -> None:
    def provenance(**options: object) -> str:
        return DetectionDataModule(image_dir=str(tmp_path / "converted"), **options).hparams["provenance"]

    (tmp_path / "csv").mkdir()
    assert provenance(csv_dir=str(synthetic_classic / "csv")) == "synthetic"  # beside the generator's truth file
    assert provenance(dataset="synthetic CBIS-DDSM", csv_dir=str(tmp_path / "csv")) == "synthetic"  # the demos
    assert provenance(csv_dir=str(tmp_path / "csv")) == "real"
    assert provenance(csv_dir=str(synthetic_classic / "csv"), provenance="real") == "real"  # stated wins
    with pytest.raises(ValueError, match=r"data\.provenance must be synthetic, real or null, got 'fake'"):
        provenance(provenance="fake")


def test_tiny_training_run_records_synthetic(tiny_checkpoint: Path) -> None:
    import torch

    data = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["datamodule_hyper_parameters"]
    assert data["provenance"] == "synthetic"


def test_predict_warns_once_about_a_synthetic_only_model_and_logs_what_ran(
    checkpoints: dict[str, Path], mammograms: dict[str, Path], tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "clear.dcm").write_bytes(mammograms["clear"].read_bytes())
    (inputs / "empty.dcm").write_bytes(b"")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mammodet.predict", f"ckpt_path={checkpoints['synthetic']}"]
    done = subprocess.run(
        [*command, f"input={inputs}", f"out_dir={out}", "device=cpu"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1  # the empty file
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "WARNING" in line]
    assert len([line for line in warnings if "synthetic" in line]) == 1
    assert [line for line in warnings if "synthetic" not in line] == [line for line in warnings if "empty.dcm" in line]
    assert len(warnings) == 2  # the synthetic warning and the skipped empty file
    logged = (out / ".hydra_logs" / "predict.log").read_text()
    sha = file_sha256(checkpoints["synthetic"])
    assert f"checkpoint {checkpoints['synthetic']} (SHA-256 {sha})" in logged
    assert f"input {inputs}: 2 files to read" in logged
    assert "skipped empty.dcm: empty file" in logged
    assert "predicted 1 of 2 files (1 skipped as unreadable) in " in logged
    assert "trained only on synthetic data" in logged


def test_the_warning_comes_whatever_the_input_and_only_for_synthetic(
    checkpoints: dict[str, Path], mammograms: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def run(kind: str, source: Path) -> list[str]:
        caplog.clear()
        cfg = compose("predict", [f"ckpt_path={checkpoints[kind]}", f"input={source}", f"out_dir={tmp_path / kind}"])
        with caplog.at_level(logging.WARNING), pytest.raises((FileNotFoundError, SystemExit)):
            predict_main.__wrapped__(cfg)
        return [r.getMessage() for r in caplog.records if "synthetic" in r.getMessage()]

    assert len(run("synthetic", tmp_path / "missing")) == 1  # no input at all: still said
    assert run("real", tmp_path / "missing") == []


@pytest.mark.parametrize("inside", ["predictions", ""])  # out_dir inside the input folder, or the folder itself
def test_predict_never_reads_its_own_outputs(
    inside: str, detector: Detector, mammograms: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.dcm").write_bytes(mammograms["lesions"].read_bytes())
    (inputs / "b.dcm").write_bytes(mammograms["clear"].read_bytes())
    out = inputs / inside
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mammodet.serving.predict"):
            summary = predict_files(detector, inputs, out)
        assert (summary.done, summary.failed) == (2, [])
        with (out / "summary.csv").open() as file:
            assert [row["file"] for row in csv.DictReader(file)] == ["a.dcm", "b.dcm"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a.dcm.png", "b.dcm.png"]
    prefix = f"{inside}/" if inside else ""
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")] == [
        f"skipped {prefix}{name}.png: predict's own output (in out_dir={out})" for name in ("a.dcm", "b.dcm")
    ]


def test_bad_dicoms_are_skipped_and_named_without_their_values(
    detector: Detector, mammograms: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a_good.dcm").write_bytes(mammograms["clear"].read_bytes())
    two_frames_unannounced(inputs / "b_frames.dcm")
    ds = pydicom.dcmread(mammograms["clear"])
    ds.PhotometricInterpretation = "DOE^JOHN"  # hostile probe #11: a name where a defined term belongs
    ds.save_as(inputs / "c_name.dcm")
    caplog.clear()  # pydicom's note on the value just set, written by this test, not by predict
    with caplog.at_level(logging.INFO, logger="mammodet.serving.predict"):
        summary = predict_files(detector, inputs, tmp_path / "out")
    assert summary.done == 1
    assert summary.failed == [
        ("b_frames.dcm", "pixel data decodes to shape (2, 64, 48), expected one 64 x 48 frame"),
        ("c_name.dcm", "unsupported PhotometricInterpretation; only MONOCHROME1/2 (grayscale) images are supported"),
    ]
    table = (tmp_path / "out" / "summary.csv").read_text()
    with (tmp_path / "out" / "summary.csv").open() as file:
        errors = {row["file"]: row["error"] for row in csv.DictReader(file)}
    assert errors == {"a_good.dcm": "", **dict(summary.failed)}
    logged = caplog.text
    assert "skipped c_name.dcm: unsupported PhotometricInterpretation" in logged
    for text in (table, logged):
        assert "DOE" not in text and "JOHN" not in text and "SECRET" not in text
