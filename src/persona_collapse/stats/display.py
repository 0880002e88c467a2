"""How statistics are shown: labels, decimals, and the headline ones.

Tables and JSON list every registered statistic (:mod:`persona_collapse.stats.registry`);
figures and one-line summaries keep to the :data:`HEADLINE` statistics, named here
and nowhere else.
"""

from __future__ import annotations

import math

from persona_collapse.core.formatting import MISSING, fmt_pct
from persona_collapse.stats.registry import Statistic, statistics

HEADLINE: tuple[str, ...] = ("S", "R")
"""Statistics shown in figures and summaries (the paper's susceptibility and robustness)."""


def _by_name() -> dict[str, Statistic]:
    return {st.name: st for st in statistics()}


def label(name: str) -> str:
    """Short label of statistic ``name`` (``σ̄`` for ``sigma_bar``); the name if unknown."""
    found = _by_name().get(name)
    return name if found is None else found.label


def digits(name: str, default: int = 3) -> int:
    """Decimals to show for statistic ``name``."""
    found = _by_name().get(name)
    return default if found is None else int(getattr(found, "digits", default))


def delta(name: str) -> str:
    """Label of a change of statistic ``name`` (``ΔS``, ``Δσ̄``)."""
    return f"Δ{label(name)}"


def is_difference(name: str) -> bool:
    """Whether changes of ``name`` are plain differences (``test_scale`` ``difference``)."""
    found = _by_name().get(name)
    return getattr(found, "test_scale", "log") == "difference"


def fmt_change(name: str, value: float | None) -> str:
    """A change of ``name``: a signed percentage (relative change, log-scale statistics)
    or a signed plain difference with the statistic's decimals; ``—`` when missing."""
    if value is None or not math.isfinite(value):
        return MISSING
    if is_difference(name):
        return f"{value:+.{digits(name)}f}"
    return fmt_pct(value)


def headline() -> tuple[Statistic, ...]:
    """The :data:`HEADLINE` statistics that are registered, in that order."""
    found = _by_name()
    return tuple(found[n] for n in HEADLINE if n in found)


def test_lead(name: str) -> str:
    """The statistic whose test ``name`` is listed under: the first registered
    statistic sharing its test (``R`` for ``sigma_bar``), else ``name`` itself."""
    stats = statistics()
    group = next((getattr(st, "same_test_as", None) for st in stats if st.name == name), None)
    key = group or name
    for st in stats:
        if (getattr(st, "same_test_as", None) or st.name) == key:
            return st.name
    return name


__all__ = [
    "HEADLINE",
    "delta",
    "digits",
    "fmt_change",
    "headline",
    "is_difference",
    "label",
    "test_lead",
]
