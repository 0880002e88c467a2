r"""Power and budget planning: how many personas and repetitions detect a given collapse.

Variance model. ``S`` and ``sigma_bar`` are smooth functions of averages over
personas, and a persona's cell means and sds carry the noise of its ``n``
ratings, so the sampling variance of their logarithms is, to first order,

.. math:: \operatorname{var}(P, n) = \frac{b + w\, g(n) / g(n_0)}{P},

with :math:`b` the between-persona component, :math:`w` the within-cell (rating
noise) component at the pilot's :math:`n_0` ratings per cell, :math:`g(n) = 1/n`
for ``S`` (noise of a cell mean) and :math:`g(n) = 1/(n-1)` for ``sigma_bar``
and ``R`` (noise of a sample sd). From a pilot run with :math:`P_0` personas the
persona bootstrap estimates the total :math:`(b + w)/P_0` and the rerun
bootstrap the within part :math:`w/P_0` (it varies only the ratings). Exact
(logprob) mode has no rating noise: :math:`\operatorname{var}(P) = b/P`.

Every tested statistic gets such a model, count statistics (non-unanimity, Gini,
entropy, ...; :func:`~persona_collapse.stats.significance.count_statistics_tested`)
included: their persona and rerun replicates come from the same bootstrap the
difference tests use (:func:`~persona_collapse.stats.significance.draw_estimators`),
on each statistic's test scale (the variance of ``log X`` for ``log`` statistics,
of ``X`` itself for ``difference`` ones such as rates). Their noise scales by
:func:`noise_factor` (a mean's ``1/n`` unless :data:`NOISE_FACTORS` says otherwise).
Several count statistics change their *value* with the ratings per cell (the
non-unanimity rate of 2 answers is not that of 10), so a single fit at the pilot's
:math:`n_0` would misjudge other designs; :func:`variance_models` therefore refits
them on the pilot cut to each requested :math:`n < n_0` (the first :math:`n`
ratings of every cell: ratings of a cell are exchangeable) and keeps these fits in
``VarianceModel.by_repetitions``. Designs with more ratings than the pilot has are
extrapolated from :math:`n_0` by the noise factor, so a pilot with as many ratings
per cell as the largest design is best (``pcollapse plan --preset`` draws one).
On the simulator (400-persona pilot with 20 ratings) the non-unanimity rate's
predicted SE is within 3-10 % of its sd over 200 simulated runs at 100 x 2, 100 x 3
and 50 x 10 (personas x ratings); without the refits the 100 x 2 prediction would
be 90 % too high. A change of a difference-scale statistic is a plain difference
(``-0.05``: five points less), and for a statistic whose value moves with the
ratings per cell the same collapse is a different difference at each design.

Power. A change :math:`\delta` (``-0.2`` = a 20 % drop) between two runs of
one design is tested on the log scale (as in :mod:`persona_collapse.stats.significance`)
with :math:`\mathrm{se} = \sqrt{2 (1 - \rho) \operatorname{var}(P, n)}`, assuming
the variant's variance equals the pilot's and a correlation :math:`\rho` between
the two runs' estimates (0, the default, ignores the gain from pairing personas
and is conservative). Power of the two-sided level-:math:`\alpha` test:
:math:`\Phi(|\log(1+\delta)|/\mathrm{se} - z_{1-\alpha/2}) +
\Phi(-|\log(1+\delta)|/\mathrm{se} - z_{1-\alpha/2})`.

Budget per variant (one persona run, ``Q`` items). Sampling mode asks every
cell once with ``n`` completions and re-asks the slots whose reply had no
rating (probability ``u``), up to ``MAX_SHORT_ATTEMPTS`` short attempts, then
once in long form; expected requests per cell
:math:`\sum_{k=0}^{K} [1 - (1 - u^k)^n]` with ``K = MAX_SHORT_ATTEMPTS``;
completion tokens :math:`n / (1 - u)` short answers of one token per cell.
Exact mode sends one request per cell and reads one token's log-probabilities.
Prompt tokens are requests times the tokens of one prompt. Costs use
:func:`persona_collapse.engine.costs.estimate_cost`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from persona_collapse.backends.base import Usage
from persona_collapse.backends.simulator import PRESETS, SimulatorBackend
from persona_collapse.core.errors import UnknownNameError
from persona_collapse.core.instrument import Instrument, mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import (
    DEFAULT_TEMPLATE,
    LONG_MAX_TOKENS,
    MAX_SHORT_ATTEMPTS,
    SHORT_MAX_TOKENS,
    PromptTemplate,
    render_prompt,
)
from persona_collapse.core.types import RunMode
from persona_collapse.engine.costs import ModelPrices, count_message_tokens, estimate_cost
from persona_collapse.stats.audit import sample_cells
from persona_collapse.stats.metrics import (
    CellRatings,
    persona_bootstrap_replicates,
    rerun_bootstrap_replicates,
    resolve_rng,
)
from persona_collapse.stats.registry import statistics
from persona_collapse.stats.significance import (
    OVERALL,
    RunCells,
    cells_from_cell_ratings,
    count_statistics_tested,
    draw_estimators,
    is_log_scale,
    scope_values,
    statistics_tested,
)

PlanMetric = str
"""Name of a tested statistic (``"S"``, ``"R"``, ``"sigma_bar"``, ...)."""

NoiseFactor = Callable[[float, float], float]
"""``(n0, n) -> g(n) / g(n0)``: how rating noise scales from ``n0`` to ``n`` ratings."""


def _mean_noise(n0: float, n: float) -> float:
    return n0 / n  # noise of a cell mean: g(n) = 1/n


def _sd_noise(n0: float, n: float) -> float:
    return (n0 - 1.0) / (n - 1.0)  # noise of a sample sd: g(n) = 1/(n-1)


NOISE_FACTORS: dict[str, NoiseFactor] = {"S": _mean_noise, "sigma_bar": _sd_noise}
"""Per statistic (by name), how its rating noise scales with the ratings per cell.
A statistic sharing another's test uses that one's; others default to a mean's ``1/n``."""


