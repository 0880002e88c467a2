"""The Typer application and helpers shared by the command modules."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.control import strip_control_codes
from rich.measure import Measurement
from rich.padding import Padding
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from persona_collapse.core.errors import BackendError, UserError
from persona_collapse.core.formatting import fmt_pct, fmt_pm, json_safe

if TYPE_CHECKING:  # imported where used, so help screens stay fast
    from rich.console import Group

    from persona_collapse.engine.protocol import ProtocolCheck
    from persona_collapse.stats.compare import FamilyComparison
    from persona_collapse.stats.metrics import RunMetrics, SelfProfile
    from persona_collapse.stats.registry import Estimate
    from persona_collapse.stats.sources import Completeness


app = typer.Typer(
    name="pcollapse",
    help="Measure persona-model collapse: moral susceptibility (S) and robustness (R).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_help(ctx: typer.Context, _param: object, value: bool) -> None:
    if value:
        ctx.get_help()  # Typer's rich formatter prints the help screen itself
        raise typer.Exit()


def keep_option_names_whole() -> None:
    """Make Typer's help tables keep every option name whole at any terminal width.

    Typer fills its options table without column settings, so on a narrow terminal
    rich shrinks every column alike and cuts long names (``--alignment-thre…``).
    Here every column but the last two (value type, help text) never wraps: rich
    then takes the room from the type and help columns, which wrap; a word too
    long for the help column folds instead of being cut.

    The table is swapped only when a help screen is about to be rendered (Typer's
    ``format_help``, which every help path goes through: ``--help``, no arguments,
    a group without its subcommand): the swap imports ``typer.rich_utils`` and with
    it rich's markdown and traceback modules, ~0.07 s CPU that a command run such
    as ``pcollapse metrics FILES`` never needs.
    """
    from typer.core import TyperCommand, TyperGroup

    for cls in (TyperCommand, TyperGroup):
        if getattr(cls.format_help, "keeps_names_whole", False):
            continue
        cls.format_help = _whole_names_first(cls.format_help)  # type: ignore[method-assign]


def _whole_names_first(format_help: Callable[..., None]) -> Callable[..., None]:
    """``format_help`` that first swaps in the help table keeping names whole."""

    @functools.wraps(format_help)
    def wrapper(self: Any, ctx: Any, formatter: Any) -> None:
        _use_whole_names_help_table()
        format_help(self, ctx, formatter)

    wrapper.keeps_names_whole = True  # type: ignore[attr-defined]
    return wrapper


def _use_whole_names_help_table() -> None:
    """Typer's help tables, from now on: option names never wrap, help text folds."""
    import typer.rich_utils as rich_utils
    from rich.table import Table as RichTable

    if getattr(rich_utils.Table, "keeps_names_whole", False):
        return

    class HelpTable(RichTable):
        keeps_names_whole = True

        def add_row(self, *renderables: Any, **options: Any) -> None:
            super().add_row(*renderables, **options)
            if len(self.columns) > 2:
                for column in self.columns[:-2]:
                    column.no_wrap = True
            if self.columns:
                self.columns[-1].overflow = "fold"
            # The help text comes as rich Columns of Text parts, rendered in a grid of
            # its own that would cut a long word (a file name) rather than fold it.
            for part in getattr(renderables[-1], "renderables", ()) if renderables else ():
                if isinstance(part, Text) and part.overflow is None:
                    part.overflow = "fold"

    rich_utils.Table = HelpTable  # type: ignore[misc]


