"""Studies: several model families, each in several variants, measured under one protocol.

* :mod:`~persona_collapse.study.spec`: the study file (YAML, validated).
* :mod:`~persona_collapse.study.orchestrate`: collecting every run a study needs
  into one run store (resumable) and its progress.
* :mod:`~persona_collapse.study.analysis`: from the store to report results.
* :mod:`~persona_collapse.study.pipeline`: collect, analyse, write the outputs.
* :mod:`~persona_collapse.study.reproduce`: a folder laid out like the paper's
  public data as an imported study.
* :mod:`~persona_collapse.study.demo`: the simulator study behind ``pcollapse demo``.
* :mod:`~persona_collapse.study.runs`: one model's persona and self runs from a
  :class:`~persona_collapse.core.config.RunConfig` (``pcollapse run``).
"""

from persona_collapse.study.analysis import analyse_study
from persona_collapse.study.demo import demo_study, run_demo
from persona_collapse.study.loading import LoadedStudy, load_study, study_from_mapping
from persona_collapse.study.orchestrate import (
    PlannedRun,
    RunProgress,
    StudyCollection,
    collect_study,
    study_status,
)
from persona_collapse.study.pipeline import StudyOutcome, report_study, run_study
from persona_collapse.study.reproduce import reproduce, reproduce_study
from persona_collapse.study.runs import RunOutcome, default_backend, execute_run
from persona_collapse.study.spec import StudyConfig

__all__ = [
    "LoadedStudy",
    "PlannedRun",
    "RunOutcome",
    "RunProgress",
    "StudyCollection",
    "StudyConfig",
    "StudyOutcome",
    "analyse_study",
    "collect_study",
    "default_backend",
    "demo_study",
    "execute_run",
    "load_study",
    "report_study",
    "reproduce",
    "reproduce_study",
    "run_demo",
    "run_study",
    "study_from_mapping",
    "study_status",
]