def noise_factor(metric: str) -> NoiseFactor:
    """:data:`NOISE_FACTORS` entry of ``metric`` (or of the statistic it shares a test with)."""
    shared = {st.name: getattr(st, "same_test_as", None) for st in statistics()}
    return NOISE_FACTORS.get(metric) or NOISE_FACTORS.get(shared.get(metric) or "", _mean_noise)


Mode = RunMode

DEFAULT_PERSONAS: tuple[int, ...] = (25, 50, 100, 200, 400)
"""Persona counts of the default planning grid."""

DEFAULT_REPETITIONS: tuple[int, ...] = (2, 3, 5, 10, 20)
"""Repetitions per cell of the default planning grid."""

DEFAULT_UNPARSEABLE_RATE = 0.02
"""Share of replies without a rating assumed when the pilot does not tell."""


# --- the variance model ----------------------------------------------------------------------


@dataclass(frozen=True)
class VarianceModel:
    """Sampling variance of ``log X`` of one run as a function of design (see module docstring).

    Attributes:
        metric: ``"S"``, ``"R"`` or ``"sigma_bar"`` (``R`` and ``sigma_bar`` share one model).
        between: Between-persona component ``b`` (variance times personas).
        within: Within-cell component ``w`` at ``pilot_repetitions`` (variance times personas).
        pilot_personas: Personas of the pilot.
        pilot_repetitions: Mean ratings per cell of the pilot.
        value: The pilot's value of the metric.
        by_repetitions: Count statistics: ``(n, between, within, value)`` refitted on
            the pilot cut to ``n`` ratings per cell (``n`` below the pilot's); a design
            with ``n`` ratings uses the fit of the nearest such ``n`` (or the pilot's).
    """

    metric: str
    between: float
    within: float
    pilot_personas: int
    pilot_repetitions: float
    value: float
    by_repetitions: tuple[tuple[int, float, float, float], ...] = ()

    def _noise_factor(self, repetitions: float) -> float:
        return noise_factor(self.metric)(self.pilot_repetitions, repetitions)

    def _components(self, repetitions: int) -> tuple[float, float]:
        """``(between, within)`` at ``repetitions`` ratings per cell, from the nearest fit."""
        if not self.by_repetitions:
            return self.between, self.within * self._noise_factor(repetitions)
        fits = [(self.pilot_repetitions, self.between, self.within)]
        fits += [(float(n), b, w) for n, b, w, _ in self.by_repetitions]
        n_fit, between, within = min(fits, key=lambda f: abs(math.log(repetitions / f[0])))
        return between, within * noise_factor(self.metric)(n_fit, repetitions)

    def variance(self, personas: int, repetitions: int | None) -> float:
        """Variance of ``log X`` with ``personas`` personas and ``repetitions`` ratings
        per cell (None: exact mode, no rating noise)."""
        if personas < 2:
            raise ValueError(f"personas must be >= 2, got {personas}")
        if repetitions is None:
            return self.between / personas
        if repetitions < 2:
            raise ValueError(
                f"repetitions must be >= 2 (a cell sd needs two ratings), got {repetitions}"
            )
        between, within = self._components(repetitions)
        return (between + within) / personas

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        out = dict(self.__dict__)
        out["by_repetitions"] = [
            {"repetitions": n, "between": b, "within": w, "value": v}
            for n, b, w, v in self.by_repetitions
        ]
        return out


