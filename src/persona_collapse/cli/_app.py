"""The Typer application and helpers shared by the command modules."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from persona_collapse.compare import FamilyComparison, check_band
from persona_collapse.errors import UserError
from persona_collapse.metrics import RunMetrics, SelfProfile

app = typer.Typer(
    name="pcollapse",
    help="Measure persona-model collapse: moral susceptibility (S) and robustness (R).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OutputFormat = Literal["table", "json"]
Paths = Annotated[
    list[Path],
    typer.Argument(help="Reference-layout CSV files, folders of them, or run stores (.db)."),
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="Output: 'table' or 'json'.")]
RunOpt = Annotated[
    list[str] | None, typer.Option("--run", help="Only these runs of a store (repeatable).")
]
PersonaBootOpt = Annotated[int, typer.Option(help="Persona-bootstrap draws.", min=1)]
RerunBootOpt = Annotated[int, typer.Option(help="Rerun-bootstrap draws.", min=1)]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Write into an output folder holding files pcollapse did not write "
        "(they are never replaced).",
    ),
]
AllowOutsideOpt = Annotated[
    bool,
    typer.Option(
        "--allow-outside",
        help="Let the study or config file name paths outside its own folder (absolute, '..').",
    ),
]
SeedOpt = Annotated[int, typer.Option(help="Seed of the bootstrap draws.", min=0)]


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn Ctrl-C into a short message and exit status 130 (collected answers are kept)."""
    try:
        yield
    except KeyboardInterrupt:
        Console(stderr=True).print(
            "interrupted: everything collected so far is stored; run the same command to resume"
        )
        raise typer.Exit(130) from None


def stdout_console() -> Console:
    # Piped output gets a wide console so tables are not folded into unreadable cells.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def check_format(fmt: str) -> OutputFormat:
    if fmt not in ("table", "json"):
        raise UserError(f"--format must be 'table' or 'json', got {fmt!r}")
    return "table" if fmt == "table" else "json"


def json_safe(value: Any) -> Any:
    """JSON has no inf/NaN: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(json_safe(data), indent=2, ensure_ascii=False) + "\n")


def fmt_pm(value: float, se: float | None = None, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "—"
    text = f"{value:.{digits}f}"
    return text if se is None or not math.isfinite(se) else f"{text} ± {se:.{digits}f}"


def fmt_pct(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{100 * value:+.1f} %"


def metrics_table(
    rows: Mapping[str, RunMetrics], *, per_foundation: bool, band: tuple[float, float]
) -> Table:
    table = Table(title="Moral susceptibility and robustness", title_justify="left")
    for col in ("run", "S", "R", "σ̄", "personas", "items", "S band"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for name, m in rows.items():
        band_check = check_band(m.S, band)
        table.add_row(
            name,
            fmt_pm(m.S, m.S_se),
            fmt_pm(m.R, m.R_se, 2),
            fmt_pm(m.sigma_bar, m.sigma_bar_se),
            str(m.personas),
            str(m.questions),
            "in" if band_check.inside else ("above" if band_check.high < m.S else "below"),
        )
        if per_foundation:
            for foundation, fm in m.per_foundation.items():
                table.add_row(
                    f"  {foundation}",
                    fmt_pm(fm.S, fm.S_se),
                    fmt_pm(fm.R, fm.R_se, 2),
                    fmt_pm(fm.sigma_bar, fm.sigma_bar_se),
                    "",
                    "",
                    "",
                )
    return table


def metrics_json(name: str, source: str, m: RunMetrics, *, per_foundation: bool) -> dict[str, Any]:
    data = {"name": name, "source": source, **m.to_dict()}
    if not per_foundation:
        data.pop("per_foundation", None)
    return data


def comparison_table(cmp: FamilyComparison, base: str) -> Table:
    table = Table(title=f"Relative change against {base!r}", title_justify="left")
    for col in ("variant", "ΔS", "ΔR", "Δσ̄"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for label, change in cmp.variants.items():
        o = change.overall
        table.add_row(label, fmt_pct(o.S), fmt_pct(o.R), fmt_pct(o.sigma_bar))
    if cmp.excess is not None:
        o = cmp.excess.overall
        table.add_row(
            f"excess ({cmp.treatment} − {cmp.control})",
            fmt_pct(o.S),
            fmt_pct(o.R),
            fmt_pct(o.sigma_bar),
        )
    return table


def profile_table(profiles: Mapping[str, SelfProfile]) -> Table:
    table = Table(title="Self-profiles (mean ± sd per foundation)", title_justify="left")
    foundations: list[str] = []
    for p in profiles.values():
        foundations.extend(f for f in p.mean if f not in foundations)
    table.add_column("run")
    for f in foundations:
        table.add_column(f, justify="right")
    for name, p in profiles.items():
        table.add_row(
            name,
            *(fmt_pm(p.mean[f], p.sd[f], 2) if f in p.mean else "—" for f in foundations),
        )
    return table
