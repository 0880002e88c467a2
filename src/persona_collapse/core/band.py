"""The S band: the range of susceptibility that frontier base models span at T = 0.1.

A base model whose S falls outside it role-plays unusually narrowly or widely, which
reports say before reading its variants' changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEFAULT_S_BAND: tuple[float, float] = (0.66, 0.83)
"""Susceptibility band of the reference frontier models (``frontier_S_band``)."""


@dataclass(frozen=True)
class BandCheck:
    """Whether a susceptibility lies in a band (inclusive)."""

    value: float
    low: float
    high: float
    inside: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return {"value": self.value, "low": self.low, "high": self.high, "inside": self.inside}


def check_band_bounds(band: tuple[float, float]) -> tuple[float, float]:
    """``(low, high)`` of ``band`` as floats.

    Raises:
        ValueError: not two finite numbers with ``low <= high``.
    """
    if len(band) != 2:
        raise ValueError(f"band must be (low, high), got {band!r}")
    low, high = float(band[0]), float(band[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"band must be finite with low <= high, got {band!r}")
    return low, high


def in_band(s: float, band: tuple[float, float] = DEFAULT_S_BAND) -> bool:
    """Whether susceptibility ``s`` lies in ``band`` (inclusive; NaN is outside)."""
    low, high = check_band_bounds(band)
    return low <= s <= high


def check_band(s: float, band: tuple[float, float] = DEFAULT_S_BAND) -> BandCheck:
    """:func:`in_band` with the value and bounds kept for reports."""
    low, high = check_band_bounds(band)
    return BandCheck(value=float(s), low=low, high=high, inside=low <= s <= high)
