"""The commands' one error path (mammodet/cli.py): a bad input is one line ``error: ...`` on stderr, exit status 2,
no traceback, no folder left behind; a run's folder is ``paths.output_dir`` = ``hydra.run.dir``; trainer keys
override without ``+``; config types and checkpoints are checked before anything runs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mammodet.config import check_arguments, compose
from mammodet.data.classes import NUM_CLASSES
from mammodet.errors import UserError
from mammodet.models import FasterRCNNModule
from mammodet.models.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parent.parent
TRAINER_KEYS = [
    "trainer.val_check_interval=2",
    "trainer.fast_dev_run=true",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=0.5",
    "trainer.limit_test_batches=2",
    "trainer.limit_predict_batches=2",
    "trainer.precision=32-true",
    "trainer.accumulate_grad_batches=4",
]


def run_command(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m mammodet.<name> args`` from ``cwd``, with this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", f"mammodet.{name}", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def assert_one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 and exactly one stderr line, ``error: ...`` holding ``words``, no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], (word, lines[0])


def save_checkpoint(path: Path, num_classes: int = NUM_CLASSES, **extra: object) -> Path:
    """A random-weight small detector saved as ``mammodet.train`` does (model, datamodule settings)."""
    module = FasterRCNNModule(arch="fasterrcnn_resnet18_fpn", num_classes=num_classes, min_size=64, max_size=96)
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": {**dict(module.hparams), "load_pretrained": False},
        "datamodule_hyper_parameters": {"image_gamma": 0.8, "max_side": 96, "convert": {}},
        **extra,
    }
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good checkpoint, a 6-class and a 2-class one, a truncated one, random bytes and a foreign pickle."""
    folder = tmp_path_factory.mktemp("checkpoints")
    good = save_checkpoint(folder / "good.ckpt")
    truncated = folder / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:50_000])
    (folder / "random.ckpt").write_bytes(os.urandom(4096))
    torch.save({"weights": torch.zeros(2)}, folder / "foreign.ckpt")
    return {
        "good": good,
        "six": save_checkpoint(folder / "six.ckpt", num_classes=7),
        "two": save_checkpoint(folder / "two.ckpt", num_classes=3),
        "renamed": save_checkpoint(folder / "renamed.ckpt", classes=["a", "b", "c"]),
        "truncated": truncated,
        "random": folder / "random.ckpt",
        "foreign": folder / "foreign.ckpt",
    }


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Hydra's in-process runs replace the root logger's handlers: put them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("override", TRAINER_KEYS)
def test_trainer_keys_override_without_plus(override: str) -> None:
    key, value = override.removeprefix("trainer.").split("=")
    cfg = compose("train", [override, "paths.output_dir=unused"])
    assert str(cfg.trainer[key]).lower() == value


def test_readme_smoke_test_line_composes() -> None:
    readme = (REPO / "README.md").read_text()
    start = readme.index("python -m mammodet.train experiment=frcnn_a100")
    line = readme[start : readme.index("```", start)].replace("\\\n", " ").split()[3:]
    cfg = compose("train", line)
    assert (cfg.trainer.val_check_interval, cfg.trainer.max_steps, cfg.paths.output_dir) == (2, 2, "/tmp/smoke/run")


