"""Cells and tables of the metrics tables print exactly as rich's Text and Table at any
width (issue 11)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.theme import Theme

from persona_collapse.cli._app import PlainCell, PlainTable

TEXTS = [
    "",
    "run",
    "  Care",
    "0.123 ± 0.004",
    "gpt-4.1-misaligned † not interpretable",
    "σ̄ corr.",
    "宽字符 run",
    "trailing space ",
    "tab\there",
    "two\nlines",
    "[bold]not markup[/bold]",
    "bell\x07stripped",
]


def _print(renderable: object, width: int, *, color: bool, theme: Theme | None = None) -> str:
    console = Console(
        file=io.StringIO(),
        width=width,
        soft_wrap=True,
        force_terminal=color,
        color_system="truecolor",
        theme=theme,
    )
    console.print(renderable)
    out = console.file.getvalue()
    assert isinstance(out, str)
    return out


@pytest.mark.parametrize("width", [1, 3, 6, 12, 40])
@pytest.mark.parametrize("justify", ["left", "right", "center", "full", None])
def test_a_cell_prints_as_text(width: int, justify: str | None) -> None:
    for text in TEXTS:
        for color in (False, True):
            console = Console(file=io.StringIO(), width=width, force_terminal=color)
            options = console.options.update(justify=justify)  # type: ignore[arg-type]
            cell = list(console.render(PlainCell(text), options))
            expected = list(console.render(Text(text), options))
            assert cell == expected, (text, width, justify)
            assert console.measure(PlainCell(text)) == console.measure(Text(text)), text


def _table(cell: type, table_type: type[Table] = Table, **settings: object) -> Table:
    table = table_type(title="t", caption="a caption long enough to wrap somewhere", **settings)
    table.add_column("run", justify="left")
    table.add_column("[bold]S[/bold] band", justify="right", header_style="bold")
    table.add_column("R", justify="right", style="green")
    for i, text in enumerate(TEXTS):
        table.add_row(cell(text), cell(f"{i}.{i} ± 0.1"), cell(TEXTS[-1 - i]))
    table.add_row(cell("short"), cell(""), cell(""))
    return table


@pytest.mark.parametrize("width", [12, 30, 50, 60, 80, 160])
@pytest.mark.parametrize(
    "settings",
    [{}, {"style": "red"}, {"show_header": False}, {"padding": (0, 2)}, {"width": 70}],
    ids=["default", "style", "no-header", "padding", "width"],
)
def test_a_table_of_cells_prints_as_a_table_of_text(
    width: int, settings: dict[str, object]
) -> None:
    # A theme that styles padding ("none") shows a cell's padding styled as rich's.
    for color, theme in ((False, None), (True, None), (True, Theme({"none": "on blue"}))):
        expected = _print(_table(Text, **settings), width, color=color, theme=theme)
        for cell, table in ((PlainCell, Table), (PlainCell, PlainTable)):
            assert _print(_table(cell, table, **settings), width, color=color, theme=theme) == (
                expected
            )


def test_a_plain_table_that_fits_measures_no_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _table(PlainCell, PlainTable)
    wide = _print(table, 160, color=False)
    assert _print(table, 20, color=False) == _print(_table(Text), 20, color=False) != wide

    def measured(*_args: object) -> None:
        raise AssertionError("a cell was measured")

    monkeypatch.setattr(PlainCell, "__rich_measure__", measured)
    assert _print(table, 160, color=False) == wide  # and its own columns were left unchanged
    with pytest.raises(AssertionError, match="measured"):
        _print(table, 20, color=False)
