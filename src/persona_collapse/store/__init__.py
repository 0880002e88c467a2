"""Run storage: reference CSV files and the run store.

:mod:`~persona_collapse.store.reference_csv` reads and writes ratings in the
reference study's CSV layout; :mod:`~persona_collapse.store.sqlite` holds runs,
attempts and answers in one SQLite file (:class:`RunStore`).

Names are imported on first use, so reading a CSV file for metrics does not
load the run store (and pandas with it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from persona_collapse.store.reference_csv import (
        iter_csv_files,
        read_ratings_csv,
        write_ratings_csv,
    )
    from persona_collapse.store.sqlite import (
        SCHEMA_VERSION,
        AcceptedSlot,
        AttemptRecord,
        CellProgress,
        DistributionRecord,
        RecordResult,
        RunCounts,
        RunRecord,
        RunSpec,
        RunStore,
        persona_set_hash,
    )

_CSV = "persona_collapse.store.reference_csv"
_SQLITE = "persona_collapse.store.sqlite"
_LAZY: dict[str, str] = {
    "iter_csv_files": _CSV,
    "read_ratings_csv": _CSV,
    "write_ratings_csv": _CSV,
    "SCHEMA_VERSION": _SQLITE,
    "AcceptedSlot": _SQLITE,
    "AttemptRecord": _SQLITE,
    "CellProgress": _SQLITE,
    "DistributionRecord": _SQLITE,
    "RecordResult": _SQLITE,
    "RunCounts": _SQLITE,
    "RunRecord": _SQLITE,
    "RunSpec": _SQLITE,
    "RunStore": _SQLITE,
    "persona_set_hash": _SQLITE,
}

__all__ = [
    "SCHEMA_VERSION",
    "AcceptedSlot",
    "AttemptRecord",
    "CellProgress",
    "DistributionRecord",
    "RecordResult",
    "RunCounts",
    "RunRecord",
    "RunSpec",
    "RunStore",
    "iter_csv_files",
    "persona_set_hash",
    "read_ratings_csv",
    "write_ratings_csv",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
