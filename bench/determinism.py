"""Does a demo training repeat bit for bit, and which CPU settings change its result?

    python bench/determinism.py [--work DIR] [--json bench/results/determinism.json]

Runs 30 steps of ``experiment=demo`` (one epoch of 240 crops, no validation, no test) under each variant below,
as a fresh process on the same synthetic data, and hashes the trained weights (SHA-256 of the state dict's
tensors in key order). A variant whose hash equals the baseline's trained exactly the same network. The
variants are what a user can set to pin float paths: torch's ATen kernel set (``ATEN_CPU_CAPABILITY``),
oneDNN's instruction set (``ONEDNN_MAX_CPU_ISA``, the convolutions), the thread count, and Lightning's
``trainer.deterministic=true``. Differences here mean that the demo's figures depend on the CPU it runs on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "baseline": ({}, []),
    "baseline, again": ({}, []),
    "ATEN_CPU_CAPABILITY=avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, []),
    "ATEN_CPU_CAPABILITY=default": ({"ATEN_CPU_CAPABILITY": "default"}, []),
    "ONEDNN_MAX_CPU_ISA=AVX2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, []),
    "ATEN avx2 + oneDNN AVX2": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, []),
    "OMP_NUM_THREADS=1": ({"OMP_NUM_THREADS": "1"}, []),
    "trainer.deterministic=true": ({}, ["trainer.deterministic=true"]),
    "ATEN avx2 + oneDNN AVX2 + deterministic": (
        {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
        ["trainer.deterministic=true"],
    ),
}
SHORT_RUN = [
    "test=false",
    "logger=none",
    "trainer.max_epochs=1",
    "data.crops_per_epoch=240",
    "trainer.check_val_every_n_epoch=100",
    "+callbacks.last_checkpoint.save_on_train_epoch_end=true",
]


def weights_sha256(checkpoint: Path) -> str:
    """SHA-256 of a checkpoint's state dict, its tensors as float32 bytes in key order."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(state[key].float().numpy().tobytes())
    return digest.hexdigest()


def train(work: Path, name: str, env: dict[str, str], overrides: list[str]) -> dict:
    """One short demo training; its weights' hash and wall time."""
    run_dir = work / "runs" / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    command = [
        sys.executable,
        "-m",
        "mammodet.train",
        "experiment=demo",
        f"paths.data_dir={work / 'data'}",
        f"paths.log_dir={work / 'logs'}",
        f"hydra.run.dir={run_dir}",
        *SHORT_RUN,
        *overrides,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: training failed\n{done.stderr[-2000:]}")
    return {
        "env": env,
        "overrides": overrides,
        "sha256": weights_sha256(run_dir / "checkpoints" / "last.ckpt"),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="a folder for the data and runs (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "determinism.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mammodet-determinism-") as scratch:
        work = args.work or Path(scratch)
        runs = {name: train(work, name, *variant) for name, variant in VARIANTS.items()}
    baseline = runs["baseline"]["sha256"]
    print("| variant | weights SHA-256 (first 16) | same as baseline |\n|---|---|---|")
    for name, run in runs.items():
        run["same_as_baseline"] = run["sha256"] == baseline
        print(f"| {name} | `{run['sha256'][:16]}` | {'yes' if run['same_as_baseline'] else 'no'} |")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "run": ["experiment=demo", *SHORT_RUN],
        "variants": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
