"""A synthetic mini-MIAS tree in the published format: ``Info.txt`` and ``mdbNNN.pgm`` (1024x1024, 8-bit).

``Info.txt`` lines are whitespace-separated (``refnum tissue class [severity [x y radius]]``, runs of spaces,
trailing blanks), some refnums have several lines (several lesions), one abnormal line has no coordinates
(its lesion cannot be located), and coordinates have their origin at the bottom-left. ``synth_truth.json``
holds what each image must come back as: boxes in top-left source pixels, laterality, exclusion.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np

from mammodet.synthetic.scene import render_scene

SIZE = 1024
_TISSUE_FRACTIONS = {"F": 0.1, "G": 0.35, "D": 0.65}
# Per image of a cycle of eight: tissue, then (class, severity, has coordinates) per Info.txt line.
_PATTERN: tuple[tuple[str, tuple[tuple[str, str, bool], ...]], ...] = (
    ("G", (("CIRC", "B", True),)),
    ("D", (("NORM", "", False),)),
    ("F", (("CALC", "M", True),)),
    ("F", (("SPIC", "M", True), ("CIRC", "B", True))),
    ("G", (("ARCH", "B", True),)),
    ("F", (("CIRC", "B", False),)),
    ("D", (("MISC", "M", True),)),
    ("G", (("NORM", "", False),)),
)
_EXPECTED = {"CALC": "calcification", "CIRC": "mass", "SPIC": "mass", "MISC": "mass"}


def generate(out_dir: str | os.PathLike, n_images: int = 8, seed: int = 0) -> Path:
    """Write the tree under ``out_dir`` and ``synth_truth.json``; returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 23])
    lines, truth = [], {}
    for index in range(n_images):
        refnum = f"mdb{index + 1:03d}"
        tissue, entries = _PATTERN[index % len(_PATTERN)]
        side = "RIGHT" if index % 2 == 0 else "LEFT"
        abnormal = [e for e in entries if e[0] != "NORM"]
        kinds = ["calcification" if e[0] == "CALC" else "mass" for e in abnormal]
        scene = render_scene(
            rng, SIZE, SIZE, side, "MLO", kinds, density=_TISSUE_FRACTIONS[tissue], integer_centres=True
        )
        pixels = np.rint(scene.pixels.astype(np.float64) * 255 / 4095).astype(np.uint8)
        cv2.imwrite(str(out / f"{refnum}.pgm"), pixels)
        findings, excluded = [], False
        if not abnormal:
            lines.append(f"{refnum} {tissue} {entries[0][0]}{'  ' if index % 3 else ''}")
        for (kind, severity, located), lesion in zip(abnormal, scene.lesions, strict=True):
            x, y_top = int(lesion.center[0]), int(lesion.center[1])
            radius = math.ceil(lesion.radius) + 2
            if not located:
                lines.append(f"{refnum} {tissue} {kind} {severity}")
                excluded = True
                continue
            lines.append(f"{refnum} {tissue}  {kind} {severity} {x} {SIZE - y_top} {radius} ")
            box = [max(0, x - radius), max(0, y_top - radius), min(SIZE, x + radius), min(SIZE, y_top + radius)]
            label = {"calcification": "calcification", "mass": "mass_low" if severity == "B" else "mass_high"}
            findings.append({"finding": kind, "label": label.get(_EXPECTED.get(kind, "")), "box": box})
        truth[refnum] = {"laterality": side, "view": "MLO", "excluded": excluded, "findings": findings}
    (out / "Info.txt").write_text("\n".join(lines) + "\n")
    (out / "synth_truth.json").write_text(json.dumps({"dataset": "mini_mias", "images": truth}, indent=1))
    return out
