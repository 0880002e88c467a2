"""A study from file to report: collect (resumably), analyse, write the outputs."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persona_collapse.core.files import claim_output_dir
from persona_collapse.report import ReportFiles, StudyResults, write_report
from persona_collapse.study.analysis import analyse_study
from persona_collapse.study.cache import cached_results
from persona_collapse.study.checkpoints import (
    collect_checkpoints,
    study_trajectories,
    write_trajectory_outputs,
)
from persona_collapse.study.controls import (
    analyse_controls,
    collect_study_controls,
    write_controls_outputs,
)
from persona_collapse.study.loading import LoadedStudy
from persona_collapse.study.orchestrate import BackendBuilder, StudyCollection, collect_study

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyOutcome:
    """What running or reporting a study produced.

    Attributes:
        study: The study.
        results: Its results.
        files: The files written.
        collection: This session's collection (None for a report from the store alone).
    """

    study: LoadedStudy
    results: StudyResults
    files: ReportFiles
    collection: StudyCollection | None = None

    @property
    def output_dir(self) -> Path:
        """The output folder."""
        return self.study.config.output_dir


_DB_SUFFIXES = ("", "-wal", "-shm", "-journal")


def claim_study_output(
    study: LoadedStudy, output_dir: str | Path | None = None, *, force: bool = False
) -> Path:
    """Claim a study's output folder (see :func:`~persona_collapse.core.files.claim_output_dir`).

    Besides the files listed in its manifest, the folder may hold what a study
    keeps there without the atomic writers: the study file, the run store and
    verification store, and the fine-tuning folder.

    Raises:
        InputFileError: The path is a file, or the folder holds other files (no ``force``).
    """
    from persona_collapse.study.verification import VERIFY_STORE

    out = Path(output_dir) if output_dir is not None else study.config.output_dir
    keep = {"finetune", Path(study.source).name}
    for db in (study.config.store_path.name, VERIFY_STORE, "controls.db"):
        keep.update(db + suffix for suffix in _DB_SUFFIXES)
    return claim_output_dir(out, force=force, keep=keep)


def report_study(
    study: LoadedStudy,
    *,
    output_dir: str | Path | None = None,
    figures: bool = True,
    significance: Sequence[Mapping[str, Any]] | None = None,
    force: bool = False,
) -> StudyOutcome:
    """Re-render a study's outputs from its run store, without any model call.

    Args:
        study: The loaded study.
        output_dir: Where to write (default: the study's output folder).
        figures: Draw figures (needs matplotlib).
        significance: Difference-test rows to include in the report.
        force: Write into an output folder holding files this tool did not write.

    Raises:
        InputFileError: The output path is a file, or a folder holding other files.
    """
    out = claim_study_output(study, output_dir, force=force)

    def analyse() -> StudyResults:
        results = analyse_study(study, significance=significance)
        controls = analyse_controls(study)
        if controls is not None:
            results = dataclasses.replace(results, controls=controls)
        if study.config.sensitivity is not None:
            from persona_collapse.study.sensitivity import study_sensitivity

            sensitivity = study_sensitivity(study)
            if sensitivity is not None:
                results = dataclasses.replace(results, sensitivity=sensitivity)
        return results

    # Given difference tests are not part of the cache key: analyse afresh then. The
    # sensitivity suite reads the same stores and settings, so it is cached with the rest.
    results = analyse() if significance is not None else cached_results(study, out, analyse)
    if results.controls is not None:
        write_controls_outputs(results.controls, out, study=study)
    if results.sensitivity is not None:
        from persona_collapse.study.sensitivity import write_sensitivity_outputs

        write_sensitivity_outputs(results.sensitivity, out, figures=figures)
    trajectories = study_trajectories(study)
    if trajectories:
        from persona_collapse.report.trajectory import trajectory_report

        lines = {f"{f}/{v}": t for (f, v), t in trajectories.items()}
        section = trajectory_report(lines, figures=figures)
        results = dataclasses.replace(results, trajectories=section)
    # Geometry reads hidden-state files, which the cache key does not cover: never cached.
    results = _with_geometry(study, results, out, figures=figures)
    files = write_report(results, out, figures=figures)
    write_trajectory_outputs(study, out, figures=figures, trajectories=trajectories)
    logger.info("study %s: report written to %s", study.config.name, files.html)
    return StudyOutcome(study=study, results=results, files=files)


def _with_geometry(
    study: LoadedStudy, results: StudyResults, out: Path, *, figures: bool
) -> StudyResults:
    """``results`` with the geometry section, its tables and figures written (unchanged
    without a ``geometry`` block or collected states)."""
    if study.config.geometry is None:
        return results
    from persona_collapse.report.geometry import geometry_report
    from persona_collapse.study.geometry import (
        GEOMETRY_DIR,
        analyse_study_geometry,
        plan_geometry,
        write_study_geometry,
    )

    analyses = analyse_study_geometry(study)
    write_study_geometry(analyses, out, figures=False)
    notes = [f"{plan.family}/{note}" for plan in plan_geometry(study) for note in plan.skipped]
    # The figures are drawn once, for the page (SVG) and as PNG files beside the tables.
    section = geometry_report(analyses, notes=notes, figures=figures, png_folder=out / GEOMETRY_DIR)
    return results if section is None else dataclasses.replace(results, geometry=section)


def run_study(
    study: LoadedStudy,
    *,
    backend_builder: BackendBuilder | None = None,
    progress: bool = True,
    output_dir: str | Path | None = None,
    figures: bool = True,
    preflight: bool = True,
    force: bool = False,
) -> StudyOutcome:
    """Collect everything a study needs (resuming), then analyse it and write the outputs.

    Args:
        study: The loaded study.
        backend_builder: Builds backends (override to inject one in tests).
        progress: Show progress bars.
        output_dir: Where to write (default: the study's output folder).
        figures: Draw figures (needs matplotlib).
        preflight: Check every endpoint and model before collecting anything.
        force: Write into an output folder holding files this tool did not write.

    Raises:
        InputFileError: The output path is a file, or a folder holding other files
            (checked before anything is collected).
    """
    claim_study_output(study, force=force)  # the run store goes there too
    if output_dir is not None:
        claim_study_output(study, output_dir, force=force)
    if study.config.geometry is not None:
        from persona_collapse.study.geometry import plan_geometry

        plan_geometry(study)  # a geometry block no family can serve fails before collecting
    collection = collect_study(
        study, backend_builder=backend_builder, progress=progress, preflight=preflight
    )
    collect_checkpoints(study, backend_builder=backend_builder, progress=progress)
    if study.config.sensitivity is not None:
        from persona_collapse.study.sensitivity import collect_sensitivity

        collect_sensitivity(study, backend_builder=backend_builder, progress=progress)
    if study.config.controls is not None:
        collect_study_controls(study, backend_builder=backend_builder, progress=progress)
    if study.config.geometry is not None:
        from persona_collapse.study.geometry import collect_study_geometry

        collect_study_geometry(study)
    outcome = report_study(study, output_dir=output_dir, figures=figures, force=force)
    return StudyOutcome(
        study=study, results=outcome.results, files=outcome.files, collection=collection
    )


__all__ = ["StudyOutcome", "claim_study_output", "report_study", "run_study"]
