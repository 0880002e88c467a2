"""The collection progress bar keeps its counts readable on a narrow terminal (issue 10.13)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from persona_collapse.core.pricing import format_usage
from persona_collapse.core.types import Usage
from persona_collapse.engine.progress import rich_bar


def _rendered(width: int, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    bar, task = rich_bar(
        total=3000, done=300, unit="slots", label="a-long-family-name/insecure/toxic"
    )
    usage = format_usage(Usage(prompt_tokens=1_234_567, completion_tokens=45_678), 12.35)
    bar.update(task, failed=12, usage=usage)
    out = io.StringIO()
    Console(file=out, width=width).print(bar.make_tasks_table(bar.tasks))
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 100, 200])
def test_counts_stay_whole(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _rendered(width, monkeypatch)
    assert len(text.splitlines()) == 1, text  # one line, nothing folded
    assert "300/3000" in text
    assert "12 failed" in text


def test_a_wide_terminal_also_shows_tokens_and_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _rendered(200, monkeypatch)
    assert "a-long-family-name/insecure/toxic" in text
    assert "$12.35" in text
