"""Runs from wherever they live: reference-layout CSV files, folders of them, run stores.

:func:`load_runs` turns command-line paths into :class:`LoadedRun` values, and
:func:`run_metrics` / :func:`run_self_profile` compute results from them. The
CLI's ``metrics``, ``compare`` and ``profile`` commands are thin wrappers over
these functions.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from persona_collapse.core.errors import (
    InputFileError,
    TooFewPersonasError,
    UnknownNameError,
    UserError,
)
from persona_collapse.core.frames import INVALID_RATING, SELF_PERSONA_ID
from persona_collapse.core.instrument import Instrument, load_instrument, mfq30
from persona_collapse.stats.metrics import (
    RunMetrics,
    SelfProfile,
    analyze_distributions,
    analyze_ratings,
    self_profile_from_distributions,
)
from persona_collapse.stats.metrics import self_profile as compute_self_profile
from persona_collapse.store.reference_csv import (
    RatingColumns,
    all_in,
    iter_csv_files,
    read_rating_columns,
)

if TYPE_CHECKING:  # imported where used: metrics of CSV files need neither pandas nor SQLite
    import pandas as pd

    from persona_collapse.engine.protocol import ProtocolCheck
    from persona_collapse.store.sqlite import RunRecord, RunStore

logger = logging.getLogger(__name__)

_SQLITE_MAGIC = b"SQLite format 3\x00"
_STORE_SUFFIXES = frozenset({".db", ".sqlite", ".sqlite3"})


class LoadedRun:
    """One run's answers, ready for analysis.

    Attributes:
        name: Run label (file stem for CSV files, stored name for run stores).
        kind: ``"persona"`` or ``"self"``.
        source: Where it came from (a file path, or ``store.db#name``).
        instrument: Instrument the answers refer to.
        columns: The ratings' integer columns as numpy arrays (what metrics use).
        ratings: Ratings frame (see :mod:`persona_collapse.core.frames`); built from
            ``columns`` when first asked for, so metrics of CSV files need no pandas.
        distributions: Per-cell distribution frame for ``exact`` runs, else None.
        temperature: Collection temperature when known.
        planned_personas: Personas the run was planned with (run stores); None when
            unknown (CSV files: the personas present count as planned).
        planned_repetitions: Repetitions per cell the run was planned with; None when
            unknown (CSV files: the largest repetition index present).
        protocol: Whether the model followed the answer protocol (run stores only;
            None for imported CSV files, whose ratings are already parsed).
    """

    def __init__(
        self,
        name: str,
        kind: Literal["persona", "self"],
        source: str,
        instrument: Instrument,
        ratings: pd.DataFrame | RatingColumns,
        distributions: pd.DataFrame | None = None,
        temperature: float | None = None,
        planned_personas: int | None = None,
        planned_repetitions: int | None = None,
        protocol: ProtocolCheck | None = None,
    ) -> None:
        self.name = name
        self.kind: Literal["persona", "self"] = kind
        self.source = source
        self.instrument = instrument
        self.distributions = distributions
        self.temperature = temperature
        self.planned_personas = planned_personas
        self.planned_repetitions = planned_repetitions
        self.protocol = protocol
        if isinstance(ratings, RatingColumns):
            self.columns = ratings
            self._frame: pd.DataFrame | None = None
        else:
            self.columns = RatingColumns.from_frame(ratings)
            self._frame = ratings

    def __repr__(self) -> str:
        return (
            f"LoadedRun(name={self.name!r}, kind={self.kind!r}, source={self.source!r}, "
            f"instrument={self.instrument.name!r}, rows={len(self.columns)})"
        )

    @property
    def ratings(self) -> pd.DataFrame:
        """The ratings frame (built from :attr:`columns` on first use)."""
        if self._frame is None:
            self._frame = self.columns.to_frame()
        return self._frame

    def replace(self, **changes: Any) -> LoadedRun:
        """A copy with the given attributes changed (``ratings`` may be a frame or columns)."""
        current: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "instrument": self.instrument,
            "ratings": self._frame if self._frame is not None else self.columns,
            "distributions": self.distributions,
            "temperature": self.temperature,
            "planned_personas": self.planned_personas,
            "planned_repetitions": self.planned_repetitions,
            "protocol": self.protocol,
        }
        return LoadedRun(**(current | changes))

    @property
    def has_frame(self) -> bool:
        """Whether the ratings frame exists already (given, or built on an earlier use)."""
        return self._frame is not None

    @property
    def foundations(self) -> dict[int, str]:
        """Item id -> group (foundation, domain...) of the items present in the run."""
        present = _distinct(self.columns.item_id)
        if self.distributions is not None:
            present |= set(self.distributions["item_id"].tolist())
        mapping = {i.id: i.foundation for i in self.instrument.items}
        return {i: mapping[i] for i in sorted(present) if i in mapping}


def _distinct(values: np.ndarray) -> set[int]:
    """The distinct values of an integer array.

    Item ids are small and non-negative: a count per value finds them without
    turning every row into a Python int.
    """
    if len(values) and int(values.min()) >= 0 and int(values.max()) < 4 * len(values) + 1024:
        return set(np.flatnonzero(np.bincount(values)).tolist())
    return set(values.tolist())


def is_run_store(path: Path) -> bool:
    """Whether ``path`` is a SQLite file (a run store) rather than a CSV file."""
    if path.suffix.lower() in _STORE_SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            return fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def stored_protocol_check(store: RunStore, record: RunRecord) -> ProtocolCheck | None:
    """The protocol verdict of a stored run (computed for runs stored before it existed)."""
    from persona_collapse.engine.protocol import ProtocolCheck, check_stored_run

    check = ProtocolCheck.from_dict(record.metadata.get("protocol_check"))
    return check if check is not None else check_stored_run(store, record.run_id, record.mode)


def loaded_run(store: RunStore, record: RunRecord, *, path: Path | None = None) -> LoadedRun:
    """A stored run as a :class:`LoadedRun` (ratings, distributions, plan, protocol verdict).

    Args:
        store: The open run store.
        record: The run.
        path: The store path as the user gave it, for the run's ``source`` label
            (default ``store.path``).
    """
    texts = store.personas(record.run_id) if record.kind == "persona" else []
    exact = record.mode == "exact"
    return LoadedRun(
        name=record.name,
        kind=record.kind,
        source=f"{path if path is not None else store.path}#{record.name}",
        instrument=record.instrument(),
        ratings=store.ratings_frame(record.run_id),
        distributions=store.distributions_frame(record.run_id) if exact else None,
        temperature=record.temperature,
        planned_personas=len(texts) or None,
        planned_repetitions=record.n_repetitions,
        protocol=stored_protocol_check(store, record),
    )


def _runs_from_store(path: Path, names: Sequence[str] | None) -> list[LoadedRun]:
    from persona_collapse.store.sqlite import RunStore

    if not path.is_file():
        raise InputFileError(path, "run store not found")
    with RunStore.open(path, create=False) as store:
        records = [store.find_run(n) for n in names] if names else store.list_runs()
        return [loaded_run(store, rec, path=path) for rec in records]


def _run_from_csv(path: Path, instrument: Instrument | None = None) -> LoadedRun:
    # Metrics need no reply text: integer columns only, read without pandas.
    inst = instrument if instrument is not None else mfq30(include_catch=True)
    columns = read_rating_columns(path, instrument=inst)
    kind: Literal["persona", "self"] = "self" if columns.kind == "self" else "persona"
    return LoadedRun(
        name=path.stem,
        kind=kind,
        source=str(path),
        instrument=inst,
        ratings=columns,
    )


def load_runs(
    paths: Iterable[str | os.PathLike[str]],
    *,
    run_names: Sequence[str] | None = None,
    kind: Literal["persona", "self"] | None = None,
    instrument: Instrument | None = None,
) -> list[LoadedRun]:
    """Load every run found at ``paths``.

    Args:
        paths: Reference-layout CSV files, folders searched recursively for
            ``*.csv``, or run stores (SQLite files).
        run_names: Restrict run stores to these run names (or ids).
        kind: Keep only persona or only self runs; None keeps both.
        instrument: Instrument of the CSV files (default MFQ-30 with its catch
            items); run stores record their own.

    Raises:
        InputFileError: a path is missing or a file is malformed.
        UnknownNameError: a requested run name is not in a store.
        UserError: nothing to analyse.
    """
    runs: list[LoadedRun] = []
    csv_inputs: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputFileError(p, "no such file or directory")
        if p.is_file() and is_run_store(p):
            runs.extend(_runs_from_store(p, run_names))
        else:
            csv_inputs.append(p)
    if csv_inputs:
        # One instrument for every file (building MFQ-30 anew for each costs as much as
        # checking a file's item ids).
        inst = instrument if instrument is not None else mfq30(include_catch=True)
        for csv_path in iter_csv_files(csv_inputs):
            runs.append(_run_from_csv(csv_path, inst))
    if kind is not None:
        runs = [r for r in runs if r.kind == kind]
    if not runs:
        what = f"{kind} runs" if kind else "runs"
        raise UserError(f"no {what} found in {', '.join(str(p) for p in paths)}")
    return runs


def run_metrics(run: LoadedRun, analysis: BootstrapSettings | None = None) -> RunMetrics:
    """S, R and sigma_bar (overall and per foundation) of a persona run, with SEs.

    Exact (distribution) runs use the stored distributions; sampled runs use
    every valid rating. The bootstrap seed is ``analysis.seed``.

    Raises:
        TooFewPersonasError: fewer than two personas are complete (names the run).
    """
    try:
        return _run_metrics(run, analysis)
    except TooFewPersonasError as exc:
        raise TooFewPersonasError(
            exc.complete, exc.total, where=f"run {run.name!r} ({run.source})"
        ) from None


def scored_item_ids(instrument: Instrument) -> frozenset[int]:
    """Ids of the items S and R are computed over: every item but the catch items."""
    return frozenset(item.id for item in instrument.items if not item.is_catch)


def scored_only(run: LoadedRun) -> LoadedRun:
    """``run`` without rows of items outside the instrument's scored set, with a warning.

    Catch items (MFQ-30 ids 31, 32) check attention; they are not part of S or R,
    and a persona lacking one must not be dropped for it.
    """
    scored = np.fromiter(scored_item_ids(run.instrument), dtype=np.int64)
    keep = np.isin(run.columns.item_id, scored)
    dists = run.distributions
    keep_d = None if dists is None else np.isin(dists["item_id"].to_numpy(), scored)
    dropped = int((~keep).sum()) + (0 if keep_d is None else int((~keep_d).sum()))
    if not dropped:
        return run
    ids = set(run.columns.item_id[~keep].tolist())
    if dists is not None and keep_d is not None:
        ids |= set(dists["item_id"].to_numpy()[~keep_d].tolist())
    logger.warning(
        "%s: ignored %d row(s) of item(s) %s, outside the scored items of %s "
        "(catch items are not part of S and R)",
        run.source,
        dropped,
        ", ".join(str(i) for i in sorted(ids)),
        run.instrument.name,
    )
    ratings: pd.DataFrame | RatingColumns
    if run.has_frame:
        ratings = run.ratings[keep]
        ratings.attrs = dict(run.ratings.attrs)
    else:
        ratings = run.columns.take(keep)
    return run.replace(
        ratings=ratings,
        distributions=None if dists is None or keep_d is None else dists[keep_d],
    )


class BootstrapSettings(Protocol):
    """What metrics read of the analysis settings (``AnalysisConfig`` fits)."""

    @property
    def n_persona_boot(self) -> int:
        """Persona-bootstrap draws."""
        ...

    @property
    def n_rerun_boot(self) -> int:
        """Rerun-bootstrap draws."""
        ...

    @property
    def seed(self) -> int:
        """Seed of the bootstrap draws."""
        ...


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap draws and seed for metrics, without loading the configuration models.

    ``pcollapse metrics`` uses it to stay quick to start; anything that has an
    ``AnalysisConfig`` passes that instead.
    """

    n_persona_boot: int = 2000
    n_rerun_boot: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_persona_boot < 1 or self.n_rerun_boot < 1 or self.seed < 0:
            raise ValueError(
                "bootstrap draws must be >= 1 and the seed >= 0, got "
                f"{self.n_persona_boot}, {self.n_rerun_boot}, {self.seed}"
            )


@dataclass(frozen=True)
class Completeness:
    """How much of a persona run's plan the answers cover (scored items only).

    Attributes:
        slots: Collected (persona, item, repetition) slots; cells for exact runs.
        planned: Slots the run was planned with (personas x items x repetitions).
        dropped_personas: Personas left out of S and R for lacking a valid rating
            on some item.
        missing_personas: Planned personas without a single answer (run stores only).
    """

    slots: int
    planned: int
    dropped_personas: tuple[int, ...] = ()
    missing_personas: tuple[int, ...] = ()

    @property
    def complete(self) -> bool:
        """Every planned slot collected and no persona dropped or missing."""
        return (
            self.slots >= self.planned and not self.dropped_personas and not self.missing_personas
        )

    def describe(self) -> str:
        """One line on what is missing ("" when complete)."""
        parts = []
        if self.slots < self.planned:
            parts.append(f"{self.slots}/{self.planned} slots")
        if self.missing_personas:
            parts.append(f"no answers from persona(s) {_ids(self.missing_personas)}")
        if self.dropped_personas:
            parts.append(
                f"persona(s) {_ids(self.dropped_personas)} dropped (an item without a valid rating)"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        """Plain-data form (JSON)."""
        return {
            "complete": self.complete,
            "slots": f"{self.slots}/{self.planned}",
            "slots_collected": self.slots,
            "slots_planned": self.planned,
            "dropped_personas": list(self.dropped_personas),
            "missing_personas": list(self.missing_personas),
        }


def _ids(ids: Sequence[int], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _repetitions_per_cell(
    persona: np.ndarray, item: np.ndarray, repetition: np.ndarray | None
) -> np.ndarray:
    """Distinct repetitions of each (persona, item) cell present (1 per cell without reps).

    Done on packed integer keys with a presence table: a large run's columns are
    tens of millions of rows, and grouping them in pandas would copy them all.
    """
    if not len(persona):
        return np.zeros(0, dtype=np.int64)
    columns = [persona, item] + ([] if repetition is None else [repetition])
    lows = [int(c.min()) for c in columns]
    spans = [int(c.max()) - low + 1 for c, low in zip(columns, lows, strict=True)]
    if math.prod(spans) > 8 * len(persona) + 1024:  # sparse ids: let pandas group them
        import pandas as pd

        frame = pd.DataFrame({"p": persona, "q": item})
        if repetition is None:
            return frame.groupby(["p", "q"]).size().clip(upper=1).to_numpy()
        frame["r"] = repetition
        return frame.groupby(["p", "q"])["r"].nunique().to_numpy()
    key = columns[0].astype(np.int64)
    key -= lows[0]
    for values, low, span in zip(columns[1:], lows[1:], spans[1:], strict=True):
        key *= span
        key += values  # in int64, whatever the columns' type
        key -= low
    present = np.zeros(math.prod(spans), dtype=bool)
    present[key] = True
    del key
    # One table row per cell (its repetitions side by side): count each row's marks.
    per_cell = 1 if repetition is None else spans[2]
    counts = np.count_nonzero(present.reshape(-1, per_cell), axis=1)
    return counts[counts > 0]


def run_completeness(run: LoadedRun, metrics: RunMetrics | None = None) -> Completeness:
    """Collected against planned slots of a persona run (see :class:`Completeness`).

    Run stores know their plan (persona set, repetitions); for a CSV file the plan
    is inferred from the file: the personas present, the instrument's scored
    items and the usual number of repetitions per cell. A cell counts at most
    the planned repetitions.
    """
    scored = scored_item_ids(run.instrument)
    n_items = len([i for i in run.instrument.active_items if i.id in scored]) or len(scored)
    exact = run.distributions is not None and len(run.distributions) > 0
    if exact and run.distributions is not None:
        persona = run.distributions["persona_id"].to_numpy()
        item = run.distributions["item_id"].to_numpy()
        repetition = None
    else:
        persona, item = run.columns.persona_id, run.columns.item_id
        repetition = run.columns.repetition
    # Usually every row counts (scored items, real personas): then nothing is copied.
    if not all_in(item, scored) or (len(persona) and int(persona.min()) < 0):
        keep = np.isin(item, np.fromiter(scored, dtype=np.int64))
        keep &= persona >= 0
        persona = persona[keep]
        item = item[keep]
        repetition = None if repetition is None else repetition[keep]
    per_cell = _repetitions_per_cell(persona, item, repetition)
    # Sorted distinct ids; ids are >= 0 here, and mostly small: a presence count then
    # avoids sorting (np.unique without options would also import numpy.ma, ~20 ms).
    if len(persona) and int(persona.max()) < 4 * len(persona) + 1024:
        seen = np.flatnonzero(np.bincount(persona))
    else:
        seen = np.unique(persona, return_counts=True)[0]
    n_personas = run.planned_personas if run.planned_personas is not None else len(seen)
    missing: tuple[int, ...] = ()
    if run.planned_personas is not None:
        missing = tuple(int(p) for p in np.setdiff1d(np.arange(run.planned_personas), seen))
    if exact:
        reps = 1
    elif run.planned_repetitions is not None:
        reps = run.planned_repetitions
    else:
        # A CSV file does not say how many repetitions were planned: take the usual
        # count per cell (retries stored as extra repetitions do not raise it).
        reps = int(np.bincount(per_cell).argmax()) if len(per_cell) else 0
    # Extra rows of a cell (retries) do not make up for another cell's missing ones.
    slots = int(np.minimum(per_cell, reps).sum())
    dropped = tuple(metrics.excluded_personas) if metrics is not None else ()
    return Completeness(slots, n_personas * n_items * reps, dropped, missing)


def _run_metrics(run: LoadedRun, analysis: BootstrapSettings | None) -> RunMetrics:
    cfg = analysis if analysis is not None else Bootstrap()
    if run.kind != "persona":
        raise UserError(f"run {run.name!r} is a self run; S and R need a persona run")
    run = scored_only(run)
    if run.distributions is not None and len(run.distributions):
        d = run.distributions
        scale = run.instrument.scale
        prob_cols = [f"p{k}" for k in scale]
        return analyze_distributions(
            d["persona_id"].to_numpy(),
            d["item_id"].to_numpy(),
            d[prob_cols].to_numpy(dtype=float),
            scale=scale,
            foundations=run.foundations,
            n_persona_boot=cfg.n_persona_boot,
            rng=cfg.seed,
            repetitions=run.planned_repetitions,
        )
    r = run.columns
    if not len(r):
        raise UserError(f"run {run.name!r} has no answers yet")
    return analyze_ratings(
        r.persona_id,
        r.item_id,
        r.rating,
        scale=run.instrument.scale,
        foundations=run.foundations,
        n_persona_boot=cfg.n_persona_boot,
        n_rerun_boot=cfg.n_rerun_boot,
        rng=cfg.seed,
    )


def run_self_profile(run: LoadedRun) -> SelfProfile:
    """Per-group self-profile of a run (normally a self run).

    Ratings of reverse-keyed items are reflected (``min + max - x``) before the
    group means are taken, so a high mean always means more of the group's trait;
    :func:`profile_notes` says which items were reflected.
    """
    inst = run.instrument
    reverse = np.fromiter(inst.reverse_keyed, dtype=np.int64)
    if run.distributions is not None and len(run.distributions):
        d = run.distributions
        if run.kind == "persona":
            d = d[d["persona_id"] == SELF_PERSONA_ID]
        scale = inst.scale
        items = d["item_id"].to_numpy()
        probs = d[[f"p{k}" for k in scale]].to_numpy(dtype=float)
        flip = np.isin(items, reverse)
        if flip.any():  # P(x) moves to min + max - x (on a copy: the frame's may be read-only)
            probs = probs.copy()
            probs[flip] = probs[flip][:, ::-1]
        return self_profile_from_distributions(
            items, probs, scale=scale, foundations=run.foundations
        )
    r = run.columns
    if run.kind == "persona" and bool((r.persona_id < 0).any()):
        r = r.take(r.persona_id == SELF_PERSONA_ID)
    if not len(r):
        raise UserError(f"run {run.name!r} has no answers yet")
    ratings = r.rating
    flip = np.isin(r.item_id, reverse) & (ratings != INVALID_RATING)
    if flip.any():
        ratings = np.where(flip, inst.scale_min + inst.scale_max - ratings, ratings)
    return compute_self_profile(r.item_id, ratings, foundations=run.foundations)


def profile_notes(run: LoadedRun) -> dict[str, Any]:
    """How a self-profile of ``run`` was scored: group noun and reflected items (JSON)."""
    inst = run.instrument
    return {
        "instrument": inst.name,
        "group": inst.group_noun,
        "reverse_keyed_reflected": bool(inst.reverse_keyed),
        "reverse_keyed_items": sorted(inst.reverse_keyed),
    }


def instrument_option(name: str | None) -> Instrument | None:
    """The instrument a command-line ``--instrument`` names (built-in or YAML file).

    Catch items are included so that files holding them are read; S and R leave them out.

    Raises:
        UnknownNameError, InputFileError, ConfigError: as :func:`load_instrument`.
    """
    return None if name is None else load_instrument(name, include_catch=True)


def metrics_by_name(
    runs: Sequence[LoadedRun], analysis: BootstrapSettings | None = None
) -> dict[str, RunMetrics]:
    """Metrics of each persona run, keyed by run name (names must be unique)."""
    out: dict[str, RunMetrics] = {}
    for run in runs:
        if run.kind != "persona":
            continue
        if run.name in out:
            raise UserError(f"two runs are named {run.name!r}; give distinct names")
        try:
            out[run.name] = run_metrics(run, analysis)
        except ValueError as exc:
            # Too few usable answers for S and R: say why in one line, no traceback.
            if run.protocol is not None and not run.protocol.follows:
                raise UserError(
                    f"{run.protocol.message(run.name)}; no S/R can be computed ({exc})"
                ) from None
            raise UserError(f"run {run.name!r}: no S/R can be computed ({exc})") from None
    return out


def pick(mapping: Mapping[str, RunMetrics], name: str, what: str) -> RunMetrics:
    """``mapping[name]``, or an :class:`UnknownNameError` with suggestions."""
    if name not in mapping:
        raise UnknownNameError(what, name, mapping)
    return mapping[name]
