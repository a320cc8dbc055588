"""One log for a run: Lightning's messages and Python warnings go through the handlers Hydra configured (the
terminal and ``<run dir>/<command>.log``), and the known noise of a CPU/GPU run is dropped, nothing else."""

from __future__ import annotations

import logging
import re
import warnings

NOISE = (
    r"^💡 Tip: ",  # Lightning's advertisements for its cloud products
    r"^`Trainer\(limit_(train|val|test|predict)_batches=1\.0\)` was configured so 100% of the batches",
)
"""Log messages dropped: Lightning's tips, and its notes that a ``limit_*_batches`` of 1.0 uses every batch."""


class KnownNoise(logging.Filter):
    """Drops the messages matching one of ``NOISE``."""

    pattern = re.compile("|".join(NOISE))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def route_run_logs() -> None:
    """Send Lightning's log lines and ``warnings`` through the root handlers (Hydra's terminal and file
    handlers), without Lightning's own handler, and filter the known noise on those handlers.

    Lightning and torchmetrics install their own handlers when imported before logging is configured, and
    Lightning then stops propagation: that is why ``train.log`` used to stay empty.
    """
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, KnownNoise) for f in handler.filters):
            handler.addFilter(KnownNoise())
    logging.captureWarnings(True)
    # Lightning's own use of a torch API that torch deprecated; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*`isinstance\(treespec, LeafSpec\)` is deprecated")
