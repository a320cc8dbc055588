"""Training and validation images per second of ``experiment=frcnn_a100`` (R50-FPN, batch 16, SGD, gradient
clipping), with the share of step time spent waiting for data and the peak GPU memory.

    python bench/train_throughput.py [--quick] [--cpu] [--json FILE] [--runs 16-mixed 16-mixed+cl ...]

The data is a synthetic CBIS-DDSM at 2048x1229 (made once under ``--data-dir``, converted without the breast
crop so every whole image has the same size) served from ``--source`` (default ``cache``). Training uses whole
images at each ``--max-sides`` value (1333: 1333x800, 2048: 2048x1229; ``train_mode=whole``), the train split
repeated so that no epoch ends inside the measurement. A run is ``PRECISION[+cl][+compile][+tf32]``: Lightning
precision, ``channels_last`` weights, ``torch.compile`` of the backbone, TF32 matmuls. Each run trains
``--warmup`` steps (not counted: worker start-up, cuDNN autotuning, compilation) then ``--steps`` measured steps,
then validates ``--val-batches`` batches (the first not counted). Data wait is the time from the end of one
step to the start of the next (fetching the batch and moving it to the device).

``--cpu`` runs on the CPU, where 16-bit mixed precision and peak GPU memory are skipped with a note;
``--quick`` uses 192- and 256-pixel images, batch 2 and a few steps: the whole script runs on a 2-core CPU in a
few minutes.
The card's measured ceiling (dense matmul TFLOP/s per precision, copy bandwidth) is printed first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch

from mammodet.config import compose
from mammodet.data.datamodule import DetectionDataModule
from mammodet.data.detection_dataset import whole_size
from mammodet.synthetic.cbis import SynthSpec, generate

REPO = Path(__file__).resolve().parent.parent
GPU_RUNS = ("32-true", "32-true+tf32", "16-mixed", "bf16-mixed", "16-mixed+cl", "bf16-mixed+cl", "16-mixed+cl+compile")
CPU_RUNS = ("32-true", "bf16-mixed", "16-mixed", "32-true+cl")
FLAGS = ("cl", "compile", "tf32")


@dataclass
class RunResult:
    """One run's figures (None: not measured on this device)."""

    max_side: int
    image_size: str
    precision: str
    channels_last: bool
    compile: bool
    tf32: bool
    batch_size: int
    steps: int
    train_images_per_s: float
    data_wait_share: float
    val_images_per_s: float
    peak_gpu_memory_gib: float | None


class Timer(L.Callback):
    """Per training step after ``warmup`` steps: seconds waiting for the batch and seconds computing it; per
    validation batch after the first: the time between batch ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.waits: list[float] = []
        self.computes: list[float] = []
        self.train_images = 0
        self.val_images = 0
        self.val_seconds = 0.0
        self._end: float | None = None
        self._start = 0.0
        self._val_end: float | None = None

    @staticmethod
    def _now(module: L.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        end = self._now(pl_module)
        if trainer.global_step > self.warmup and self._end is not None:
            self.waits.append(self._start - self._end)
            self.computes.append(end - self._start)
            self.train_images += len(batch[0])
        self._end = end

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        end = self._now(pl_module)
        if self._val_end is not None:
            self.val_images += len(batch[0])
            self.val_seconds += end - self._val_end
        self._val_end = end


def ceiling(device: torch.device) -> dict[str, float]:
    """Measured peak of the device: dense matmul TFLOP/s per dtype and device-memory copy GB/s."""
    n = 8192 if device.type == "cuda" else 1024
    dtypes = {"fp32": torch.float32}
    if device.type == "cuda":
        dtypes |= {"tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    result = {}
    for name, dtype in dtypes.items():
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        result[f"matmul_{name}_tflops"] = 2 * n**3 / _seconds(lambda a=a, b=b: a @ b, device) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.empty(256 * 2**20 if device.type == "cuda" else 32 * 2**20, dtype=torch.uint8, device=device)
    result["copy_gb_per_s"] = 2 * x.numel() / _seconds(lambda: x.clone(), device) / 1e9
    return result


def _seconds(work: Any, device: torch.device, repeats: int = 10) -> float:
    """Best-of-three mean seconds of ``work()`` over ``repeats`` calls (after one warm-up call)."""
    work()
    best = math.inf
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def config(data_dir: Path, args: argparse.Namespace, max_side: int, precision: str) -> Any:
    """The composed ``experiment=frcnn_a100`` config on the benchmark's data."""
    overrides = [
        "experiment=frcnn_a100",
        f"paths.output_dir={data_dir / 'runs'}",
        f"data.csv_dir={data_dir / 'synthetic' / 'csv'}",
        f"data.dicom_root={data_dir / 'synthetic' / 'dicom'}",
        f"data.image_dir={data_dir / 'converted'}",
        "data.convert.crop_breast=false",
        f"data.source={args.source}",
        "data.train_mode=whole",
        f"data.max_side={max_side}",
        f"data.num_workers={args.workers}",
        f"data.cache.workers={args.workers}",
        f"data.pin_memory={not args.cpu}",
        f"trainer.precision={precision}",
    ]
    if args.batch_size:
        overrides += [f"data.batch_size={args.batch_size}", f"data.eval_batch_size={args.batch_size}"]
    return compose("train", overrides)


def make_data(data_dir: Path, args: argparse.Namespace) -> None:
    """Synthesize (once) mammograms of aspect 0.6 at the largest max side, convert and cache them."""
    height = max(args.max_sides)
    if not (data_dir / "synthetic" / "synth_truth.json").is_file():
        spec = SynthSpec(n_patients=12, height=height, width=round(height * 0.6), seed=1)
        generate(data_dir / "synthetic", spec, workers=args.workers)
    for max_side in args.max_sides:
        hydra.utils.instantiate(config(data_dir, args, max_side, "32-true").data).prepare_data()


