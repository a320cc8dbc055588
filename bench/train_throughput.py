"""``experiment=frcnn_a100`` as users run it, timed: training images/s, data-wait share, validation share of wall
time, host milliseconds per step and peak memory, per precision and option.

    python bench/train_throughput.py [--quick] [--cpu] [--runs bf16-mixed bf16-mixed+cl ...] [--json FILE]

The recipe's config is composed and trained with ``mammodet.train``'s pieces: its data source (default
``cache``), 800-pixel training crops at the evaluation scale (``data.max_side``, each ``--max-sides`` value),
its callbacks (best and last checkpoints, the periodic one), its TensorBoard logger, its logging interval, and
validation inside ``fit`` every ``--val-every`` steps (the recipe's 1000 would not fit a benchmark). The data
is a synthetic CBIS-DDSM at the size of scanned film (``--height``, default 4096x2560, breast-cropped by the
conversion), made once under ``--data-dir``. ``model.weights=none``: the speed is that of the COCO-initialised
model and nothing is downloaded.

A run is ``PRECISION[+cl][+compile]``: Lightning precision, ``model.channels_last=true``,
``model.compile=true``. Each run trains ``--warmup`` steps (not counted: worker start-up, cuDNN autotuning,
compilation), then ``--steps`` measured steps. Figures:

- ``train_images_per_s``: images of the measured steps over their wall time, validation excluded;
- ``data_wait_share``: share of that time the training loop waited for a batch;
- ``host_ms_per_step``: host time of a step outside the detector's forward and backward (Lightning's loop,
  logging, clipping, the non-finite check, the SGD update; on a GPU the launches only);
- ``val_images_per_s`` and ``val_share``: validation (metrics computed at its end included) against the
  whole ``fit``; ``val_share_at_recipe``: the share at the recipe's cadence (``val_check_interval`` 1000,
  batch 16) on the real CBIS-DDSM validation split (348 images), from the measured speeds;
- ``peak_gpu_memory_gib`` (CUDA) and ``peak_rss_gib`` (this process's peak resident memory).

``--json FILE`` (default ``bench/results/train_<device>_<time>.json``) holds the device name, the settings
and one row per run. ``--quick``: 1024-pixel images, 256-pixel crops at 512 max side, batch 2, 1+3 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from mammodet.config import compose
from mammodet.data.cbis import load_cbis_ddsm
from mammodet.data.splits import assign_splits
from mammodet.synthetic.cbis import SynthSpec, generate
from mammodet.training.datamodule import DetectionDataModule

REPO = Path(__file__).resolve().parent.parent
GPU_RUNS = ("32-true", "16-mixed", "bf16-mixed", "bf16-mixed+cl", "bf16-mixed+cl+compile")
CPU_RUNS = ("32-true", "bf16-mixed", "32-true+cl")
FLAGS = ("cl", "compile")
REAL_CSV_DIR = REPO / "tests" / "data" / "cbis-ddsm-csv"
"""The project's copy of the real CBIS-DDSM case CSVs."""


def recipe_val_images() -> int:
    """Validation mammograms of the real CBIS-DDSM in the recipe's split (official, defaults), counted from the
    real CSVs as ``python -m mammodet.stats`` counts them (348)."""
    return len(assign_splits(load_cbis_ddsm(REAL_CSV_DIR)).keys("val"))


RECIPE_VAL_EVERY, RECIPE_BATCH = 1000, 16


@dataclass
class RunResult:
    """One run's figures (None: not measured on this device)."""

    run: str
    max_side: int
    precision: str
    channels_last: bool
    compile: bool
    batch_size: int
    crop_size: int
    steps: int
    train_images_per_s: float
    data_wait_share: float
    host_ms_per_step: float
    val_images_per_s: float
    val_share: float
    val_share_at_recipe: float
    fit_s: float
    peak_gpu_memory_gib: float | None
    peak_rss_gib: float