def test_run_folder_is_paths_output_dir() -> None:
    cfg = compose("train", ["paths.log_dir=elsewhere", "task_name=t"])
    assert cfg.paths.output_dir.startswith("elsewhere/t/runs/")  # the default, without Hydra running


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lr=abc", "model.lr=abc: expected a number"),
        ("data.batch_size=2.5", "data.batch_size=2.5: expected an integer"),
        ("model.compile=maybe", "model.compile=maybe: expected true or false"),
        ("trainer.max_epochs=ten", "trainer.max_epochs=ten: expected an integer or null"),
    ],
)
def test_config_types_fail_before_any_data_is_read(override: str, message: str, tmp_path: Path) -> None:
    from mammodet.train import train

    # No data paths at all: the type error comes first, and nothing is created.
    cfg = compose("train", [override, f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(UserError) as info:
        train(cfg)
    assert str(info.value) == message
    assert not (tmp_path / "run").exists()


def test_every_experiment_passes_the_type_check() -> None:
    from mammodet.train import resolve_precision

    for experiment in sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")):
        cfg = compose("train", [f"experiment={experiment}", "paths.output_dir=unused"])
        check_arguments(cfg.data, "data")
        check_arguments(cfg.model, "model")
        check_arguments(cfg.trainer, "trainer", {"precision": resolve_precision(cfg.trainer.precision)})


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("missing", "no such file; expected a .ckpt written by python -m mammodet.train"),
        ("truncated", "cannot be read as a checkpoint ("),
        ("random", "cannot be read as a checkpoint ("),
        ("foreign", "holds no model (no state_dict and hyper_parameters)"),
        ("six", "has 6 lesion classes (num_classes=7 with background), this mammodet detects 3: calcification"),
        ("two", "has 2 lesion classes (num_classes=3 with background)"),
        ("renamed", "has classes a, b, c (num_classes=4 with background)"),
    ],
)
def test_a_bad_checkpoint_is_one_error_naming_the_file(kind: str, words: str, checkpoints: dict[str, Path]) -> None:
    path = checkpoints.get(kind, checkpoints["good"].parent / "missing.ckpt")
    with pytest.raises(UserError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"ckpt_path={path}: ") and words in message and "\n" not in message


def test_a_good_checkpoint_reads(checkpoints: dict[str, Path]) -> None:
    assert read_checkpoint(checkpoints["good"])["hyper_parameters"]["num_classes"] == NUM_CLASSES


# ---------------------------------------------------------------- the wrapper, in process


def test_wrapper_prints_one_line_removes_new_folders_and_keeps_bugs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, restore_logging: None
) -> None:
    from mammodet.cli import command

    def failing(cfg: object) -> None:
        raise UserError("input=x: no such file or folder")

    def buggy(cfg: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "a" / "b"
    monkeypatch.setattr(sys, "argv", ["predict", "ckpt_path=c", "input=x", f"out_dir={out}"])
    with pytest.raises(SystemExit) as info:
        command("predict")(failing)()
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: input=x: no such file or folder\n"
    assert list(tmp_path.iterdir()) == []  # a/b/.hydra_logs/predict.log made by Hydra, and removed

    (tmp_path / "kept").mkdir()
    monkeypatch.setattr(sys, "argv", ["predict", "ckpt_path=c", "input=x", f"out_dir={tmp_path / 'kept'}"])
    with pytest.raises(SystemExit):
        command("predict")(failing)()
    assert [p.name for p in (tmp_path / "kept").iterdir()] == []  # it existed: only Hydra's new folder goes

    monkeypatch.setattr(sys, "argv", ["predict", "ckpt_path=c", "input=x", f"out_dir={out}"])
    with pytest.raises(SystemExit) as info:
        command("predict")(buggy)()
    assert info.value.code == 1 and "RuntimeError: a bug" in capsys.readouterr().err  # Hydra's traceback


def test_a_folder_that_cannot_be_written_is_refused_before_hydra_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, restore_logging: None
) -> None:
    import mammodet.cli as cli

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    # As root every folder is writable: the check's own view of permissions says this one is not.
    real_access = os.access
    monkeypatch.setattr(cli.os, "access", lambda path, mode: Path(path) != readonly and real_access(path, mode))
    monkeypatch.setattr(sys, "argv", ["predict", "ckpt_path=c", "input=x", f"out_dir={readonly / 'out'}"])
    ran = []
    with pytest.raises(SystemExit) as info:
        cli.command("predict")(ran.append)()
    assert info.value.code == 2 and ran == []
    expected = f"error: out_dir={readonly / 'out'}: cannot write there ({readonly} is not writable)\n"
    assert capsys.readouterr().err == expected
    assert list(readonly.iterdir()) == []