HelpOpt = Annotated[
    bool,
    typer.Option(
        "--help",
        is_eager=True,
        expose_value=False,
        callback=_show_help,
        help="Show this message and exit.",
    ),
]
"""A group's --help as a plain bool flag (use with ``add_help_option=False``): in Typer
0.29 the built-in one builds a pydantic adapter for its unset value on every subcommand
call, which doubled the CPU cost of ``pcollapse CMD --help`` (bench/startup_bench.py)."""

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
PreflightOpt = Annotated[
    bool | None,
    typer.Option(
        "--preflight/--no-preflight",
        help="First ask each endpoint and model once (reachable, key, model, n, logprobs, "
        "temperature) and stop on problems before collecting anything. On by default; "
        "with --dry-run off by default (on: the forecast counts what the endpoint supports).",
        show_default=False,
    ),
]


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn Ctrl-C or SIGTERM into one short message and exit status 130 (143 for SIGTERM);
    collected answers are kept.

    SIGTERM is handled as Ctrl-C: it calls the SIGINT handler in place (or interrupts
    directly where SIGINT is ignored), so a running collection stops the same orderly
    way (its run is marked interrupted) and says the same thing.
    """
    terminated: list[int] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        terminated.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            # asyncio.run's handler (cancels the main task) or Python's default one.
            handler(signal.SIGINT, frame)
        else:
            # SIGINT is ignored, as in a background job of a non-interactive shell:
            # re-raising it would do nothing, so interrupt directly.
            raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_term) if main_thread else None
    try:
        yield
    except KeyboardInterrupt:
        Console(stderr=True).print(
            "interrupted: everything collected so far is stored; run the same command to resume"
        )
        raise typer.Exit(143 if terminated else 130) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def backend_failure(exc: BackendError) -> int:
    """Print a backend failure once (one line); its exit status.

    1: transient (the engine ran out of retries), so running again may resume;
    2: a cause to fix first (refused key, unknown model), never advised to rerun.
    """
    message = str(exc)
    if exc.resumable and "resume" not in message:
        message += " (answers collected so far are stored; run again to resume)"
    Console(stderr=True, soft_wrap=True, highlight=False).print(f"error: {message}", markup=False)
    return 1 if exc.resumable else 2


def single_threaded_blas() -> None:
    """Ask OpenBLAS for one thread, unless numpy is loaded already or the user chose.

    The statistics do their matrix products in blocks small enough for one thread;
    OpenBLAS's default pool starts a thread per core when numpy is imported, and
    those threads spin between products: CPU time spent on nothing (0.02-0.07 s of
    importing numpy alone on a 2-core machine, depending on its load).
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def keep_freed_memory() -> None:
    """Let glibc's malloc keep freed memory for reuse for the rest of this process.

    By default it maps each numpy temporary of a few MB afresh and hands it back when
    freed, so every reuse faults its pages in again: two thirds of the page faults and
    half the system time of ``pcollapse metrics`` (bench/metrics_bench.py). Setting
    both thresholds (the trim threshold alone turns the adaptive mapping threshold
    off) keeps allocations below 32 MB on the heap. For short commands only: memory
    is returned at exit, not before. A no-op where the C library has no ``mallopt``.
    """
    import ctypes  # numpy imports it anyway

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no C library handle, or no mallopt
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 128 << 20)


def stdout_console() -> Console:
    # Piped output gets a wide console so tables are not folded into unreadable cells.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def check_format(fmt: str) -> OutputFormat:
    if fmt not in ("table", "json"):
        raise UserError(f"--format must be 'table' or 'json', got {fmt!r}")
    return "table" if fmt == "table" else "json"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(json_safe(data), indent=2, ensure_ascii=False) + "\n")


_ONE_SEGMENT = ("left", "right")


class PlainCell:
    """A table cell of plain text (never markup) that renders exactly as ``Text(text)``,
    with less work where the text fits its column on one line (every cell of the
    metrics tables on a 160-column console).

    Rich renders a ``Text`` cell by wrapping it into lines, justifying them and joining
    them again: ~40 % of the time of printing the metrics tables (1400 cells) with Text
    cells. A text that fits needs none of that; it becomes one segment padded to the
    column width, the segment ``Text`` would yield. Anything else (a narrow column, a
    tab, a line break, another justification) is left to ``Text`` itself.
    """

    __slots__ = ("_fast", "_one_line", "_text", "_width")

    def __init__(self, text: str) -> None:
        # No line break or tab (control characters and line separators are not printable).
        self._one_line = text.isprintable()
        # Control codes stripped as Text does (a printable text has none).
        self._text = text if self._one_line else strip_control_codes(text)
        self._one_line = self._one_line or self._text.isprintable()
        self._width = cell_len(self._text)
        # Text would strip a trailing space (right-justified) and expand tabs.
        self._fast = self._one_line and not self._text[-1:].isspace()

    @property
    def width(self) -> int:
        """Cells of the widest line (the maximum of the measurement)."""
        return self._width if self._one_line else self._measure()[1]

    def fits(self, options: ConsoleOptions) -> bool:
        """Whether this renders as one segment with ``options``."""
        return self._fast and self._width <= options.max_width and options.justify in _ONE_SEGMENT

    def line(self, options: ConsoleOptions) -> list[Segment]:
        """The one segment, padded to the width (for ``options`` that :meth:`fits`)."""
        pad = " " * (options.max_width - self._width)
        return [Segment(self._text + pad if options.justify == "left" else pad + self._text)]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.fits(options):
            yield from self.line(options)
            yield Segment("\n")  # Text's end
        else:
            yield Text(self._text)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(*self._measure())

    def _measure(self) -> tuple[int, int]:
        """Text's measurement: the widest word and the widest line."""
        if self._one_line:
            widest = self._width
        else:
            lines = self._text.splitlines()
            widest = max(map(cell_len, lines)) if lines else 0
        words = self._text.split()
        return (max(map(cell_len, words)) if words else widest), widest


