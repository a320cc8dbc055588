"""Markdown for the analysis reports: numbers, durations and intervals as text, tables, bullet lists, and the
page of :class:`Section` blocks with their figures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mammodet.analysis.evaluation import Evaluation


def number_text(value: float | None, digits: int = 4) -> str:
    """A number to ``digits`` significant digits; ``–`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1) or abs(value) >= 10**digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def duration_text(seconds: float) -> str:
    """Seconds in s below 2 min, in min below 2 h, else in h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table; first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def interval_text(evaluation: Evaluation, key: str) -> str:
    """The confidence interval of ``key`` as ``low–high``; ``–`` when none was computed."""
    interval = evaluation.intervals.get(key)
    return f"{number_text(interval[0], 3)}–{number_text(interval[1], 3)}" if interval else "–"


def epoch_text(epoch: int | None, step: int, max_epochs: int | None = None) -> str:
    """``epoch e/E (step S)`` as the training progress log counts (from 1, of ``max_epochs``), ``epoch e (step S)``
    when ``max_epochs`` is unknown, ``step S`` when the epoch is."""
    if epoch is None:
        return f"step {step}"
    return f"epoch {epoch}/{max_epochs} (step {step})" if max_epochs else f"epoch {epoch} (step {step})"


def bullets(lines: list[str]) -> str:
    """A markdown bullet list; ``Nothing to report.`` when empty."""
    return "\n".join(f"- {line}" for line in lines) or "Nothing to report."


@dataclass(frozen=True)
class Section:
    """A report section: markdown text and the figures shown above it."""

    title: str
    text: str
    figures: tuple[Path, ...] = ()


def document(title: str, sections: list[Section], out_dir: Path) -> str:
    """The markdown page: the title, then each section with its figures linked relative to ``out_dir``."""
    lines = [f"# {title}"]
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        lines += [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})\n" for p in section.figures]
        lines.append(section.text)
    return "\n".join(lines) + "\n"
