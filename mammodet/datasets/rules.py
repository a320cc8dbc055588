"""The rules a dataset config states: its class map (finding name [+ grade] -> class or ignore) and its splits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mammodet.errors import UserError

SPLITS = ("train", "val", "test")
DEFAULT_GRADE = "*"
"""Key of a graded class map entry that every grade not listed gets."""


def check_class_map(class_map: Mapping[str, Any], classes: Sequence[str], dataset: str) -> None:
    """Raise ``UserError`` when the class map names a class outside ``classes``, naming the config key."""
    for finding, target in class_map.items():
        targets = target.values() if isinstance(target, Mapping) else [target]
        for name in targets:
            if name is not None and name not in classes:
                raise UserError(
                    f"dataset.class_map.{finding}: class {name!r} of dataset {dataset} is not in "
                    f"dataset.classes {list(classes)}"
                )


def map_finding(class_map: Mapping[str, Any], finding: str, grade: str | None = None) -> str | None:
    """The class of ``finding`` (None: an ignore region). A graded entry maps the grade (BI-RADS, severity) to a
    class, ``*`` standing for every grade it does not list; a finding or grade not in the map is ignored."""
    target = class_map.get(finding)
    if isinstance(target, Mapping):
        return target.get(str(grade) if grade is not None else DEFAULT_GRADE, target.get(DEFAULT_GRADE))
    return target


def split_groups(groups: Iterable[str], shares: Mapping[str, float], seed: int) -> dict[str, str]:
    """Group -> split for shuffled groups cut by ``shares`` (train, val, then test takes the rest), so every
    image of a group (a patient) lands in one split; the same groups and seed give the same split."""
    unique = sorted(set(groups))
    unknown = set(shares) - set(SPLITS)
    if unknown:
        raise UserError(f"dataset.split.shares: unknown split {sorted(unknown)[0]!r}; use {list(SPLITS)}")
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    n_train = round(shares.get("train", 0.0) * len(order))
    n_val = round(shares.get("val", 0.0) * len(order))
    split = {}
    for index, group in enumerate(order):
        split[group] = "train" if index < n_train else "val" if index < n_train + n_val else "test"
    return split
