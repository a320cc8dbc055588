"""What the training hot path keeps without reading the GPU back: non-finite step counters on the device, and
host wall time per logging interval (step time and data wait)."""

from __future__ import annotations

import time

import torch
from torch import Tensor


class StepCounters:
    """Non-finite steps counted on the device (total and current streak), read back only when asked."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.in_a_row: Tensor | None = None

    def update(self, found_inf: Tensor) -> None:
        """Count one optimizer step; ``found_inf`` is a 0-dim float tensor, 1 where the step was skipped."""
        if self.total is None or self.in_a_row is None or self.total.device != found_inf.device:
            self.total = torch.zeros((), device=found_inf.device)
            self.in_a_row = torch.zeros((), device=found_inf.device)
        self.total += found_inf
        self.in_a_row.add_(1).mul_(found_inf)

    def read(self) -> tuple[int, int]:
        """(total, in a row) as ints: one host read."""
        if self.total is None or self.in_a_row is None:
            return 0, 0
        total, in_a_row = torch.stack([self.total, self.in_a_row]).tolist()
        return int(total), int(in_a_row)


class IntervalTimer:
    """Host wall time between training steps, summed over a logging interval: data wait and step time."""

    def __init__(self) -> None:
        self._last_end: float | None = None
        self._wait = 0.0
        self._elapsed = 0.0
        self._steps = 0

    def restart(self) -> None:
        """Start waiting for the next batch now (epoch start, end of validation)."""
        self._last_end = time.perf_counter()

    def batch_start(self) -> None:
        """A batch arrived: the time since the previous step ended was spent waiting for it."""
        now = time.perf_counter()
        if self._last_end is not None:
            self._wait += now - self._last_end
            self._elapsed += now - self._last_end
        self._last_end = now

    def batch_end(self) -> None:
        """A step ended: the time since its batch arrived was spent computing it."""
        now = time.perf_counter()
        if self._last_end is not None:
            self._elapsed += now - self._last_end
            self._steps += 1
        self._last_end = now

    def interval(self) -> tuple[float | None, float]:
        """Mean (step seconds, data-wait seconds) per step since the last call, then start a new interval."""
        steps, wait, elapsed = self._steps, self._wait, self._elapsed
        self._steps, self._wait, self._elapsed = 0, 0.0, 0.0
        if steps == 0:
            return None, 0.0
        return (elapsed - wait) / steps, wait / steps
