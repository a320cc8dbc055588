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