class Timer(L.Callback):
    """Wall times of a ``fit``: measured training steps (after ``warmup``), data waits, the detector's forward and
    backward, validation passes. The GPU is synchronised only at the edges of what is timed as a whole."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.fit_start = self.fit_end = 0.0
        self.window_start: float | None = None
        self.window_end = 0.0
        self.train_images = self.steps = 0
        self.wait = self.forward = self.backward = self.step_total = 0.0
        self.val_seconds = self.val_in_window = 0.0
        self.val_images = 0
        self._last_end: float | None = None
        self._start = self._backward_start = self._val_start = 0.0

    @staticmethod
    def now(module: L.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def measuring(self, trainer: L.Trainer) -> bool:
        return trainer.global_step >= self.warmup

    def wrap_forward(self, module: L.LightningModule) -> None:
        """Time the detector's forward (host time; on a GPU, its launches)."""
        detector = module.model
        forward = detector.forward

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return forward(*args, **kwargs)
            finally:
                if detector.training and self.measuring(module.trainer):
                    self.forward += time.perf_counter() - start

        detector.forward = timed

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start = self.now(pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_end = self.now(pl_module)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.measuring(trainer) and self.window_start is None:
            self.window_start = self._last_end = self.now(pl_module)
        self._start = time.perf_counter()
        if self.window_start is not None and self._last_end is not None:
            self.wait += self._start - self._last_end

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._backward_start = time.perf_counter()

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.window_start is not None:
            self.backward += time.perf_counter() - self._backward_start

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._last_end = time.perf_counter()
        if self.window_start is not None:
            self.step_total += self._last_end - self._start
            self.train_images += len(batch[0])
            self.steps += 1
            if trainer.global_step >= trainer.max_steps:
                self.window_end = self._last_end = self.now(pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = self.now(pl_module)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self.val_images += len(batch[0])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        seconds = self.now(pl_module) - self._val_start
        self.val_seconds += seconds
        if self.window_start is not None:
            self.val_in_window += seconds
        self._last_end = time.perf_counter()


def config(data_dir: Path, args: argparse.Namespace, max_side: int, spec: str) -> DictConfig:
    """The composed ``experiment=frcnn_a100`` config of one run on the benchmark's data."""
    precision, *flags = spec.split("+")
    overrides = [
        "experiment=frcnn_a100",
        f"paths.output_dir={data_dir / 'runs' / f'{spec}_{max_side}'}",
        f"data.csv_dir={data_dir / 'synthetic' / 'csv'}",
        f"data.dicom_root={data_dir / 'synthetic' / 'dicom'}",
        f"data.image_dir={data_dir / 'converted'}",
        f"data.source={args.source}",
        f"data.max_side={max_side}",
        f"data.crop_size={args.crop_size}",
        f"data.num_workers={args.workers}",
        f"data.convert.workers={args.workers}",
        f"data.cache.workers={args.workers}",
        f"data.batch_size={args.batch_size}",
        f"data.eval_batch_size={args.eval_batch_size}",
        f"data.pin_memory={not args.cpu}",
        f"data.crops_per_epoch={(args.warmup + args.steps) * args.batch_size}",
        "model.weights=none",
        f"model.channels_last={'cl' in flags}",
        f"model.compile={'compile' in flags}",
        f"trainer.precision={precision}",
        f"trainer.accelerator={'cpu' if args.cpu else 'gpu'}",
        f"trainer.benchmark={not args.cpu}",
        f"trainer.max_steps={args.warmup + args.steps}",
        f"trainer.val_check_interval={args.val_every}",
        f"trainer.limit_val_batches={args.val_batches}",
        f"trainer.log_every_n_steps={args.log_every}",
    ]
    return compose("train", overrides)


def make_data(data_dir: Path, args: argparse.Namespace) -> None:
    """Synthesize (once) mammograms at the size of scanned film, convert them and build the cache."""
    if not (data_dir / "synthetic" / "synth_truth.json").is_file():
        spec = SynthSpec(n_patients=args.patients, height=args.height, width=round(args.height * 0.625), seed=1)
        generate(data_dir / "synthetic", spec, workers=args.workers)
    for max_side in args.max_sides:
        dm: DetectionDataModule = hydra.utils.instantiate(config(data_dir, args, max_side, "32-true").data)
        dm.prepare_data()


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Every entry of a config group with a ``_target_`` (callbacks, loggers), as ``mammodet.train`` does."""
    return [hydra.utils.instantiate(c) for c in (group or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


def run(data_dir: Path, args: argparse.Namespace, max_side: int, spec: str) -> RunResult:
    """Train (and validate inside ``fit``) one run; see the module docstring."""
    precision, *flags = spec.split("+")
    cfg = config(data_dir, args, max_side, spec)
    L.seed_everything(0, workers=True)
    dm: DetectionDataModule = hydra.utils.instantiate(cfg.data)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    timer = Timer(args.warmup)
    timer.wrap_forward(model)
    cuda = not args.cpu
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=[*instantiate_group(cfg.callbacks), timer], logger=instantiate_group(cfg.logger)
    )
    trainer.fit(model, datamodule=dm)
    window = timer.window_end - (timer.window_start or timer.window_end) - timer.val_in_window
    train_rate = timer.train_images / window if window > 0 else float("nan")
    val_rate = timer.val_images / timer.val_seconds if timer.val_seconds else float("nan")
    fit_s = timer.fit_end - timer.fit_start
    recipe_val = recipe_val_images() / val_rate
    recipe_train = RECIPE_VAL_EVERY * RECIPE_BATCH / train_rate
    host = timer.step_total - timer.forward - timer.backward  # step_total starts once the batch is there
    return RunResult(
        run=spec,
        max_side=max_side,
        precision=precision,
        channels_last="cl" in flags,
        compile="compile" in flags,
        batch_size=args.batch_size,
        crop_size=args.crop_size,
        steps=timer.steps,
        train_images_per_s=train_rate,
        data_wait_share=timer.wait / window if window > 0 else float("nan"),
        host_ms_per_step=1000 * host / max(timer.steps, 1),
        val_images_per_s=val_rate,
        val_share=timer.val_seconds / fit_s if fit_s else float("nan"),
        val_share_at_recipe=recipe_val / (recipe_val + recipe_train),
        fit_s=fit_s,
        peak_gpu_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    )


def device_name(cpu: bool) -> str:
    """The GPU's name, or the CPU's model and core count."""
    if not cpu:
        return torch.cuda.get_device_name(0)
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "CPU",
    )
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    """Parse arguments, make the data, run every configuration, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1024-px images, 256-px crops, batch 2, 1+3 steps")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (also the default without CUDA)")
    parser.add_argument("--runs", nargs="+", default=None, help="PRECISION[+cl][+compile] ...")
    parser.add_argument("--max-sides", nargs="+", type=int, default=None, help="default 1333 2048 (quick: 512)")
    parser.add_argument("--source", default="cache", choices=("cache", "jpeg", "dicom"))
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="loader processes")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's 16 (quick: 2)")
    parser.add_argument("--eval-batch-size", type=int, default=None, help="default: the recipe's 8 (quick: 1)")
    parser.add_argument("--crop-size", type=int, default=None, help="default: the recipe's 800 (quick: 256)")
    parser.add_argument("--height", type=int, default=None, help="synthetic mammogram height (default 4096)")
    parser.add_argument("--patients", type=int, default=12, help="synthetic patients (about 3 images each)")
    parser.add_argument("--warmup", type=int, default=None, help="uncounted steps (default 10, quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps (default 40, quick 3)")
    parser.add_argument("--val-every", type=int, default=None, help="val_check_interval (default 25, quick 2)")
    parser.add_argument("--val-batches", type=int, default=None, help="batches per validation (default 5, quick 2)")
    parser.add_argument("--log-every", type=int, default=None, help="log_every_n_steps (default: the recipe's 50)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: data/bench/recipe_<height>")
    parser.add_argument("--json", type=Path, default=None, help="default: bench/results/train_<device>_<time>.json")
    args = parser.parse_args()
    notes = []
    if not args.cpu and not torch.cuda.is_available():
        notes.append("no CUDA device: running on the CPU")
        args.cpu = True
    quick = args.quick
    args.max_sides = args.max_sides or ([512] if quick else [1333, 2048])
    args.batch_size = args.batch_size or (2 if quick else 16)
    args.eval_batch_size = args.eval_batch_size or (1 if quick else 8)
    args.crop_size = args.crop_size or (256 if quick else 800)
    args.height = args.height or (1024 if quick else 4096)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 10)
    args.steps = args.steps or (3 if quick else 40)
    args.val_every = args.val_every or (2 if quick else 25)
    args.val_batches = args.val_batches or (2 if quick else 5)
    args.log_every = args.log_every or 50
    runs = args.runs or list(CPU_RUNS if args.cpu else GPU_RUNS)
    for spec in runs:
        if unknown := set(spec.split("+")[1:]) - set(FLAGS):
            parser.error(f"run {spec!r}: unknown flags {sorted(unknown)}; choose from {FLAGS}")
    if args.cpu and (skipped := [spec for spec in runs if spec.startswith("16-mixed")]):
        notes.append(f"skipped on the CPU (16-bit mixed precision needs CUDA): {', '.join(skipped)}")
        runs = [spec for spec in runs if spec not in skipped]
    data_dir = args.data_dir or REPO / "data" / "bench" / f"recipe_{args.height}"
    for note in notes:
        print(f"note: {note}")

    device = device_name(args.cpu)
    started = datetime.now(timezone.utc)
    out = args.json or REPO / "bench" / "results" / f"train_{'cpu' if args.cpu else 'gpu'}_{started:%Y%m%dT%H%M}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    payload = {
        "device": device,
        "torch": torch.__version__,
        "started_utc": started.isoformat(timespec="seconds"),
        "settings": settings,
        "notes": notes,
        "runs": [],
    }
    make_data(data_dir, args)
    results = payload["runs"]
    for max_side in args.max_sides:
        for spec in runs:
            results.append(asdict(run(data_dir, args, max_side, spec)))
            out.write_text(json.dumps(payload, indent=1))  # after every run: a cut-short table keeps what it has

    print(
        f"\n{started:%Y-%m-%d %H:%M} UTC, {platform.node()}, {device}, torch {torch.__version__}, "
        f"source={args.source}, {args.workers} workers, batch {args.batch_size} of {args.crop_size}-px crops, "
        f"{args.warmup}+{args.steps} steps, load (1 min) {os.getloadavg()[0]:.2f}"
    )
    print(
        "\n| max side | run | train img/s | data wait | host ms/step | val img/s | val share | val share at recipe "
        "| peak GPU GiB | peak RSS GiB |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        memory = f"{r['peak_gpu_memory_gib']:.1f}" if r["peak_gpu_memory_gib"] is not None else "-"
        print(
            f"| {r['max_side']} | {r['run']} | {r['train_images_per_s']:.2f} | {r['data_wait_share']:.1%} | "
            f"{r['host_ms_per_step']:.1f} | {r['val_images_per_s']:.2f} | {r['val_share']:.1%} | "
            f"{r['val_share_at_recipe']:.1%} | {memory} | {r['peak_rss_gib']:.1f} |"
        )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
