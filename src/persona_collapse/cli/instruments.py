"""``pcollapse compare-instruments``: is a variant's instability persona-specific?

Files are named by family, variant and *set* (what the file holds):

========== ============================================================
set        file
========== ============================================================
MFQ        MFQ-30 persona run (persona_id, question_id, run_index, rating...)
MFQ-self   MFQ-30 self-mode run (no persona_id)
BFI-44     BFI-44 persona run (alias BFI)
BFI-44-self BFI-44 self-mode run (alias BFI-self)
MMLU       capability CSV of the MMLU task (item_id, answer, correct...)
GSM8K      capability CSV of the GSM8K task
lookup     lookup-control CSV (table_id, rating, correct_id...)
========== ============================================================

either in a YAML manifest (``family: {variant: {SET: path}}``, paths relative to the
manifest) or as repeated ``--run FAMILY/VARIANT/SET=PATH`` options, or both. Each
file is checked against its set (layout, persona vs self mode, items of the
instrument, answer format), every family needs its base variant and every set of a
variant a base file; a file named for another family in the comparison is refused.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from persona_collapse.cli._app import app, print_json, stdout_console
from persona_collapse.core.errors import InputFileError, UserError
from persona_collapse.core.formatting import MISSING

if TYPE_CHECKING:
    from rich.table import Table

    from persona_collapse.stats.instruments import CellSet, FamilyComparison


@dataclass(frozen=True)
class SetKind:
    """What a set name stands for."""

    name: str  # canonical name, as written in --run and manifests
    instrument: str  # label in the output
    conditioning: str  # persona / none
    source: str  # likert / capability / lookup
    n_options: int | None


SET_KINDS: dict[str, SetKind] = {
    k.name.lower(): k
    for k in (
        SetKind("MFQ", "MFQ", "persona", "likert", 6),
        SetKind("MFQ-self", "MFQ", "none", "likert", 6),
        SetKind("BFI-44", "BFI-44", "persona", "likert", 5),
        SetKind("BFI-44-self", "BFI-44", "none", "likert", 5),
        SetKind("MMLU", "MMLU", "none", "capability", 4),
        SetKind("GSM8K", "GSM8K", "none", "capability", None),
        SetKind("lookup", "lookup", "none", "lookup", 6),
    )
}
_ALIASES = {
    "bfi": "bfi-44",
    "bfi-self": "bfi-44-self",
    "bfi44": "bfi-44",
    "bfi44-self": "bfi-44-self",
}
SET_ORDER = tuple(k.name for k in SET_KINDS.values())
# Order of the sets in rows and tables (the reference's: capability tasks first).
_ROW_ORDER = ("MMLU", "GSM8K", "MFQ", "MFQ-self", "BFI-44", "BFI-44-self", "lookup")
_LIKERT = frozenset(k.instrument for k in SET_KINDS.values() if k.source == "likert")
_RUN_SYNTAX = re.compile(r"^(?P<family>[^/=]+)/(?P<variant>[^/=]+)/(?P<set>[^/=]+)=(?P<path>.+)$")


def set_kind(name: str, *, where: str) -> SetKind:
    """The :class:`SetKind` of ``name`` (case-insensitive; ``BFI`` = ``BFI-44``)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SET_KINDS:
        known = ", ".join(SET_ORDER)
        close = difflib.get_close_matches(name, SET_ORDER, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"{where}: unknown set {name!r}; known: {known}{hint}")
    return SET_KINDS[key]


@dataclass(frozen=True)
class Entry:
    """One file of the comparison."""

    family: str
    variant: str
    kind: SetKind
    path: Path
    where: str  # where it was given (for messages)


def parse_run_option(text: str) -> Entry:
    """An entry from ``FAMILY/VARIANT/SET=PATH``."""
    m = _RUN_SYNTAX.match(text.strip())
    if m is None:
        raise UserError(
            f"--run {text!r}: expected FAMILY/VARIANT/SET=PATH, e.g. gpt-4o/base/MFQ=run.csv"
        )
    where = f"--run {text!r}"
    return Entry(
        m["family"].strip(),
        m["variant"].strip(),
        set_kind(m["set"], where=where),
        Path(m["path"].strip()),
        where,
    )


