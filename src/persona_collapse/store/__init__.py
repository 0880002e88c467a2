"""Run storage: reference CSV files and the run store.

:mod:`~persona_collapse.store.reference_csv` reads and writes ratings in the
reference study's CSV layout; :mod:`~persona_collapse.store.sqlite` holds runs,
attempts and answers in one SQLite file (:class:`RunStore`).
"""

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