class _PaddedCell:
    """A cell with one space either side: the segments of ``Padding(cell, (0, 1))``."""

    __slots__ = ("_cell",)

    def __init__(self, cell: RenderableType) -> None:
        self._cell = cell

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        cell = self._cell
        inner = options.update_width(options.max_width - 2)
        if isinstance(cell, PlainCell) and cell.fits(inner):
            style = console.get_style("none")  # Padding's default style
            line = cell.line(inner)
            space = Segment(" ", style)
            yield space
            yield from Segment.apply_style(line, style) if style else line
            yield space
            yield Segment.line()
        else:
            yield Padding(cell, (0, 1))


class PlainTable(Table):
    """A rich ``Table`` of :class:`PlainCell` cells that prints exactly as ``Table``, with
    less work where the table fits its console at natural widths.

    Rich measures each cell (through its padding) to size the columns, and renders each
    cell inside a ``Padding``: ~40 % of the time of printing the metrics tables once the
    cells are plain. The natural width of a column is its widest cell, which a
    plain cell knows; when those widths fit, they are the widths rich would choose, so
    a copy of the table gets them as fixed widths (rich then measures no cell) and
    cells that yield the segments of their padding themselves. Otherwise (a narrow
    console, other cells, settings that size columns differently) rich sizes and pads
    the columns itself, as always.
    """

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        widths = self._natural_widths(console, options)
        if widths is None:
            yield from super().__rich_console__(console, options)
            return
        # The copy pads its cells itself: each plain cell yields the segments that
        # rich's Padding around it would (one renderable and one line split fewer).
        # ``_cells`` is the field of rich's Column dataclass holding its cells.
        table = copy.copy(self)
        table.padding = 0
        try:
            table.columns = [
                dataclasses.replace(
                    column,
                    width=width + 2,
                    header=Padding(column.header, (0, 1)),
                    _cells=[_PaddedCell(cell) for cell in column.cells],
                )
                for column, width in zip(self.columns, widths, strict=True)
            ]
        except (TypeError, AttributeError):  # a rich whose Column has other fields
            yield from super().__rich_console__(console, options)
            return
        yield from Table.__rich_console__(table, console, options)

    def _natural_widths(self, console: Console, options: ConsoleOptions) -> list[int] | None:
        """Each column's content width when the table fits at those widths, else None."""
        if (
            self.width is not None
            or self.expand
            or self.min_width is not None
            or self.show_footer
            or self.padding != (0, 1, 0, 1)
            or not self.pad_edge
            or self.collapse_padding
        ):
            return None
        # As Table sizes its columns: within the console width less the borders.
        extra = getattr(self, "_extra_width", None)  # rich's own (private) border width
        if not isinstance(extra, int):
            return None
        inner = options.update_width(options.max_width - extra)
        widths = []
        for column in self.columns:
            given = list(column.cells)
            cells = [cell for cell in given if isinstance(cell, PlainCell)]
            if (
                column.width is not None
                or column.min_width is not None
                or column.max_width is not None
                or column.ratio is not None
                or len(cells) != len(given)
            ):
                return None
            header = (
                Measurement.get(console, inner, column.header).maximum if self.show_header else 0
            )
            widths.append(max([header, *(cell.width for cell in cells)]))
        padding = 2  # one space either side of every cell (the checks above)
        if sum(widths) + padding * len(widths) > inner.max_width:
            return None
        return widths


