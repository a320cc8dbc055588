"""Seconds per training step of each model family: mammodet's ``DetectorModule`` in Lightning against the bare
torchvision model in a plain PyTorch loop, on the same batch, side by side in one process.

    python bench/model_step.py [--models frcnn_small retinanet_small fcos_small] [--size 256] [--batch-size 2]
        [--steps 10] [--warmup 2] [--rounds 3] [--json bench/results/model_step.json]

Each model is built from its config (``model=<name>``, ``model.weights=none``) as training builds it. "ours" is a
``Trainer.fit`` step as ``python -m mammodet.train`` runs it on the CPU (``trainer=cpu``'s gradient clipping at
norm 1.0, logging every 10 steps): ``training_step`` (losses summed, the family's statistics on logged steps),
backward, clipping with the non-finite check, fused SGD and the learning-rate schedule, timed from
``on_train_batch_start`` to ``on_train_batch_end``. "bare" is a copy of the same torchvision model (no hooks) in
``loss = sum(model(images, targets).values()); loss.backward(); clip_grad_norm_; SGD.step()`` with the same SGD
settings. Each round runs ``--warmup`` untimed and ``--steps`` timed steps of ours, then of bare; the figures are
medians over every round's timed steps (the order alternating between rounds), one torch thread, so load on the
machine falls on both alike. The issue-22 rule: ours within 1.05 of bare for every family. CPU only (the GPU
figures of the r50 models come from ``bench/gpu.sh``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torchvision
from torch import Tensor, nn
from train_throughput import device_name

from mammodet.config import compose

SMALL_MODELS = ("frcnn_small", "retinanet_small", "fcos_small")


def batch(size: int, batch_size: int) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """``batch_size`` float ``[3, size, size]`` images with two lesions each (classes 1-3), fixed by a seed."""
    generator = torch.Generator().manual_seed(0)
    images, targets = [], []
    for i in range(batch_size):
        image = torch.rand((3, size, size), generator=generator) * 0.2
        boxes = []
        for j in range(2):
            side = size // 8 * (1 + j)
            x0, y0 = size // 6 + 40 * j, size // 5 + 30 * i
            image[:, y0 : y0 + side, x0 : x0 + side] += 0.6
            boxes.append([x0, y0, x0 + side, y0 + side])
        images.append(image.clamp(0, 1))
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor([1 + i % 3, 3])})
    return images, targets


class StepTimer(L.Callback):
    """Wall time of each training step, from the batch's start to its end (optimizer step included)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.times.append(time.perf_counter() - self._start)


def ours(module: L.LightningModule, data: tuple[list[Tensor], list[dict[str, Tensor]]], steps: int) -> list[float]:
    """Seconds of each of ``steps`` ``Trainer.fit`` steps on ``data`` (every step the same batch)."""
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=steps,
        gradient_clip_val=1.0,
        gradient_clip_algorithm="norm",
        log_every_n_steps=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    loader = torch.utils.data.DataLoader([data] * steps, batch_size=None, collate_fn=lambda b: b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    return timer.times


def bare(model: nn.Module, data: tuple[list[Tensor], list[dict[str, Tensor]]], steps: int, hp: Any) -> list[float]:
    """Seconds of each of ``steps`` plain PyTorch steps of ``model`` on ``data``."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    images, targets = data
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Median seconds per step, ours and bare, for one model."""
    cfg = compose("train", [f"model={name}", "model.weights=none", "model.warmup_steps=1", "model.max_steps=100000"])
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    reference = copy.deepcopy(module.model)
    for sub in reference.modules():  # the bare torchvision model: no training-statistics hooks
        sub._forward_hooks.clear()
        sub._forward_pre_hooks.clear()
    data = batch(args.size, args.batch_size)
    ours_times: list[float] = []
    bare_times: list[float] = []
    for round_ in range(args.rounds):  # ours first in even rounds, bare first in odd ones
        for side in ("ours", "bare") if round_ % 2 == 0 else ("bare", "ours"):
            if side == "ours":
                ours_times += ours(module, data, args.warmup + args.steps)[args.warmup :]
            else:
                bare_times += bare(reference, data, args.warmup + args.steps, module.hparams)[args.warmup :]
    ours_s, bare_s = statistics.median(ours_times), statistics.median(bare_times)
    result = {
        "family": module.entry.family,
        "parameters": sum(p.numel() for p in module.model.parameters()),
        "ours_s_per_step": round(ours_s, 4),
        "bare_s_per_step": round(bare_s, 4),
        "ratio": round(ours_s / bare_s, 3),
        "timed_steps": len(ours_times),
    }
    print(f"{name}: ours {ours_s:.4f} s/step, bare {bare_s:.4f} s/step, ratio {result['ratio']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(SMALL_MODELS))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    results = {name: measure(name, args) for name in args.models}
    out = {
        "bench": "model_step",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": f"{device_name(cpu=True)}, {args.threads} torch thread(s)",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "models")},
        "models": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
