"""The one rule that says whether a run should have trained longer or had converged, so the report never says
both: :func:`training_verdict`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mammodet.analysis.markdown import epoch_text
from mammodet.analysis.run import Analysis
from mammodet.analysis.summary import PRIMARY_VAL, TOTAL_LOSS

PAST_PEAK = 0.05
"""A last validation this fraction or more below the peak: the run is past its best (use the best checkpoint)."""

Outcome = Literal["train longer", "converged", "unstable"]


@dataclass(frozen=True)
class Verdict:
    """The outcome and the evidence it rests on."""

    outcome: Outcome
    reason: str

    def text(self) -> str:
        """The report's sentence: ``Verdict: <outcome>: <reason>.``"""
        return f"Verdict: {self.outcome}: {self.reason}."


def training_verdict(analysis: Analysis) -> Verdict | None:
    """``unstable`` when ``train/loss`` rose at the end; else ``converged`` when ``val/map_50`` ended ``PAST_PEAK``
    or more below its peak; else ``train longer`` when the loss was still falling or ``val/map_50`` was at its best
    at the last validation; else ``converged`` (flat loss, validation peaked earlier). None without a loss trend
    nor validation."""
    trend, p = analysis.loss_trend, analysis.validation.get(PRIMARY_VAL)
    tail = f"over the last {analysis.tail_fraction:.0%} of steps"
    if trend is not None and trend.direction == "rising":
        return Verdict("unstable", f"{TOTAL_LOSS} rose {tail} (check the learning rate)")
    if p is not None and p.value > 0 and p.final <= (1 - PAST_PEAK) * p.value:
        at = epoch_text(p.epoch, p.step, analysis.max_epochs)
        return Verdict(
            "converged",
            f"{PRIMARY_VAL} peaked at {at} and the last validation was {(p.value - p.final) / p.value:.0%} below it: "
            "use the best checkpoint",
        )
    reasons = []
    if trend is not None and trend.direction == "falling":
        reasons.append(f"{TOTAL_LOSS} was still falling {tail}")
    if p is not None and p.value > 0 and p.final_step == p.step:
        reasons.append(f"{PRIMARY_VAL} was at its best at the last validation")
    if reasons:
        return Verdict("train longer", " and ".join(reasons))
    if trend is None and (p is None or p.value <= 0):
        return None
    evidence = [f"{TOTAL_LOSS} was flat {tail}"] if trend is not None else []
    if p is not None and p.value > 0:
        evidence.append(
            f"{PRIMARY_VAL} peaked at {epoch_text(p.epoch, p.step, analysis.max_epochs)}, before the last validation"
        )
    elif p is not None:
        evidence.append(f"{PRIMARY_VAL} stayed at {p.value:.4f}")
    return Verdict("converged", " and ".join(evidence))
