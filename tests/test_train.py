"""Training: configs compose, fast runs from JPEG and DICOM, resume, checkpoints, sweeps and DDP on CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_overrides
from hydra.errors import InstantiationException
from omegaconf import open_dict

from mammodet.config import CONFIG_DIR, compose
from mammodet.errors import UserError
from mammodet.models import FasterRCNNModule
from mammodet.train import train
from mammodet.training.transforms import AlbumentationsAugment

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_composes(experiment: str, tmp_path: Path) -> None:
    cfg = compose("train", [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.model._target_ and cfg.data._target_ and cfg.trainer._target_
    if experiment == "frcnn_a100":
        assert (cfg.data.batch_size, cfg.data.num_workers, cfg.trainer.precision) == (16, 8, "bf16-mixed")
        assert cfg.trainer.gradient_clip_val == 1.0 and cfg.callbacks.periodic_checkpoint.every_n_train_steps == 5000
        assert cfg.trainer.max_epochs == 150 and cfg.model.model_name == "frcnn_r50"


@pytest.mark.parametrize("source", ["jpeg", "dicom"])
def test_fast_dev_run_from_each_source(source: str, synthetic_classic: Path, tmp_path: Path) -> None:
    cfg = compose("train", [*tiny_overrides(synthetic_classic, tmp_path, source), "debug=fast_dev_run"])
    metrics, objects = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert objects["trainer"].global_step == 1
    assert "map_50" in json.loads((tmp_path / "run" / "test_metrics.json").read_text())


def test_an_albumentations_pipeline_given_in_the_config_trains(synthetic_classic: Path, tmp_path: Path) -> None:
    overrides = [*tiny_overrides(synthetic_classic, tmp_path), "data/augment=albumentations", "test=false"]
    metrics, objects = train(compose("train", overrides))
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and objects["trainer"].global_step == 2
    assert isinstance(objects["trainer"].train_dataloader.dataset.transform, AlbumentationsAugment)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    augment = checkpoint["datamodule_hyper_parameters"]["augment"]  # saved as the config, plain types
    assert augment["_target_"] == "albumentations.Compose" and len(augment["transforms"]) == 5


def test_train_writes_outputs_resumes_and_checkpoints_load_weights_only(
    synthetic_classic: Path, tmp_path: Path
) -> None:
    cfg = compose("train", [*tiny_overrides(synthetic_classic, tmp_path), "trainer.max_epochs=2"])
    _, objects = train(cfg)
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file() and (run / "config.yaml").is_file()
    assert objects["trainer"].global_step == 4  # 2 epochs x 4 crops / batch 2
    test_metrics = json.loads((run / "test_metrics.json").read_text())
    assert {"map", "map_50", "map_75"} <= set(test_metrics) and test_metrics["checkpoint"].startswith(str(run))
    checkpoint = torch.load(last, weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] == 4 and checkpoint["hyper_parameters"]["model_name"] == "frcnn_small"
    model = FasterRCNNModule.load_from_checkpoint(last, map_location="cpu")
    assert model.hparams.model_name == "frcnn_small"

    resumed = compose(
        "train", [*tiny_overrides(synthetic_classic, tmp_path), "trainer.max_epochs=3", f"ckpt_path={last}"]
    )
    with open_dict(resumed):
        resumed.paths.output_dir = str(tmp_path / "resumed")
    _, objects = train(resumed)
    assert objects["trainer"].global_step == 6  # continued from step 4, not restarted


def _run_cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mammodet.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_two_run_sweep_makes_one_directory_each(synthetic_classic: Path, tmp_path: Path) -> None:
    overrides = [o for o in tiny_overrides(synthetic_classic, tmp_path) if not o.startswith("paths.output_dir")]
    result = _run_cli(["-m", *overrides, "seed=1,2", "test=false", f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "logs" / "demo" / "multiruns").glob("*/*/checkpoints/last.ckpt"))
    assert len(runs) == 2 and runs[0].parent.parent.name == "0" and runs[1].parent.parent.name == "1"


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(synthetic_classic: Path, tmp_path: Path) -> None:
    overrides = [o for o in tiny_overrides(synthetic_classic, tmp_path) if not o.startswith("paths.output_dir")]
    result = _run_cli(
        [
            *overrides,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.sync_batchnorm=false",
            f"hydra.run.dir={tmp_path / 'ddp'}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "test_metrics.json").read_text())
    assert "map_50" in metrics
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] == 1  # 4 crops / (2 processes x batch 2)


def test_synthetic_data_only_where_an_experiment_asks() -> None:
    asking = {e for e in EXPERIMENTS if compose("train", [f"experiment={e}"]).synthesize}
    assert asking == {"demo", "density_demo"}
    assert compose("train").synthesize is None


@pytest.mark.parametrize(
    "overrides,error,words",
    [
        ([], InstantiationException, "data.image_dir is not set"),  # Hydra wraps the datamodule's UserError
        (["data.image_dir={tmp}/conv"], UserError, "data.csv_dir is not set"),
        (["data.image_dir={tmp}/conv", "data.csv_dir={tmp}/csv"], UserError, "data.csv_dir={tmp}/csv does"),
        (
            ["data.image_dir={tmp}/conv", "data.csv_dir={tmp}", "data.dicom_root={tmp}/dicom"],
            UserError,
            "data.dicom_root={tmp}/dicom does not exist",
        ),
    ],
)
def test_a_missing_data_path_fails_at_once_naming_its_key(
    tmp_path: Path, overrides: list[str], error: type, words: str
) -> None:
    cfg = compose("train", [o.format(tmp=tmp_path) for o in [*overrides, f"paths.output_dir={tmp_path}/run"]])
    with pytest.raises(error, match=re.escape(words.format(tmp=tmp_path))):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_run_without_validation_exits_0_and_writes_train_log(synthetic_classic: Path, tmp_path: Path) -> None:
    overrides = [o for o in tiny_overrides(synthetic_classic, tmp_path) if not o.startswith("paths.output_dir")]
    run = tmp_path / "short"
    result = _run_cli(
        [*overrides, "trainer.max_steps=1", "trainer.check_val_every_n_epoch=5", "test=false", f"hydra.run.dir={run}"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    train_log = (run / "train.log").read_text()
    assert "step 1/1 (100%) | epoch 1/1 | elapsed" in train_log  # mammodet's progress
    assert "GPU available: False" in train_log  # Lightning's own lines
    assert "optimized_metric 'val/map_50' was not logged" in train_log
    terminal = result.stdout + result.stderr
    for noise in ("💡 Tip", "limit_train_batches=1.0", "LeafSpec", "FLOPs"):
        assert noise not in terminal and noise not in train_log, noise