def read_manifest(path: Path) -> list[Entry]:
    """Entries of a YAML manifest ``family: {variant: {SET: path}}``; paths are relative to
    the manifest's folder."""
    from pydantic import TypeAdapter, ValidationError

    from persona_collapse.core.errors import format_validation_error
    from persona_collapse.core.yamlio import load_yaml_mapping

    data = load_yaml_mapping(path, what="manifest")
    try:
        shape = TypeAdapter(dict[str, dict[str, dict[str, str]]]).validate_python(data)
    except ValidationError as exc:
        raise InputFileError(
            path,
            "expected family: {variant: {SET: path}}; " + format_validation_error(exc, what="key"),
        ) from None
    entries = []
    for family, variants in shape.items():
        for variant, sets in variants.items():
            for name, file in sets.items():
                where = f"{path}: {family}.{variant}.{name}"
                target = Path(file)
                if not target.is_absolute():
                    target = path.parent / target
                entries.append(Entry(family, variant, set_kind(name, where=where), target, where))
    return entries


def _model_label(path: Path) -> str:
    from persona_collapse.store.control_csv import run_label

    stem = path.stem
    for suffix in ("_self",):
        stem = stem.removesuffix(suffix)
    return run_label(stem)[0].lower()


def _named_family(path: Path, families: Sequence[str]) -> str | None:
    """The longest family of the comparison the file's name starts with, if any."""
    label = _model_label(path)
    hits = [
        f for f in families if label == f.lower() or re.match(re.escape(f.lower()) + r"[-_]", label)
    ]
    return max(hits, key=len) if hits else None


def check_entries(entries: Sequence[Entry], *, base: str) -> dict[str, dict[str, list[Entry]]]:
    """Group entries by family and variant (base first); one-line errors for a missing base,
    a set without a base file, a duplicate, or a file named for another family."""
    if not entries:
        raise UserError("no files: give a manifest or --run FAMILY/VARIANT/SET=PATH options")
    grouped: dict[str, dict[str, list[Entry]]] = {}
    seen: dict[tuple[str, str, str], Entry] = {}
    for e in entries:
        key = (e.family, e.variant, e.kind.name)
        if key in seen:
            raise UserError(
                f"{e.where}: {e.family}/{e.variant}/{e.kind.name} is given twice "
                f"(also {seen[key].where})"
            )
        seen[key] = e
        grouped.setdefault(e.family, {}).setdefault(e.variant, []).append(e)
    families = list(grouped)
    for family, variants in grouped.items():
        if base not in variants:
            raise UserError(
                f"family {family!r} has no base variant {base!r} (given: {', '.join(variants)}); "
                f"add {family}/{base}/SET=PATH or name the base with --base"
            )
        if len(variants) < 2:
            raise UserError(
                f"family {family!r} has only its base {base!r}; add a variant to compare"
            )
        base_sets = {e.kind.name: e for e in variants[base]}
        for variant, items in variants.items():
            for e in items:
                if e.kind.name not in base_sets:
                    raise UserError(
                        f"{e.where}: the base has no {e.kind.name} file; "
                        f"add {family}/{base}/{e.kind.name}=PATH"
                    )
                if variant != base and e.path.resolve() == base_sets[e.kind.name].path.resolve():
                    raise UserError(f"{e.where}: {e.path} is also the base's {e.kind.name} file")
                named = _named_family(e.path, families)
                if named is not None and named != family:
                    raise UserError(
                        f"{e.where}: {e.path.name} is named for family {named!r}, not {family!r}"
                    )
        grouped[family] = {base: variants[base], **{v: x for v, x in variants.items() if v != base}}
    return grouped


# --- reading one file as a cell set -----------------------------------------------------------


