"""Progress of a collection: a callback, or a rich progress bar on stderr.

The engine reports after each request; :class:`Progress` keeps the counts (done,
failed, attempts, tokens, cost) and forwards them to a callback or a bar showing
``done/total``, failures, throughput, tokens and cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from persona_collapse.core.pricing import ModelPrices, estimate_cost, format_usage
from persona_collapse.core.types import Usage


@dataclass(frozen=True)
class ProgressUpdate:
    """Progress of a collection, passed to a progress callback after each request.

    Attributes:
        done: Units completed (slots; cells in exact mode), earlier sessions included.
        total: Units in the run.
        failed: Slots stored as ``INVALID_RATING`` in this session.
        attempts: Attempts recorded in this session.
        usage: Token usage of this session.
        cost_usd: Estimated cost of this session (None without prices).
    """

    done: int
    total: int
    failed: int
    attempts: int
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None


ProgressCallback = Callable[[ProgressUpdate], None]


class Progress:
    """Counts the session's progress and forwards it to a rich bar or a callback."""

    def __init__(
        self,
        *,
        total: int,
        done: int,
        unit: str,
        target: bool | ProgressCallback,
        label: str,
        prices: ModelPrices | None = None,
    ) -> None:
        self.total = total
        self.done = done
        self.failed = 0
        self.attempts = 0
        self.usage = Usage()
        self.prices = prices
        self._callback: ProgressCallback | None = None
        self._bar: Any = None
        self._task: Any = None
        if callable(target):
            self._callback = target
        elif target:
            self._bar, self._task = rich_bar(total=total, done=done, unit=unit, label=label)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    @property
    def cost_usd(self) -> float | None:
        return None if self.prices is None else estimate_cost(self.usage, self.prices)

    def advance(self, *, done: int, failed: int, attempts: int, usage: Usage | None = None) -> None:
        self.done += done
        self.failed += failed
        self.attempts += attempts
        if usage is not None:
            self.usage = self.usage + usage
        if self._bar is not None:
            self._bar.update(
                self._task,
                advance=done,
                failed=self.failed,
                usage=format_usage(self.usage, self.cost_usd),
            )
        if self._callback is not None:
            self._callback(
                ProgressUpdate(
                    self.done, self.total, self.failed, self.attempts, self.usage, self.cost_usd
                )
            )


def rich_bar(*, total: int, done: int, unit: str, label: str) -> tuple[Any, Any]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.speed
            return Text(
                "" if speed is None else f"{speed:,.0f} {unit}/s", style="progress.data.speed"
            )

    # The counts (``300/3000``) stay whole at any width: on a narrow terminal (80
    # columns) the label is shortened and the rate and token usage are left out.
    console = Console(stderr=True)
    narrow = console.width < 120

    def whole() -> Column:
        return Column(no_wrap=True)

    label_column = Column(no_wrap=True, overflow="ellipsis", max_width=24 if narrow else None)
    columns: list[ProgressColumn | str] = [
        TextColumn("[bold]{task.description}", table_column=label_column),
        BarColumn(bar_width=None if narrow else 40),
        MofNCompleteColumn(table_column=whole()),
        TextColumn("[red]{task.fields[failed]} failed", table_column=whole()),
    ]
    if not narrow:
        columns += [
            RateColumn(table_column=whole()),
            TextColumn("{task.fields[usage]}", table_column=whole()),
        ]
    columns += [TimeElapsedColumn(table_column=whole()), TimeRemainingColumn(table_column=whole())]
    bar = Progress(*columns, console=console)
    task = bar.add_task(label, total=total, completed=done, failed=0, usage="")
    return bar, task


__all__ = ["Progress", "ProgressCallback", "ProgressUpdate", "rich_bar"]
