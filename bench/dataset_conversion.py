"""Images per second per core that ``python -m mammodet.convert dataset=<name>`` converts, for each dataset of the
registry with a synthetic tree (``python -m mammodet.synth format=<name>``).

    python bench/dataset_conversion.py [--repeats 3] [--json FILE]

Per dataset: a synthetic tree at the generator's default size (VinDr-Mammo 24 DICOMs of 320x256, INbreast 16
DICOMs of 320x256, mini-MIAS 8 PGMs of 1024x1024), then the reader and a full conversion (decode, breast crop,
JPEG, records, COCO files, report) in this one process (``workers=0``: one core), best of ``--repeats`` runs
into a fresh folder. Reading the files is included, as ``mammodet.convert`` does it; ``images`` counts every
record, an excluded one (mini-MIAS's line without coordinates: not decoded) included.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from mammodet import datasets
from mammodet.data.conversion import ConvertSettings
from mammodet.data.record_conversion import convert_records

REPO = Path(__file__).resolve().parent.parent
NAMES = ("vindr_mammo", "inbreast", "mini_mias")


def measure(name: str, repeats: int, work: Path) -> dict[str, float]:
    """Best-of-``repeats`` images/s of one dataset's synthetic tree, converted in one process."""
    tree = importlib.import_module(f"mammodet.synthetic.{name}").generate(work / f"{name}_tree")
    options = datasets.load_config(name)
    best, images = float("inf"), 0
    for run in range(repeats):
        start = time.perf_counter()
        read = datasets.read(name, tree)
        report = convert_records(read, work / f"{name}_out{run}", options["classes"], ConvertSettings(), workers=0)
        best = min(best, time.perf_counter() - start)
        images = report["converted"] + len(report["excluded"])
    return {"images": images, "seconds": round(best, 4), "images_per_s_per_core": round(images / best, 1)}


def main() -> None:
    """Measure every dataset, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "dataset_conversion.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        results = {name: measure(name, args.repeats, Path(work)) for name in NAMES}
    print("| dataset | images | seconds (best) | images/s per core |")
    print("|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['images']} | {row['seconds']} | {row['images_per_s_per_core']} |")
    meta = {"machine": platform.processor() or platform.machine(), "when": datetime.now(timezone.utc).isoformat()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, **results}, indent=1))


if __name__ == "__main__":
    main()