def _likert(entry: Entry) -> CellSet:
    import numpy as np

    from persona_collapse.core.instrument import bfi44, mfq30
    from persona_collapse.stats.instruments import likert_cells
    from persona_collapse.stats.sources import scored_item_ids
    from persona_collapse.store.reference_csv import read_rating_columns

    kind, path = entry.kind, entry.path
    inst = mfq30(include_catch=True) if kind.instrument == "MFQ" else bfi44()
    cols = read_rating_columns(path, instrument=inst)
    want = "persona" if kind.conditioning == "persona" else "self"
    if cols.kind != want:
        other = f"{kind.instrument}-self" if want == "persona" else kind.instrument
        raise InputFileError(
            path,
            f"is a {cols.kind}-mode ratings file, but {entry.where} names a {want}-mode one "
            f"(give it as {other})",
        )
    scored = np.fromiter(scored_item_ids(inst), dtype=np.int64)
    present = np.unique(cols.item_id)
    missing = np.setdiff1d(scored, present)
    if len(missing):
        raise InputFileError(
            path,
            f"holds {len(np.intersect1d(present, scored))} of {inst.name}'s {len(scored)} items "
            f"(none for item {int(missing[0])}); is it a file of another instrument?",
        )
    keep = np.isin(cols.item_id, scored) & (cols.rating >= inst.scale_min)
    if not keep.any():
        raise InputFileError(path, "no valid rating")
    return likert_cells(
        cols.item_id[keep],
        cols.rating[keep],
        persona_id=cols.persona_id[keep] if want == "persona" else None,
        instrument=kind.instrument,
        n_options=len(inst.scale),
    )


def _capability(entry: Entry) -> CellSet:
    import numpy as np

    from persona_collapse.core.controls import normalise_number, task_from_name
    from persona_collapse.stats.instruments import answer_cells
    from persona_collapse.store.control_csv import read_capability_csv

    kind, path = entry.kind, entry.path
    task = kind.name.lower()
    named = task_from_name(path.name)
    if named is not None and named != task:
        raise InputFileError(
            path, f"is named as a {named} file, but {entry.where} gives it as {kind.name}"
        )
    run = read_capability_csv(path, task=task)  # type: ignore[arg-type]
    valid = run.valid
    if not valid.any():
        raise InputFileError(path, "no row has a parsed answer")
    answers = run.answer[valid]
    if task == "mmlu":
        bad = ~np.isin(answers, ["A", "B", "C", "D"])
    else:
        bad = np.array([normalise_number(a) is None for a in answers], dtype=bool)
    if bad.any():
        row = int(np.flatnonzero(valid)[np.flatnonzero(bad)[0]])
        expected = "a letter A-D" if task == "mmlu" else "a number"
        raise InputFileError(
            path,
            f"column 'answer': data row {row + 1} (item {int(run.item_id[row])}) holds "
            f"{str(run.answer[row])!r}, not {expected} as {kind.name} answers are",
        )
    return answer_cells(
        run.item_id,
        run.answer,
        correct=run.correct,
        valid=valid,
        instrument=kind.instrument,
        n_options=kind.n_options,
    )


def _lookup(entry: Entry) -> CellSet:
    from persona_collapse.stats.instruments import answer_cells
    from persona_collapse.store.control_csv import read_lookup_csv

    run = read_lookup_csv(entry.path)
    ok = run.valid
    if not ok.any():
        raise InputFileError(entry.path, "no row has a parsed answer")
    return answer_cells(
        run.table_id,
        run.rating,
        correct=(ok & (run.rating == run.correct_id)).astype(float),
        valid=ok,
        instrument="lookup",
        n_options=6,
    )


def load_cell_set(entry: Entry) -> CellSet:
    """Read one file as the cell set its entry names, checking it is that kind of file."""
    from persona_collapse.store.control_csv import detect_control_kind

    path = entry.path
    if not path.is_file():
        raise InputFileError(path, f"no such file ({entry.where})")
    found = detect_control_kind(path)
    source = entry.kind.source
    if source == "likert" and found is not None:
        raise InputFileError(
            path, f"is a {found} CSV, not {entry.kind.instrument} ratings ({entry.where})"
        )
    if source != "likert" and found != source:
        what = f"a {found} CSV" if found else "not a capability or lookup CSV"
        raise InputFileError(path, f"is {what}, but {entry.where} names a {entry.kind.name} file")
    if source == "likert":
        return _likert(entry)
    return _capability(entry) if source == "capability" else _lookup(entry)