def metrics_table(
    rows: Mapping[str, RunMetrics],
    *,
    per_foundation: bool,
    band: tuple[float, float],
    coverage: Mapping[str, Completeness] | None = None,
    checks: Mapping[str, ProtocolCheck | None] | None = None,
    corrected: Mapping[str, Mapping[str, Any]] | None = None,
) -> Group:
    """Every registered statistic per run, in two tables: the persona statistics (with
    slot coverage when given; runs whose model does not follow the protocol are marked †)
    and the scale-free instability and rating-distribution statistics.

    ``corrected`` (run -> :func:`~persona_collapse.stats.significance.corrected_fields`)
    adds the bias-corrected S and R beside the paper's, and the S band then follows the
    corrected S."""
    from rich.console import Group

    from persona_collapse.core.band import check_band
    from persona_collapse.stats.registry import statistics

    persona = [st for st in statistics() if st.group == "persona"]
    others = [st for st in statistics() if st.group != "persona"]

    failing = {n: c for n, c in (checks or {}).items() if c is not None and not c.follows}
    notes = [f"† {c.message(n)}" for n, c in failing.items()]
    corr = {n: v for n, v in (corrected or {}).items() if "S_corrected" in v}
    if corr:
        notes.append(
            "S, R, σ̄: the paper's estimates; S corr., R corr.: bias-corrected (± jackknife "
            "SE), which the S band follows. " + next(iter(corr.values()))["estimates_explanation"]
        )
    caption = "\n".join(notes) or None
    table = PlainTable(
        title="Susceptibility and robustness",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    columns = ["run", *(st.label for st in persona)]
    if corr:
        columns += ["S corr.", "R corr."]
    columns += ["personas", "items", "S band"]
    if coverage is not None:
        columns.append("slots")
    for col in columns:
        table.add_column(col, justify="left" if col == "run" else "right")
    digits = {st.name: st.digits for st in persona}

    def corrected_cells(fields: Mapping[str, Any] | None) -> list[str]:
        if not corr:
            return []
        if not fields:
            return ["—", "—"]
        return [
            fmt_pm(fields[f"{k}_corrected"], fields[f"{k}_corrected_se"], digits.get(k, 3))
            for k in ("S", "R")
        ]

    blank = PlainCell("")
    for name, m in rows.items():
        fields = corr.get(name)
        band_check = check_band(m.S if fields is None else fields["S_corrected"], band)
        extra: list[str] = []
        if coverage is not None:
            c = coverage[name]
            extra.append(f"{c.slots}/{c.planned}" + ("" if c.complete else " incomplete"))
        # Cells as PlainCell: plain text (a run name is never read as markup), and Rich
        # renders them faster than strings or Text (bench/metrics_bench.py).
        table.add_row(
            *map(
                PlainCell,
                (
                    f"{name} † not interpretable" if name in failing else name,
                    *(_fmt_estimate(m.estimate(st.name), st.digits) for st in persona),
                    *corrected_cells(fields),
                    str(m.personas),
                    str(m.questions),
                    "in"
                    if band_check.inside
                    else ("above" if band_check.high < band_check.value else "below"),
                    *extra,
                ),
            )
        )
        if per_foundation:
            by_group = (fields or {}).get("corrected_by_foundation", {})
            for foundation, fm in m.per_foundation.items():
                cells = [
                    PlainCell(f"  {foundation}"),
                    *(PlainCell(_fmt_estimate(fm.estimate(st.name), st.digits)) for st in persona),
                    *map(PlainCell, corrected_cells(by_group.get(foundation))),
                ]
                # Blank cells given, not left to the table: it would render a string
                # (markup parsing) for each.
                table.add_row(*cells, *(blank for _ in range(len(columns) - len(cells))))
    if not others:
        return Group(table)
    # A second table, so that neither is too wide for a terminal.
    instability = PlainTable(
        title="Scale-free instability and rating distribution",
        title_justify="left",
    )
    for col in ["run", *(st.label for st in others)]:
        instability.add_column(col, justify="left" if col == "run" else "right")
    for name, m in rows.items():
        instability.add_row(
            PlainCell(name),
            *(PlainCell(_fmt_estimate(m.estimate(st.name), st.digits)) for st in others),
        )
        if per_foundation:
            for foundation, fm in m.per_foundation.items():
                instability.add_row(
                    PlainCell(f"  {foundation}"),
                    *(PlainCell(_fmt_estimate(fm.estimate(st.name), st.digits)) for st in others),
                )
    return Group(table, instability)


def metrics_json(
    name: str,
    source: str,
    m: RunMetrics,
    *,
    per_foundation: bool,
    check: ProtocolCheck | None = None,
) -> dict[str, Any]:
    """JSON of one run's metrics; ``protocol`` holds the answer-protocol verdict when known."""
    data: dict[str, Any] = {"name": name, "source": source, **m.to_dict()}
    if check is not None:
        data["protocol"] = check.to_dict()
        data["interpretable"] = check.follows
    if not per_foundation:
        data.pop("per_foundation", None)
    return data


def _fmt_estimate(estimate: Estimate, digits: int) -> str:
    return fmt_pm(estimate.value, estimate.se, digits)


def comparison_table(cmp: FamilyComparison, base: str) -> Table:
    """Relative change of every registered statistic, per variant and for the excess."""
    from persona_collapse.stats.display import fmt_change, is_difference
    from persona_collapse.stats.registry import statistics

    stats = statistics()
    table = Table(title=f"Relative change against {base!r}", title_justify="left")
    for col in ("variant", *(f"Δ{st.label}" for st in stats)):
        table.add_column(col, justify="left" if col == "variant" else "right")
    rows = [(label, change.overall) for label, change in cmp.variants.items()]
    if cmp.excess is not None:
        rows.append((f"excess ({cmp.treatment} − {cmp.control})", cmp.excess.overall))
    for label, change in rows:
        table.add_row(
            label,
            *(
                fmt_change(st.name, value) if is_difference(st.name) else fmt_pct(value)
                for st in stats
                for value in (change.values.get(st.name),)
            ),
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