def _log_var(values: np.ndarray, log: bool = True) -> float:
    """Variance of the replicates' logarithms (``log``) or of the replicates themselves."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(values) if log else np.asarray(values, dtype=np.float64)
    if len(logs) < 2 or not np.all(np.isfinite(logs)):
        return math.nan
    return float(np.var(logs, ddof=1))


def variance_models(
    pilot: RunCells,
    *,
    n_boot: int = 2000,
    n_rerun_boot: int = 400,
    rng: np.random.Generator | int | None = None,
    repetitions: Sequence[int] = (),
    counts: bool = True,
) -> dict[str, VarianceModel]:
    """Fit the variance model of every tested statistic to a sampled pilot run.

    A statistic sharing another's test (``R`` with ``sigma_bar``) shares its model.
    The moment statistics are fitted first, from the same draws as without ``counts``.

    Args:
        pilot: A sampled run (``method="sampling"``) with at least 2 ratings per cell on average.
        n_boot, n_rerun_boot: Persona- and rerun-bootstrap draws.
        rng: Generator, int seed or None.
        repetitions: Ratings per cell of the designs to plan; the count statistics are
            refitted on the pilot cut to each of them below the pilot's (see the
            module docstring).
        counts: Also the count statistics
            (:func:`~persona_collapse.stats.significance.count_statistics_tested`).

    Returns:
        Statistic name -> model, in the order of the registry (moment statistics, then
        count statistics).

    Raises:
        ValueError: The pilot is an exact run or has too few ratings per cell.
    """
    if pilot.cells is None or pilot.counts is None:
        raise ValueError(
            "pilot: need a sampled run (an exact run has no rating noise to measure; "
            "use pilot_from_distributions)"
        )
    n0 = float(pilot.counts.mean())
    if n0 < 2:
        raise ValueError(f"pilot: need at least 2 ratings per cell on average, got {n0:.2f}")
    generator, _ = resolve_rng(rng)
    sd_p, sig_p = persona_bootstrap_replicates(pilot.mu, pilot.sigma, n_boot=n_boot, rng=generator)
    sd_r, sig_r = rerun_bootstrap_replicates(pilot.cells, n_boot=n_rerun_boot, rng=generator)
    n_p = pilot.n_personas
    cols = slice(None)  # every item, in the replicates' own memory layout
    point = scope_values(np.std(pilot.mu, axis=0, ddof=1), pilot.sigma.mean(axis=0), cols)
    persona = scope_values(sd_p, sig_p, cols)
    rerun = scope_values(sd_r, sig_r, cols)
    fitted: dict[str, VarianceModel] = {}
    for metric in point:
        log = is_log_scale(metric)
        total, within = _log_var(persona[metric], log), _log_var(rerun[metric], log)
        fitted[metric] = VarianceModel(
            metric=metric,
            between=max(total - within, 0.0) * n_p,
            within=within * n_p,
            pilot_personas=n_p,
            pilot_repetitions=n0,
            value=float(point[metric]),
        )
    models: dict[str, VarianceModel] = {}
    for stat in statistics_tested():
        shared = getattr(stat, "same_test_as", None)
        if shared in fitted and stat.name in fitted:
            own = fitted[stat.name].value
            models[stat.name] = replace(fitted[shared], metric=stat.name, value=own)
        elif stat.name in fitted:
            models[stat.name] = fitted[stat.name]
    if not counts or not count_statistics_tested():
        return models
    at_pilot = _count_components(pilot, n_boot, n_rerun_boot, generator)
    cut: dict[int, dict[str, tuple[float, float, float]]] = {}
    for n in sorted({int(r) for r in repetitions}):
        if 2 <= n < int(pilot.counts.min()):
            cut[n] = _count_components(_first_ratings(pilot, n), n_boot, n_rerun_boot, generator)
    for name, (between, within, value) in at_pilot.items():
        models[name] = VarianceModel(
            metric=name,
            between=between,
            within=within,
            pilot_personas=n_p,
            pilot_repetitions=n0,
            value=value,
            by_repetitions=tuple((n, *fits[name]) for n, fits in cut.items()),
        )
    return models


def _first_ratings(pilot: RunCells, n: int) -> RunCells:
    """``pilot`` with only the first ``n`` valid ratings of every cell (``n`` <= every count)."""
    cells = pilot.cells
    if cells is None:
        raise ValueError("pilot: need a sampled run to cut its cells")
    kept = CellRatings(
        values=np.ascontiguousarray(cells.values[:, :, :n]),
        counts=np.minimum(cells.counts, n),
        persona_ids=cells.persona_ids,
        item_ids=cells.item_ids,
    )
    return cells_from_cell_ratings(kept, foundations=pilot.foundations, scale=pilot.scale)


def _count_components(
    pilot: RunCells, n_boot: int, n_rerun_boot: int, rng: np.random.Generator
) -> dict[str, tuple[float, float, float]]:
    """Count statistic -> ``(between, within, value)`` of a sampled pilot (all items),
    from the persona and rerun bootstrap of the difference tests, on the test scale."""
    draws = draw_estimators(
        {"pilot": pilot},
        estimators=("reference",),
        paired=False,
        n_boot=n_boot,
        n_rerun_boot=n_rerun_boot,
        rng=rng,
        counts=True,
    )["reference"]
    point = draws.point["pilot"][OVERALL]
    persona = draws.persona["pilot"][OVERALL]
    rerun = draws.rerun["pilot"][OVERALL] if draws.rerun is not None else {}
    n_p = pilot.n_personas
    out: dict[str, tuple[float, float, float]] = {}
    for stat in count_statistics_tested():
        if stat.name not in persona:
            continue
        log = is_log_scale(stat.name)
        total = _log_var(persona[stat.name], log)
        within = _log_var(rerun[stat.name], log) if stat.name in rerun else 0.0
        out[stat.name] = (max(total - within, 0.0) * n_p, within * n_p, float(point[stat.name]))
    return out


def pilot_from_distributions(
    probs: np.ndarray,
    *,
    scale: Sequence[float],
    item_ids: Sequence[int],
    n_repetitions: int = 10,
    foundations: dict[int, str] | None = None,
    rng: np.random.Generator | int | None = None,
) -> RunCells:
    """A sampled pilot drawn from exact cell distributions (an exact run or the simulator).

    Args:
        probs: ``(P, Q, K)`` rating distributions over ``scale``.
        scale: Rating values.
        item_ids: The ``Q`` item ids.
        n_repetitions: Ratings drawn per cell.
        foundations: Item id -> foundation (default MFQ-30).
        rng: Generator, int seed or None.
    """
    generator, _ = resolve_rng(rng)
    grouped = sample_cells(
        np.asarray(probs, dtype=np.float64),
        n_repetitions=n_repetitions,
        scale=scale,
        rng=generator,
        item_ids=item_ids,
    )
    return cells_from_cell_ratings(grouped, foundations=foundations, scale=scale)


def pilot_from_preset(
    preset: str,
    *,
    n_personas: int = 400,
    n_repetitions: int = 10,
    temperature: float = 0.1,
    rng: np.random.Generator | int | None = None,
) -> RunCells:
    """A sampled pilot of a simulator preset (synthetic personas ``"plan persona <k>"``).

    A larger pilot than the study itself (400 personas by default) pins the
    variance components down better; the model scales them to any design.

    Raises:
        UnknownNameError: Unknown preset.
    """
    if preset not in PRESETS:
        raise UnknownNameError("simulator preset", preset, PRESETS)
    sim = SimulatorBackend(preset)
    personas = [f"plan persona {k}" for k in range(n_personas)]
    item_ids = [i.id for i in sim.instrument.active_items if not i.is_catch]
    probs = sim.cell_distributions(personas, temperature=temperature, items=item_ids)
    scale = list(range(sim.instrument.scale_min, sim.instrument.scale_max + 1))
    return pilot_from_distributions(
        probs, scale=scale, item_ids=item_ids, n_repetitions=n_repetitions, rng=rng
    )


# --- the budget ------------------------------------------------------------------------------


def prompt_tokens_per_request(
    *,
    instrument: Instrument | None = None,
    template: PromptTemplate | None = None,
    personas: Sequence[str] | None = None,
) -> float:
    """Mean estimated prompt tokens of one persona request.

    Tokens are counted by :func:`persona_collapse.engine.costs.count_message_tokens`,
    averaged over every item of ``instrument`` (default MFQ-30) and ``personas``
    (default: the built-in set).
    """
    inst = instrument if instrument is not None else mfq30()
    tpl = template if template is not None else DEFAULT_TEMPLATE
    texts = list(personas) if personas is not None else list(builtin_personas())
    if not texts:
        raise ValueError("personas must hold at least one persona")
    total = 0
    count = 0
    for persona in texts:
        for item in inst.active_items:
            total += count_message_tokens(render_prompt(tpl, inst, item.id, persona).messages)
            count += 1
    return total / count


def expected_requests_per_cell(repetitions: int, unparseable_rate: float) -> float:
    """Expected requests for one cell in sampling mode (see the module docstring)."""
    u = unparseable_rate
    if not 0 <= u < 1:
        raise ValueError(f"unparseable_rate must lie in [0, 1), got {u!r}")
    # Round k (k = 0 is the first) is sent when a slot has failed all k earlier
    # attempts; round MAX_SHORT_ATTEMPTS is the long-form one.
    return sum(1.0 - (1.0 - u**k) ** repetitions for k in range(MAX_SHORT_ATTEMPTS + 1))


@dataclass(frozen=True)
class DesignPoint:
    """One design of the planning grid, for one variant.

    Attributes:
        mode: ``"sampling"`` or ``"exact"`` (logprob).
        personas: Personas per run.
        repetitions: Ratings per cell (1 for exact mode).
        se_log: SE of ``log X`` of one run.
        se_difference: SE of the log ratio between two runs.
        power: Probability of detecting the target change.
        requests: Expected requests when the server honours ``n``.
        requests_without_n: Expected requests when it does not (one per answer).
        prompt_tokens, completion_tokens: Expected tokens (with ``n`` honoured).
        cost_usd: Expected cost (None without prices).
        reaches_target: ``power >= target power``.
    """

    mode: Mode
    personas: int
    repetitions: int
    se_log: float
    se_difference: float
    power: float
    requests: int
    requests_without_n: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    reaches_target: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Plan:
    """The planning grid and its cheapest designs reaching the target.

    Attributes:
        metric, change, alpha, target_power, correlation: The target.
        model: Variance model used.
        points: Every design evaluated (sampling grid, then exact mode per persona count).
        items: Items per run.
        prompt_tokens: Prompt tokens per request assumed.
        unparseable_rate: Share of replies without a rating assumed.
        prices: Prices used (None: no costs).
        pilot: Description of the pilot.
    """

    metric: str
    change: float
    alpha: float
    target_power: float
    correlation: float
    model: VarianceModel
    points: tuple[DesignPoint, ...]
    items: int
    prompt_tokens: float
    unparseable_rate: float
    prices: ModelPrices | None
    pilot: str

    def cheapest(self, mode: Mode) -> DesignPoint | None:
        """Cheapest design of ``mode`` reaching the target (by cost, else by tokens), or None."""
        ok = [p for p in self.points if p.mode == mode and p.reaches_target]
        if not ok:
            return None

        def key(p: DesignPoint) -> tuple[float, int, int]:
            cost = p.cost_usd if p.cost_usd is not None else 0.0
            return (cost, p.prompt_tokens + p.completion_tokens, p.requests)

        return min(ok, key=key)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        best = {m: self.cheapest(m) for m in ("sampling", "exact")}
        return {
            "metric": self.metric,
            "change": self.change,
            "alpha": self.alpha,
            "target_power": self.target_power,
            "correlation": self.correlation,
            "model": self.model.to_dict(),
            "items": self.items,
            "prompt_tokens": self.prompt_tokens,
            "unparseable_rate": self.unparseable_rate,
            "prices": None if self.prices is None else self.prices.model_dump(),
            "pilot": self.pilot,
            "points": [p.to_dict() for p in self.points],
            "cheapest": {m: None if p is None else p.to_dict() for m, p in best.items()},
        }


def power_of(change: float, se_difference: float, alpha: float, *, log: bool = True) -> float:
    """Power of the two-sided level-``alpha`` test of a relative ``change`` on the log scale
    (``log=False``: of a plain difference ``change``, for difference-scale statistics)."""
    if log and not change > -1:
        raise ValueError(f"change must be > -1 (a relative change), got {change!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    if not (math.isfinite(se_difference) and se_difference > 0):
        return math.nan
    normal = NormalDist()
    z = normal.inv_cdf(1.0 - alpha / 2.0)
    shift = abs(math.log1p(change) if log else change) / se_difference
    return normal.cdf(shift - z) + normal.cdf(-shift - z)


def plan_design(
    model: VarianceModel,
    *,
    change: float,
    power: float = 0.8,
    alpha: float = 0.05,
    personas: Sequence[int] = DEFAULT_PERSONAS,
    repetitions: Sequence[int] = DEFAULT_REPETITIONS,
    items: int = 30,
    prompt_tokens: float | None = None,
    unparseable_rate: float = DEFAULT_UNPARSEABLE_RATE,
    prices: ModelPrices | None = None,
    correlation: float = 0.0,
    pilot: str = "",
) -> Plan:
    """Evaluate a personas x repetitions grid (and exact mode) for detecting ``change``.

    Args:
        model: Variance model of the metric (from :func:`variance_models`).
        change: Relative change to detect (``-0.2``: a 20 % drop).
        power: Target power.
        alpha: Test level.
        personas: Persona counts to try (each >= 2).
        repetitions: Ratings per cell to try in sampling mode (each >= 2).
        items: Items per run.
        prompt_tokens: Prompt tokens of one request (default: estimated from the
            built-in template and personas).
        unparseable_rate: Share of replies without a rating (drives re-asks).
        prices: Prices per million tokens (None: no costs).
        correlation: Correlation of the two runs' estimates (0 = independent, conservative).
        pilot: Description of the pilot, for reports.

    Returns:
        :class:`Plan`.
    """
    if not 0 < power < 1:
        raise ValueError(f"power must lie strictly between 0 and 1, got {power!r}")
    if not -1 < correlation < 1:
        raise ValueError(f"correlation must lie strictly between -1 and 1, got {correlation!r}")
    if not personas or any(int(p) < 2 for p in personas):
        raise ValueError(f"personas must be counts >= 2, got {list(personas)}")
    if not repetitions or any(int(n) < 2 for n in repetitions):
        raise ValueError(f"repetitions must be counts >= 2, got {list(repetitions)}")
    if items < 1:
        raise ValueError(f"items must be >= 1, got {items}")
    if not 0 <= unparseable_rate < 1:
        raise ValueError(f"unparseable_rate must lie in [0, 1), got {unparseable_rate!r}")
    log = is_log_scale(model.metric)
    power_of(change, 1.0, alpha, log=log)  # validates change and alpha
    tokens = prompt_tokens if prompt_tokens is not None else prompt_tokens_per_request()
    if not (math.isfinite(tokens) and tokens > 0):
        raise ValueError(f"prompt_tokens must be > 0, got {tokens!r}")

    def point(mode: Mode, n_personas: int, n_reps: int | None) -> DesignPoint:
        var = model.variance(n_personas, n_reps)
        se_diff = math.sqrt(2.0 * (1.0 - correlation) * var)
        pw = power_of(change, se_diff, alpha, log=log)
        cells = n_personas * items
        if n_reps is None:
            requests = without_n = cells
            completion = cells * SHORT_MAX_TOKENS
        else:
            per_cell = expected_requests_per_cell(n_reps, unparseable_rate)
            requests = round(cells * per_cell)
            answers = n_reps / (1.0 - unparseable_rate)
            without_n = round(cells * answers)
            # Short attempts per slot: 1 / (1 - u); a long-form one after all short ones failed.
            long_share = unparseable_rate**MAX_SHORT_ATTEMPTS
            completion = round(
                cells
                * n_reps
                * (SHORT_MAX_TOKENS / (1.0 - unparseable_rate) + long_share * LONG_MAX_TOKENS)
            )
        prompt = round(requests * tokens)
        cost = (
            None
            if prices is None
            else estimate_cost(Usage(prompt_tokens=prompt, completion_tokens=completion), prices)
        )
        return DesignPoint(
            mode=mode,
            personas=int(n_personas),
            repetitions=1 if n_reps is None else int(n_reps),
            se_log=math.sqrt(var),
            se_difference=se_diff,
            power=pw,
            requests=int(requests),
            requests_without_n=int(without_n),
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            cost_usd=cost,
            reaches_target=bool(pw >= power),
        )

    grid = [point("sampling", int(p), int(n)) for p in personas for n in repetitions]
    grid += [point("exact", int(p), None) for p in personas]
    return Plan(
        metric=model.metric,
        change=float(change),
        alpha=float(alpha),
        target_power=float(power),
        correlation=float(correlation),
        model=model,
        points=tuple(grid),
        items=int(items),
        prompt_tokens=float(tokens),
        unparseable_rate=float(unparseable_rate),
        prices=prices,
        pilot=pilot,
    )


__all__ = [
    "DEFAULT_PERSONAS",
    "DEFAULT_REPETITIONS",
    "DEFAULT_UNPARSEABLE_RATE",
    "NOISE_FACTORS",
    "DesignPoint",
    "Plan",
    "VarianceModel",
    "expected_requests_per_cell",
    "noise_factor",
    "pilot_from_distributions",
    "pilot_from_preset",
    "plan_design",
    "power_of",
    "prompt_tokens_per_request",
    "variance_models",
]
