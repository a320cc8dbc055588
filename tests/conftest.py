"""Shared fixtures: the real CBIS-DDSM CSVs and small synthetic datasets made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REAL_CSV_DIR = REPO.parent / "shared" / "cbis-ddsm-csv"


@pytest.fixture(scope="session")
def real_csv_dir() -> Path:
    """The real CBIS-DDSM case-description CSVs (../shared/cbis-ddsm-csv beside the checkout)."""
    if not REAL_CSV_DIR.is_dir():
        pytest.fail(f"{REAL_CSV_DIR} is missing: the real CBIS-DDSM CSVs must sit beside the checkout")
    return REAL_CSV_DIR


def make_synthetic(out_dir: Path, **overrides) -> Path:
    """A small synthetic CBIS-DDSM (about 30 mammograms at 320x200) written by the project's generator."""
    from mammodet.data.synthetic import SynthSpec, generate

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
