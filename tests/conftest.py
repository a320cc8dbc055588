"""Shared fixtures: the real CBIS-DDSM CSVs and small synthetic datasets made once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REAL_CSV_DIR = Path(__file__).resolve().parent / "data" / "cbis-ddsm-csv"
"""The real CBIS-DDSM case-description CSVs (TCIA, CC BY 3.0), vendored with the tests."""


@pytest.fixture(scope="session")
def real_csv_dir() -> Path:
    """The real CBIS-DDSM case-description CSVs, ``tests/data/cbis-ddsm-csv``."""
    return REAL_CSV_DIR


def make_synthetic(out_dir: Path, **overrides) -> Path:
    """A small synthetic CBIS-DDSM (about 30 mammograms at 320x200) written by the project's generator."""
    from mammodet.synthetic.cbis import SynthSpec, generate

    options = {"n_patients": 12, "height": 320, "width": 200, "seed": 1} | overrides
    return generate(out_dir, SynthSpec(**options))


@pytest.fixture(scope="session")
def synthetic_classic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic dataset in the classic layout, with some half-size ROI masks."""
    return make_synthetic(tmp_path_factory.mktemp("synth_classic"), layout="classic", half_size_mask_every=4)


@pytest.fixture(scope="session")
def synthetic_tcia(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic dataset in the TCIA downloader layout."""
    return make_synthetic(tmp_path_factory.mktemp("synth_tcia"), layout="tcia", seed=2)


@pytest.fixture(scope="session")
def tiny_checkpoint(synthetic_classic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A detector trained for two steps on ``synthetic_classic`` (test_train's tiny run), for the serving tests."""
    from helpers import tiny_overrides

    from mammodet.config import compose
    from mammodet.train import train

    work = tmp_path_factory.mktemp("tiny_model")
    overrides = [
        *tiny_overrides(synthetic_classic, work),
        "trainer.check_val_every_n_epoch=1",
        "test=false",
        "++model.rpn_post_nms_top_n_test=100",  # fewer proposals: faster inference and Grad-CAM in the tests
    ]
    train(compose("train", overrides))
    return work / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def mammograms(synthetic_classic: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two full synthetic mammograms as DICOM files: ``lesions`` (from ``synthetic_classic``) and ``clear``
    (rendered without lesions); each has a planted patient name, ``SECRET^NAME``, that must never leak."""
    import json

    import numpy as np
    import pydicom

    from mammodet.synthetic.dicom_write import write_dicom
    from mammodet.synthetic.images import render_mammogram

    out = tmp_path_factory.mktemp("mammograms")
    truth = json.loads((synthetic_classic / "synth_truth.json").read_text())["images"]
    key = next(key for key, image in sorted(truth.items()) if image["lesions"])
    source = sorted((synthetic_classic / "dicom").glob(f"*_{key}/*/*/000000.dcm"))[0]
    ds = pydicom.dcmread(source)
    ds.PatientName = "SECRET^NAME"
    ds.save_as(out / "lesions.dcm")
    clear = render_mammogram(np.random.default_rng(3), 320, 200, "LEFT", "CC", [])
    write_dicom(out / "clear.dcm", clear.pixels, extra={"PatientName": "SECRET^NAME"})
    return {"lesions": out / "lesions.dcm", "clear": out / "clear.dcm"}


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread (the test machine is shared) with a fixed seed, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def converted_png16(synthetic_classic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synthetic_classic`` converted to 16-bit PNG + COCO (breast crop, full size)."""
    from mammodet.data.conversion import ConvertSettings, convert_dataset

    out = tmp_path_factory.mktemp("converted_png16")
    convert_dataset(synthetic_classic / "dicom", synthetic_classic / "csv", out, ConvertSettings(image_format="png16"))
    return out