# ---------------------------------------------------------------- every command, as a user runs it


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An empty folder, a folder without images and a read-only folder."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "empty").mkdir()
    (root / "no_images").mkdir()
    (root / "no_images" / "notes.txt").write_text("x")
    (root / "readonly").mkdir()
    (root / "readonly").chmod(0o555)
    return {name: root / name for name in ("empty", "no_images", "readonly")}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "args", "words"),
    [
        ("predict", ["ckpt_path={good}", "input={tmp}/none.dcm"], ["input={tmp}/none.dcm: no such file or folder"]),
        ("predict", ["ckpt_path={good}", "input={no_images}"], ["input={no_images}: no .dcm, .dicom"]),
        ("predict", ["ckpt_path={tmp}/none.ckpt", "input={no_images}/notes.txt"], ["ckpt_path={tmp}/none.ckpt"]),
        ("predict", ["ckpt_path={six}", "input={no_images}/notes.txt"], ["ckpt_path={six}", "6 lesion classes"]),
        ("predict", ["ckpt_path={good}", "input={tmp}", "out_dir={no_images}/notes.txt/x"], ["is not a folder"]),
        ("explain", ["ckpt_path={good}", "input={empty}"], ["input={empty}: no .dcm"]),
        ("export", ["ckpt_path={truncated}"], ["out_dir is required"]),
        ("export", ["ckpt_path={truncated}", "out_dir={out}"], ["ckpt_path={truncated}: cannot be read"]),
        ("serve", ["ckpt_path={two}"], ["ckpt_path={two}", "2 lesion classes"]),
        ("evaluate", ["ckpt_path={random}", "out_dir={out}"], ["ckpt_path={random}: cannot be read"]),
        ("evaluate", ["annotations={tmp}/a.json", "predictions={tmp}/p.json", "out_dir={out}"], ["annotations="]),
        ("convert", ["data.csv_dir={empty}", "data.dicom_root={tmp}/none", "out_dir={out}"], ["data.dicom_root="]),
        ("report", ["run_dir={empty}"], ["run_dir={empty}: "]),
        ("report", ["run_dir={tmp}/none"], ["run_dir={tmp}/none: no such folder"]),
        ("train", ["model.lr=abc", "paths.output_dir={out}"], ["model.lr=abc: expected a number"]),
        ("train", ["ckpt_path={six}", "paths.output_dir={out}"], ["ckpt_path={six}", "6 lesion classes"]),
    ],
)
def test_every_command_fails_in_one_line_leaving_nothing(
    name: str,
    args: list[str],
    words: list[str],
    checkpoints: dict[str, Path],
    inputs: dict[str, Path],
    tmp_path: Path,
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    names = {**{k: str(v) for k, v in checkpoints.items()}, **{k: str(v) for k, v in inputs.items()}}
    names |= {"tmp": str(tmp_path), "out": str(tmp_path / "out" / "deeper")}
    result = run_command(name, [a.format(**names) for a in args], cwd)
    assert_one_line(result, *(w.format(**names) for w in words))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"] and list(cwd.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_dir_is_one_line(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = inputs["readonly"] / "out"
    result = run_command("predict", ["ckpt_path=c.ckpt", "input=x", f"out_dir={out}"], tmp_path)
    assert_one_line(result, f"out_dir={out}: cannot write there ({inputs['readonly']} is not writable)")


@pytest.mark.slow
@pytest.mark.parametrize("key", ["paths.output_dir", "hydra.run.dir"])
def test_a_run_writes_only_into_its_folder(key: str, tmp_path: Path) -> None:
    converted = tmp_path / "converted"
    (converted / "annotations").mkdir(parents=True)
    (converted / "annotations" / "train.json").write_text(json.dumps({"images": []}))
    cwd, run = tmp_path / "cwd", tmp_path / "run"
    cwd.mkdir()
    args = [
        "model=frcnn_small",
        "logger=none",
        "train=false",
        "test=false",
        f"data.image_dir={converted}",
        "data.source=jpeg",
        f"{key}={run}",
    ]
    result = run_command("train", args, cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "config.yaml", "train.log"]
    assert "optimized_metric 'val/map_50' was not logged" in (run / "train.log").read_text()
