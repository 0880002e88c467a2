"""Whether a model follows the answer protocol, so that its S and R can be read.

S and R measure how ratings move with the persona. They mean nothing when the
model does not answer with a rating in the first place: its stored ratings then
come from fallbacks and re-asks, and an exact run's distributions describe a
token the model hardly ever produces. This module defines, once, when a run
counts as *not following the protocol*:

* sampling runs: fewer than :data:`MIN_FIRST_REPLY_RATING_SHARE` of the first
  (short) replies of all slots are ratings, or more than
  :data:`MAX_FALLBACK_SHARE` of the slots needed the long-answer fallback or
  stayed without a rating;
* exact runs: more than :data:`MAX_LOW_MASS_SHARE` of the cells have an
  on-scale mass (see :data:`persona_collapse.backends.base.SCALE_MASS_TEMPERATURE`)
  below :data:`persona_collapse.backends.base.MIN_SCALE_MASS`.

The run's metadata (``protocol_check``), ``pcollapse metrics`` and the report
show the verdict; numbers are still shown, marked as not interpretable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from persona_collapse.backends.base import MIN_SCALE_MASS, SCALE_MASS_TEMPERATURE

MIN_FIRST_REPLY_RATING_SHARE = 0.5
"""Sampling runs: least share of first replies that must be ratings."""

MAX_FALLBACK_SHARE = 0.5
"""Sampling runs: most share of slots that may need the long fallback (or stay unrated)."""

MAX_LOW_MASS_SHARE = 0.5
"""Exact runs: most share of cells whose on-scale mass may be below ``MIN_SCALE_MASS``."""

MAX_LOW_MASS_WARNINGS = 10
"""Low-mass cells warned about one by one per session; the rest are only counted."""

NOT_INTERPRETABLE = "does not follow the protocol: S and R are not interpretable"
"""The phrase every output uses for a run that fails the check."""


@dataclass(frozen=True)
class ProtocolCheck:
    """The verdict of :func:`check_sampling` or :func:`check_exact`.

    Attributes:
        follows: Whether the model follows the answer protocol.
        mode: ``"sampling"`` or ``"exact"``.
        measures: The shares the verdict rests on (NaN when unknown).
        reasons: One sentence per failed criterion (empty when ``follows``).
    """

    follows: bool
    mode: str
    measures: dict[str, float]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the run metadata as ``protocol_check``)."""
        return {
            "follows": self.follows,
            "mode": self.mode,
            "measures": {k: (None if math.isnan(v) else v) for k, v in self.measures.items()},
            "reasons": list(self.reasons),
            "thresholds": {
                "min_first_reply_rating_share": MIN_FIRST_REPLY_RATING_SHARE,
                "max_fallback_share": MAX_FALLBACK_SHARE,
                "max_low_mass_share": MAX_LOW_MASS_SHARE,
                "min_scale_mass": MIN_SCALE_MASS,
                "scale_mass_temperature": SCALE_MASS_TEMPERATURE,
            },
        }

    @classmethod
    def from_dict(cls, data: Any) -> ProtocolCheck | None:
        """Read back :meth:`to_dict` output; None for anything else."""
        if not isinstance(data, dict) or not isinstance(data.get("follows"), bool):
            return None
        measures = {
            str(k): (math.nan if v is None else float(v))
            for k, v in dict(data.get("measures") or {}).items()
        }
        reasons = tuple(str(r) for r in data.get("reasons") or ())
        return cls(bool(data["follows"]), str(data.get("mode", "")), measures, reasons)

    def message(self, name: str) -> str:
        """One line for logs and tables: the verdict and its reasons."""
        if self.follows:
            return f"run {name!r} follows the answer protocol"
        return f"run {name!r}: the model {NOT_INTERPRETABLE} ({'; '.join(self.reasons)})"