def compare_files(
    grouped: Mapping[str, Mapping[str, Sequence[Entry]]],
    *,
    base: str,
    measure: str,
    n_boot: int,
    scale: str = "relative",
    confidence: float,
    seed: int,
) -> list[FamilyComparison]:
    """The comparison of every family (each seeded from ``seed`` and its name)."""
    from persona_collapse.stats.controls import reference_seed
    from persona_collapse.stats.instruments import compare_instruments

    out = []
    for family, variants in grouped.items():
        runs = {
            variant: [
                load_cell_set(e)
                for e in sorted(entries, key=lambda e: _ROW_ORDER.index(e.kind.name))
            ]
            for variant, entries in variants.items()
        }
        try:
            out.append(
                compare_instruments(
                    runs,
                    family=family,
                    base=base,
                    measure=measure,
                    scale=scale,
                    n_boot=n_boot,
                    confidence=confidence,
                    rng=reference_seed(f"{family}|{seed}"),
                )
            )
        except ValueError as exc:
            raise UserError(f"family {family!r}: {exc}") from None
    return out


# --- output ---------------------------------------------------------------------------------


def _num(value: Any) -> Any:
    # Undefined values are empty, as in the reference; an infinite R (no cell varies) stays.
    return "" if isinstance(value, float) and math.isnan(value) else value


def _pct(value: float) -> str:
    return (
        f"{100 * value:+.0f} %"
        if math.isfinite(value)
        else ("+∞" if value == math.inf else MISSING)
    )


def _pp(value: float) -> str:
    return f"{100 * value:+.0f} pp" if math.isfinite(value) else MISSING


