"""Fixtures of the report tests (helpers live in ``_report_helpers``)."""

from __future__ import annotations

import pytest
from _report_helpers import write_hostile_study

from persona_collapse.study import StudyOutcome, load_study, run_study


@pytest.fixture(scope="session")
def hostile_outcome(tmp_path_factory: pytest.TempPathFactory) -> StudyOutcome:
    """The hostile study, run once with figures."""
    path = write_hostile_study(tmp_path_factory.mktemp("hostile"))
    return run_study(load_study(path), progress=False)
