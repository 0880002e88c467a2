"""Fixtures of the report tests (helpers live in ``_report_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _report_helpers import write_hostile_study

from persona_collapse.core.config import AnalysisConfig
from persona_collapse.study import StudyOutcome, load_study, run_study


@pytest.fixture(scope="session")
def hostile_outcome(tmp_path_factory: pytest.TempPathFactory) -> StudyOutcome:
    """The hostile study, run once with figures."""
    path = write_hostile_study(tmp_path_factory.mktemp("hostile"))
    return run_study(load_study(path), progress=False)


@pytest.fixture(scope="session")
def reproduced_report(
    reference_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> StudyOutcome:
    """The paper's reference data through ``pcollapse reproduce``, with figures (few
    bootstrap draws: the page is what is checked, not the numbers)."""
    from persona_collapse.study.reproduce import reproduce

    out = tmp_path_factory.mktemp("reproduce-report")
    few = AnalysisConfig(n_persona_boot=40, n_rerun_boot=8)
    return reproduce(reference_dir, out, analysis=few, figures=True, force=True)