def _abs(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else MISSING


def _change(row: Mapping[str, Any], measure: str) -> str:
    point = row[f"{measure}_change"]
    if not math.isfinite(point):
        return ""
    lo, hi = row[f"{measure}_change_lo"], row[f"{measure}_change_hi"]
    return f" ({_pct(point)} [{_pct(lo)}, {_pct(hi)}])"


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else MISSING


def family_table(cmp: FamilyComparison) -> Table:
    """One family's sets side by side, with relative changes vs base and their intervals."""
    from rich.table import Table

    pct = round(100 * cmp.confidence)
    table = Table(
        title=f"{cmp.family}: instability by instrument (change vs {cmp.base_variant} "
        f"[{pct} % CI])",
        title_justify="left",
    )
    columns = ("variant", "set", "cells × reps", "non-unanimity", "Gini (norm.)", "R")
    for col in (*columns, "accuracy (valid)", "accuracy (all rows)"):
        table.add_column(col, justify="left" if col in ("variant", "set") else "right")
    for row in cmp.rows():
        label = row["instrument"] + (
            " (persona)"
            if row["conditioning"] == "persona"
            else " (self)"
            if row["instrument"] in _LIKERT
            else ""
        )
        table.add_row(
            row["variant"],
            label,
            f"{row['n_cells']} × {row['mean_reps']:.2f}",
            _fmt(row["non_unanimity_rate"]) + _change(row, "non_unanimity_rate"),
            _fmt(row["mean_gini_norm"], 4) + _change(row, "mean_gini_norm"),
            _fmt(row["R"]) + _change(row, "R"),
            _fmt(row["accuracy"]) + _delta(row, "accuracy_delta"),
            _fmt(row["accuracy_all"]) + _delta(row, "accuracy_all_delta"),
        )
    return table


def _delta(row: Mapping[str, Any], name: str) -> str:
    if not math.isfinite(row[name]):
        return ""
    return f" ({row[name]:+.3f} [{row[f'{name}_lo']:+.3f}, {row[f'{name}_hi']:+.3f}])"


def contrast_lines(cmp: FamilyComparison) -> list[str]:
    """One sentence per variant: persona vs non-persona change, their difference, and any
    significant accuracy drop."""
    lines = []
    for var in cmp.variants:
        drops = var.accuracy_drops
        fell = f"; accuracy fell significantly on {', '.join(drops)}" if drops else ""
        c = var.contrast
        if c is None:
            lines.append(
                f"{cmp.family} {var.variant}: no persona vs non-persona contrast (each side "
                f"needs a set with a defined change in {cmp.measure}){fell}"
            )
            continue
        fmt = _pct if c.scale == "relative" else _abs
        d = c.difference
        verdict = (
            "persona instability rose more"
            if d.significant and d.point > 0
            else "non-persona instability rose more"
            if d.significant
            else "no significant difference"
        )
        unit = _pp if c.scale == "relative" else _abs
        lines.append(
            f"{cmp.family} {var.variant}: {c.measure} changed {fmt(c.persona_change.point)} on "
            f"persona sets ({', '.join(c.persona_sets)}) vs {fmt(c.other_change.point)} on the "
            f"others ({', '.join(c.other_sets)}); difference {unit(d.point)} "
            f"[{unit(d.lo)}, {unit(d.hi)}]"
            + (f" (left out, change undefined: {', '.join(c.excluded)})" if c.excluded else "")
            + f": {verdict}{fell}"
        )
    return lines


def _csv_text(comparisons: Sequence[FamilyComparison]) -> str:
    # Family and variant names come from the user's files: neutralised like every CSV cell.
    from persona_collapse.core.csvio import neutralise_text
    from persona_collapse.stats.instruments import ROW_COLUMNS

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ROW_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for cmp in comparisons:
        for row in cmp.rows():
            writer.writerow(
                {k: neutralise_text(v) if isinstance(v, str) else _num(v) for k, v in row.items()}
            )
    return buf.getvalue()


@app.command(name="compare-instruments", rich_help_panel="Analyse")
def compare_instruments_command(
    manifest: Annotated[
        Path | None,
        typer.Argument(
            help="YAML manifest: family: {variant: {SET: path}} (paths relative to it)."
        ),
    ] = None,
    run: Annotated[
        list[str] | None,
        typer.Option(
            "--run",
            help="FAMILY/VARIANT/SET=PATH (repeatable). SET: MFQ, MFQ-self, BFI-44, "
            "BFI-44-self, MMLU, GSM8K or lookup.",
        ),
    ] = None,
    base: Annotated[str, typer.Option(help="Name of each family's base variant.")] = "base",
    measure: Annotated[
        str,
        typer.Option(
            help="Measure of the persona vs non-persona contrast: non_unanimity_rate, "
            "mean_gini or mean_gini_norm."
        ),
    ] = "non_unanimity_rate",
    scale: Annotated[
        str,
        typer.Option(help="Change in the contrast: relative ((v - b) / b) or absolute (v - b)."),
    ] = "relative",
    boot: Annotated[int, typer.Option(help="Bootstrap draws.", min=2)] = 2000,
    confidence: Annotated[float, typer.Option(help="Level of the intervals.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.", min=0)] = 1337,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """Instability of persona runs vs self-mode, capability and lookup runs, per family.

    Per set: non-unanimity, Gini (normalised by 1 - 1/k), R (Likert sets) and accuracy
    (capability), each variant's relative change vs the base with bootstrap intervals
    (personas or items resampled, shared within a family), and the contrast: mean change
    of the persona sets minus that of the others (--scale relative or absolute), with
    any significant accuracy drop (broad degradation).
    """
    from persona_collapse.stats.instruments import CONTRAST_MEASURES

    if fmt not in ("table", "json", "csv"):
        raise UserError(f"--format must be 'table', 'json' or 'csv', got {fmt!r}")
    if measure not in CONTRAST_MEASURES:
        raise UserError(f"--measure must be one of {', '.join(CONTRAST_MEASURES)}, got {measure!r}")
    if scale not in ("relative", "absolute"):
        raise UserError(f"--scale must be 'relative' or 'absolute', got {scale!r}")
    if not 0 < confidence < 1:
        raise UserError(f"--confidence must lie between 0 and 1, got {confidence}")
    entries = read_manifest(manifest) if manifest is not None else []
    entries += [parse_run_option(text) for text in run or []]
    grouped = check_entries(entries, base=base)
    comparisons = compare_files(
        grouped,
        base=base,
        measure=measure,
        scale=scale,
        n_boot=boot,
        confidence=confidence,
        seed=seed,
    )
    if fmt == "csv":
        sys.stdout.write(_csv_text(comparisons))
        return
    if fmt == "json":
        print_json(
            {
                "rows": [row for cmp in comparisons for row in cmp.rows()],
                "contrasts": [c for cmp in comparisons for c in cmp.contrasts()],
                "settings": {
                    "base": base,
                    "measure": measure,
                    "scale": scale,
                    "n_boot": boot,
                    "confidence": confidence,
                    "seed": seed,
                    "resampling": comparisons[0].resampling,
                    "change": "relative: (variant - base) / base; accuracy deltas: "
                    "variant - base (accuracy: valid answers; accuracy_all: every row)",
                },
            }
        )
        return
    console = stdout_console()
    for cmp in comparisons:
        console.print(family_table(cmp))
        for line in contrast_lines(cmp):
            console.print(line, markup=False, highlight=False)
