"""The installed package is complete: the package list matches the tree, and a wheel installed away from the
repository finds its configs (``conf/`` ships as ``mammodet.conf``) and runs a command from another folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mammodet.config import compose

REPO = Path(__file__).resolve().parent.parent


def test_package_list_matches_the_tree() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "mammodet").rglob("__init__.py")} | {
        "mammodet.conf"
    }
    assert listed == found


@pytest.mark.slow
def test_wheel_runs_from_another_folder(tmp_path: Path, real_csv_dir: Path) -> None:
    source, wheels, target, elsewhere = (tmp_path / name for name in ("source", "wheels", "site", "elsewhere"))
    elsewhere.mkdir()
    for folder in ("mammodet", "conf"):  # built from a copy, so that the build leaves no build/ in the checkout
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / file, source / file)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source], check=True)
    (wheel,) = wheels.glob("mammodet-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", target, wheel], check=True)
    assert (target / "mammodet" / "conf" / "experiment" / "frcnn_a100.yaml").is_file()
    env = os.environ | {"PYTHONPATH": str(target)}
    probe = (
        "import mammodet.config as c; from pathlib import Path; "
        f"assert Path(c.__file__).is_relative_to(Path(r'{target}')), c.__file__; print(c.CONFIG_DIR); "
        "print(c.compose('train', ['experiment=demo']).data.crop_size)"
    )
    shown = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    crop_size = compose("train", ["experiment=demo"]).data.crop_size  # the checkout's value, composed here
    assert shown.stdout.split() == [str(target / "mammodet" / "conf"), str(crop_size)]
    stats = subprocess.run(
        [sys.executable, "-m", "mammodet.stats", f"data.csv_dir={real_csv_dir}"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert stats.returncode == 0, stats.stderr
    assert "3568 abnormalities, 3032 physical mammograms, 1566 patients" in stats.stdout