def check_sampling(attempts: pd.DataFrame) -> ProtocolCheck | None:
    """Verdict of a sampling run from its attempts frame (None when it has no attempts).

    Args:
        attempts: One row per request attempt with ``persona_id``, ``item_id``,
            ``repetition``, ``attempt`` (1 = first reply), ``long_form`` and
            ``rating`` (NaN when none was parsed).
    """
    if attempts.empty:
        return None
    keys = ["persona_id", "item_id", "repetition"]
    first = attempts[attempts["attempt"] == 1]
    first_share = float(first["rating"].notna().mean()) if len(first) else math.nan
    flags = attempts[keys].assign(
        rated_short=attempts["rating"].notna() & ~attempts["long_form"].astype(bool)
    )
    rated_short = flags.groupby(keys, sort=False)["rated_short"].any()
    fallback_share = float(1.0 - rated_short.mean()) if len(rated_short) else math.nan
    reasons: list[str] = []
    if first_share < MIN_FIRST_REPLY_RATING_SHARE:
        reasons.append(
            f"{100 * first_share:.0f} % of first replies are ratings "
            f"(at least {100 * MIN_FIRST_REPLY_RATING_SHARE:.0f} % needed)"
        )
    if fallback_share > MAX_FALLBACK_SHARE:
        reasons.append(
            f"{100 * fallback_share:.0f} % of slots needed the long-answer fallback or stayed "
            f"unrated (at most {100 * MAX_FALLBACK_SHARE:.0f} % allowed)"
        )
    measures = {"first_reply_rating_share": first_share, "fallback_share": fallback_share}
    return ProtocolCheck(not reasons, "sampling", measures, tuple(reasons))


def scale_mass_summary(masses: ArrayLike, threshold: float = MIN_SCALE_MASS) -> dict[str, Any]:
    """Run-level summary of the cells' on-scale masses (run metadata and report)."""
    m = np.asarray(masses, dtype=np.float64).ravel()
    m = m[np.isfinite(m)]
    return {
        "temperature": SCALE_MASS_TEMPERATURE,
        "threshold": float(threshold),
        "cells": int(m.size),
        "low_mass_cells": int((m < threshold).sum()),
        "median": float(np.median(m)) if m.size else None,
        "min": float(m.min()) if m.size else None,
    }


def check_exact(masses: ArrayLike, threshold: float = MIN_SCALE_MASS) -> ProtocolCheck | None:
    """Verdict of an exact run from its cells' on-scale masses (None without cells)."""
    m = np.asarray(masses, dtype=np.float64).ravel()
    m = m[np.isfinite(m)]
    if m.size == 0:
        return None
    low_share = float((m < threshold).mean())
    reasons: list[str] = []
    if low_share > MAX_LOW_MASS_SHARE:
        reasons.append(
            f"{100 * low_share:.0f} % of cells have less than {100 * threshold:.0f} % of the "
            f"first-token probability (T = {SCALE_MASS_TEMPERATURE:g}) on scale values "
            f"(at most {100 * MAX_LOW_MASS_SHARE:.0f} % allowed)"
        )
    measures = {"low_mass_share": low_share, "median_scale_mass": float(np.median(m))}
    return ProtocolCheck(not reasons, "exact", measures, tuple(reasons))


__all__ = [
    "MAX_FALLBACK_SHARE",
    "MAX_LOW_MASS_SHARE",
    "MAX_LOW_MASS_WARNINGS",
    "MIN_FIRST_REPLY_RATING_SHARE",
    "NOT_INTERPRETABLE",
    "ProtocolCheck",
    "check_exact",
    "check_sampling",
    "check_stored_run",
    "scale_mass_summary",
]


def check_stored_run(store: Any, run_id: int, mode: str) -> ProtocolCheck | None:
    """Verdict of a run in a :class:`~persona_collapse.store.sqlite.RunStore`."""
    if mode == "exact":
        return check_exact(store.distributions_frame(run_id)["mass"].to_numpy())
    return check_sampling(store.attempts_frame(run_id))
