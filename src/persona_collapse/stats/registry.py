"""The statistics of a run, each declared once.

A :class:`Statistic` says what it is called (``name`` in tables, JSON and CSV;
``label`` on screen), what it measures and in which unit, how it is computed from a
run's cell moments, how it is computed from bootstrap draws, and on which scale
differences between runs are tested. :func:`register_statistic` adds one; metrics,
tables and the command line loop over :func:`statistics`, so a new statistic is one
declaration in one module (plus its tests).

Inputs of the two computations:

* cell moments: ``mu`` and ``sigma``, ``(P, C)`` arrays of the per-persona cell
  means and sds (ddof = 1) over the ``C`` items in scope;
* bootstrap draws: ``spread`` and ``noise``, ``(B, C)`` arrays holding, per draw and
  item, the across-persona sd of the cell means and the mean of the cell sds.

A *derived* statistic (``inverse_of``) is the reciprocal of another; its standard
error follows by the delta method, ``se(1/x) = se(x) / x**2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from persona_collapse.core.errors import UnknownNameError

FloatArray = NDArray[np.float64]

PointFn = Callable[[FloatArray, FloatArray], float]
"""``(mu, sigma) -> value`` over the items in scope."""

DrawsFn = Callable[[FloatArray, FloatArray], FloatArray]
"""``(spread, noise) -> (B,)`` replicates over the items in scope."""


@dataclass(frozen=True)
class Statistic:
    """One statistic of a run.

    Attributes:
        name: Key in outputs (``S``); its standard error is ``<name>_se``.
        label: Short label for tables and figures (``σ̄``).
        description: One line saying what it measures.
        unit: Unit of its values.
        point: Value from cell moments (None for a derived statistic).
        draws: Replicates from bootstrap draws (None for a derived statistic).
        inverse_of: Name of the statistic this one is the reciprocal of.
        test_scale: Scale of difference tests between runs: ``log`` (log ratios, for
            positive statistics such as S, σ̄, R) or ``difference`` (plain differences,
            for rates and shares that may be 0).
        same_test_as: Statistic whose test this one shares (``R`` and ``sigma_bar``:
            ``log R = -log sigma_bar``), so one adjusted p-value serves both.
        digits: Decimals shown in tables (rendering only; values are never rounded).
    """

    name: str
    label: str
    description: str
    unit: str
    point: PointFn | None = None
    draws: DrawsFn | None = None
    inverse_of: str | None = None
    test_scale: Literal["log", "difference"] = "log"
    same_test_as: str | None = None
    digits: int = 3

    def __post_init__(self) -> None:
        derived = self.inverse_of is not None
        if derived == (self.point is not None or self.draws is not None):
            raise ValueError(
                f"statistic {self.name!r}: give point and draws, or inverse_of, not both"
            )
        if not derived and (self.point is None or self.draws is None):
            raise ValueError(f"statistic {self.name!r}: point and draws go together")


@dataclass(frozen=True)
class Estimate:
    """A statistic's value and standard error (persona and rerun bootstrap in quadrature)."""

    value: float
    se: float


_REGISTRY: dict[str, Statistic] = {}


def register_statistic(statistic: Statistic) -> Statistic:
    """Add ``statistic`` to the registry; outputs list statistics in registration order.

    Raises:
        ValueError: The name is taken.
    """
    if statistic.name in _REGISTRY:
        raise ValueError(f"statistic {statistic.name!r} is already registered")
    _REGISTRY[statistic.name] = statistic
    return statistic


def statistics() -> tuple[Statistic, ...]:
    """Every registered statistic, in registration order."""
    return tuple(_REGISTRY.values())


def statistic_names() -> tuple[str, ...]:
    """Names of every registered statistic, in registration order."""
    return tuple(_REGISTRY)


def get_statistic(name: str) -> Statistic:
    """The statistic called ``name``.

    Raises:
        UnknownNameError: No such statistic (with suggestions).
    """
    if name not in _REGISTRY:
        raise UnknownNameError("statistic", name, list(_REGISTRY))
    return _REGISTRY[name]


def _bootstrap_sd(replicates: FloatArray) -> float:
    """Sample sd (ddof=1) of bootstrap replicates; 0 for a single replicate."""
    if len(replicates) < 2:
        return 0.0
    return float(np.std(replicates, ddof=1))


def reciprocal(value: float) -> float:
    """``1 / value``; ``inf`` for 0 (a run whose ratings never vary is infinitely robust)."""
    return math.inf if value == 0 else 1.0 / value


def estimate_statistics(
    mu: FloatArray,
    sigma: FloatArray,
    boots: Sequence[tuple[FloatArray, FloatArray]],
) -> dict[str, Estimate]:
    """Every registered statistic over the items in scope, with its standard error.

    Args:
        mu: ``(P, C)`` cell means of the items in scope.
        sigma: ``(P, C)`` cell sds (ddof=1) of the items in scope.
        boots: Per bootstrap kind (persona, rerun), ``(spread, noise)`` draws ``(B, C)``;
            the standard error adds the kinds' bootstrap variances.

    Returns:
        Statistic name -> :class:`Estimate`, in registration order.
    """
    direct: dict[str, Estimate] = {}
    for stat in _REGISTRY.values():
        if stat.point is not None and stat.draws is not None:
            variance = sum(_bootstrap_sd(stat.draws(spread, noise)) ** 2 for spread, noise in boots)
            direct[stat.name] = Estimate(stat.point(mu, sigma), math.sqrt(variance))
    out: dict[str, Estimate] = {}
    for stat in _REGISTRY.values():
        if stat.inverse_of is None:
            out[stat.name] = direct[stat.name]
            continue
        if stat.inverse_of not in direct:
            raise ValueError(f"statistic {stat.name!r}: inverse_of {stat.inverse_of!r} is unknown")
        base = direct[stat.inverse_of]
        se = base.se / base.value**2 if base.value > 0 else math.nan
        out[stat.name] = Estimate(reciprocal(base.value), se)
    return out


def estimates_to_dict(estimates: Mapping[str, Estimate]) -> dict[str, float]:
    """``{name: value, name_se: se, ...}`` in registration order (JSON and CSV columns)."""
    flat: dict[str, float] = {}
    for name, est in estimates.items():
        flat[name] = est.value
        flat[f"{name}_se"] = est.se
    return flat


# --- the built-in statistics ----------------------------------------------------------------

register_statistic(
    Statistic(
        name="S",
        label="S",
        description="susceptibility: mean over items of the across-persona sd of cell means",
        unit="rating points",
        point=lambda mu, sigma: float(np.mean(np.std(mu, axis=0, ddof=1))),
        draws=lambda spread, noise: spread.mean(axis=1),
    )
)
register_statistic(
    Statistic(
        name="R",
        label="R",
        description="robustness: 1 / σ̄",
        unit="1 / rating points",
        inverse_of="sigma_bar",
        same_test_as="sigma_bar",
        digits=2,
    )
)

register_statistic(
    Statistic(
        name="sigma_bar",
        label="σ̄",
        description="mean within-cell sd of repeated ratings (ddof = 1)",
        unit="rating points",
        point=lambda mu, sigma: float(np.mean(sigma)),
        draws=lambda spread, noise: noise.mean(axis=1),
    )
)
__all__ = [
    "Estimate",
    "Statistic",
    "estimate_statistics",
    "estimates_to_dict",
    "get_statistic",
    "reciprocal",
    "register_statistic",
    "statistic_names",
    "statistics",
]
