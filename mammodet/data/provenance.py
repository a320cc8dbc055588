"""What a model was trained on, recorded in its checkpoint: ``"synthetic"`` (``mammodet.synth``'s mammograms) or
``"real"`` (files the generator did not make), so ``predict`` can warn even after the training data is gone."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

Provenance = Literal["synthetic", "real"]

SYNTH_MARK = "synth_truth.json"
"""The file ``mammodet.synthetic.cbis.generate`` writes beside ``csv/`` and ``dicom/``."""


def provenance_of(dataset: str | None, csv_dir: str | None) -> Provenance:
    """``"synthetic"`` when the dataset's name says so (the demos: ``synthetic CBIS-DDSM``) or its ``csv_dir``
    sits beside the generator's ``synth_truth.json``; else ``"real"``. Decided at training, while the data exist."""
    if dataset and "synthetic" in dataset.lower():
        return "synthetic"
    if csv_dir and (Path(csv_dir).parent / SYNTH_MARK).is_file():
        return "synthetic"
    return "real"


def checkpoint_provenance(data_hparams: Mapping[str, Any]) -> Provenance:
    """A checkpoint's recorded ``provenance`` (its ``datamodule_hyper_parameters``); for a checkpoint written
    before it was recorded, what its dataset name and csv_dir still tell."""
    recorded = data_hparams.get("provenance")
    if recorded in ("synthetic", "real"):
        return recorded
    return provenance_of(data_hparams.get("dataset"), data_hparams.get("csv_dir"))
