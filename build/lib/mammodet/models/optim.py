"""Optimizer parameter groups and the learning-rate schedule (linear warmup, then multistep or cosine).

The schedule is Detectron2's ``WarmupParamScheduler``: a factor on the base learning rate, a function of the
optimizer step only, so it is exact at any step and survives checkpoint/resume through ``LambdaLR``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

from torch import nn

SCHEDULERS = ("multistep", "cosine")


def lr_factor(
    step: int,
    *,
    warmup_steps: int,
    warmup_factor: float,
    scheduler: str,
    milestones: Sequence[int],
    gamma: float,
    max_steps: int,
) -> float:
    """Factor on the base learning rate for the optimizer step ``step`` (0 for the first step).

    Linear warmup from ``warmup_factor`` to 1 over ``warmup_steps`` steps, multiplied by the main schedule:
    ``multistep`` multiplies by ``gamma`` at each milestone reached (``step >= milestone``); ``cosine`` goes
    from 1 at step 0 to 0 at ``max_steps`` (and stays 0 after).
    """
    if step < warmup_steps:
        alpha = step / warmup_steps
        warmup = warmup_factor * (1.0 - alpha) + alpha
    else:
        warmup = 1.0
    if scheduler == "multistep":
        main = gamma ** bisect.bisect_right(sorted(milestones), step)
    elif scheduler == "cosine":
        main = 0.5 * (1.0 + math.cos(math.pi * min(step, max_steps) / max_steps))
    else:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {SCHEDULERS}")
    return warmup * main


def parameter_groups(
    model: nn.Module, weight_decay: float, norm_bias_weight_decay: float | None
) -> list[dict[str, Any]]:
    """Trainable parameters in optimizer groups: one group, or two when norm weights and biases decay differently.

    Parameters with at most one dimension are the normalisation weights and the biases; with
    ``norm_bias_weight_decay`` set (usually 0) they get that weight decay, the rest ``weight_decay``.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if norm_bias_weight_decay is None:
        return [{"params": trainable, "weight_decay": weight_decay}]
    groups = [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": norm_bias_weight_decay},
    ]
    return [group for group in groups if group["params"]]