def run(data_dir: Path, args: argparse.Namespace, max_side: int, spec: str) -> RunResult:
    """Train and validate one run; see the module docstring."""
    precision, *flags = spec.split("+")
    cfg = config(data_dir, args, max_side, precision)
    dm: DetectionDataModule = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    batch = dm.batch_size
    repeats = -(-(args.warmup + args.steps + 1) * batch // len(dm.records["train"]))
    dm.records["train"] = dm.records["train"] * repeats  # no epoch boundary inside the measurement
    dm.records["val"] = dm.records["val"] * -(-(args.val_batches * dm.eval_batch_size) // len(dm.records["val"]))
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    if "cl" in flags:
        model.model.to(memory_format=torch.channels_last)
    if "compile" in flags:
        model.model.backbone = torch.compile(model.model.backbone)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = "tf32" in flags
    timer = Timer(args.warmup)
    common = {
        "accelerator": "cpu" if args.cpu else "gpu",
        "benchmark": not args.cpu,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "callbacks": [timer],
    }
    cuda = torch.cuda.is_available() and not args.cpu
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = hydra.utils.instantiate(cfg.trainer, max_steps=args.warmup + args.steps, limit_val_batches=0, **common)
    trainer.fit(model, datamodule=dm)
    validator = hydra.utils.instantiate(cfg.trainer, limit_val_batches=args.val_batches, **common)
    validator.validate(model, datamodule=dm, verbose=False)
    total = sum(timer.waits) + sum(timer.computes)
    width, height = whole_size(dm.records["train"][0].width, dm.records["train"][0].height, max_side)
    return RunResult(
        max_side=max_side,
        image_size=f"{width}x{height}",
        precision=precision,
        channels_last="cl" in flags,
        compile="compile" in flags,
        tf32="tf32" in flags,
        batch_size=batch,
        steps=len(timer.computes),
        train_images_per_s=timer.train_images / total,
        data_wait_share=sum(timer.waits) / total,
        val_images_per_s=timer.val_images / timer.val_seconds if timer.val_seconds else float("nan"),
        peak_gpu_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    )


def main() -> None:
    """Parse arguments, make the data, print the ceiling, run every configuration, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256-px images, batch 2, 1+3 steps: runs on a CPU")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (also the default without CUDA)")
    parser.add_argument("--runs", nargs="+", default=None, help="PRECISION[+cl][+compile][+tf32] ...")
    parser.add_argument("--max-sides", nargs="+", type=int, default=None, help="default 1333 2048 (quick: 192 256)")
    parser.add_argument("--source", default="cache", choices=("cache", "jpeg", "dicom"))
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="loader processes")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the experiment's 16 (quick: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="uncounted steps (default 5, quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps (default 20, quick 3)")
    parser.add_argument("--val-batches", type=int, default=None, help="validation batches (default 10, quick 3)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: data/bench/train_<size>")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    notes = []
    if not args.cpu and not torch.cuda.is_available():
        notes.append("no CUDA device: running on the CPU")
        args.cpu = True
    quick = args.quick
    args.max_sides = args.max_sides or ([192, 256] if quick else [1333, 2048])
    args.batch_size = args.batch_size or (2 if quick else None)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 5)
    args.steps = args.steps or (3 if quick else 20)
    args.val_batches = args.val_batches or (3 if quick else 10)
    runs = args.runs or list(CPU_RUNS if args.cpu else GPU_RUNS)
    for spec in runs:
        flags = spec.split("+")[1:]
        if unknown := set(flags) - set(FLAGS):
            parser.error(f"run {spec!r}: unknown flags {sorted(unknown)}; choose from {FLAGS}")
    if args.cpu:
        skipped = [spec for spec in runs if spec.startswith("16-mixed")]
        if skipped:
            notes.append(f"skipped on the CPU (16-bit mixed precision needs CUDA): {', '.join(skipped)}")
        runs = [spec for spec in runs if spec not in skipped]
        notes.append("peak GPU memory not measured (no GPU)")
    data_dir = args.data_dir or REPO / "data" / "bench" / f"train_{max(args.max_sides)}"
    for note in notes:
        print(f"note: {note}")

    device = torch.device("cpu" if args.cpu else "cuda")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    measured_ceiling = ceiling(device)
    make_data(data_dir, args)
    results = [asdict(run(data_dir, args, max_side, spec)) for max_side in args.max_sides for spec in runs]

    print(
        f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {device_name}, "
        f"torch {torch.__version__}, source={args.source}, {args.workers} workers, {args.warmup}+{args.steps} steps, "
        f"load 1 min {os.getloadavg()[0]:.2f}"
    )
    print("ceiling: " + ", ".join(f"{key} {value:.2f}" for key, value in measured_ceiling.items()))
    print(
        "\n| max side | image | precision | channels_last | compile | tf32 | batch | train img/s | data wait "
        "| val img/s | peak GPU GiB |"
    )
    print("|---:|---|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        memory = f"{r['peak_gpu_memory_gib']:.1f}" if r["peak_gpu_memory_gib"] is not None else "-"
        print(
            f"| {r['max_side']} | {r['image_size']} | {r['precision']} | {r['channels_last']} | {r['compile']} | "
            f"{r['tf32']} | {r['batch_size']} | {r['train_images_per_s']:.2f} | {r['data_wait_share']:.1%} | "
            f"{r['val_images_per_s']:.2f} | {memory} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"device": device_name, "ceiling": measured_ceiling, "notes": notes, "runs": results}
        args.json.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
