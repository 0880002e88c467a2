"""Checkpoint trajectories of study variants.

A variant may list ``checkpoints`` (each a training step with a model to collect, a run
already in the store, or a CSV file to import; or ``trainer``: every ``checkpoint-N/``
its local LoRA fine-tuning saved, measured as adapters of the model it started from)
and its own ``final_step``. The
trajectory's step 0 is the family's base and its last step the variant: both reuse
the runs the study collects anyway (never collected twice). :func:`collect_checkpoints`
collects or imports the checkpoint runs (resuming), :func:`study_trajectories` computes
:func:`~persona_collapse.stats.trajectory.analyze_trajectory` per variant, and
:func:`write_trajectory_outputs` writes ``trajectory/<family>_<variant>.json`` and
``.csv`` and one figure with a line per variant.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persona_collapse.backends import ModelBackendSpec, create_backend, resolve_options
from persona_collapse.core.csvio import records_csv_text
from persona_collapse.core.errors import ConfigError, UserError
from persona_collapse.core.files import write_text_atomic
from persona_collapse.core.formatting import json_safe
from persona_collapse.engine.collect import CollectionSummary, collect, make_run_spec
from persona_collapse.stats.sources import LoadedRun, loaded_run
from persona_collapse.stats.trajectory import Trajectory, analyze_trajectory
from persona_collapse.store.sqlite import RunStore
from persona_collapse.study.loading import LoadedStudy
from persona_collapse.study.orchestrate import BackendBuilder, plan_study, prepare_study
from persona_collapse.study.produce import finetune_folder, read_produced
from persona_collapse.study.watch import find_checkpoints

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointRun:
    """One checkpoint run of a variant.

    Attributes:
        family, label: The variant.
        step: Training step.
        name: Run name in the store (``family/label/stepNNNN``, or the named ``run``).
        backend: Study backend to collect with (None for runs and files).
        model: Model id to collect (None: the variant's, with the checkpoint's options).
        options: Backend options of the checkpoint.
        file: CSV file to import (None otherwise).
    """

    family: str
    label: str
    step: int
    name: str
    backend: str | None
    model: str | None
    options: dict[str, Any]
    file: Path | None


def checkpoint_name(family: str, label: str, step: int) -> str:
    """Store name of a collected or imported checkpoint run."""
    return f"{family}/{label}/step{step:04d}"


def plan_checkpoints(study: LoadedStudy) -> list[CheckpointRun]:
    """Every checkpoint run of the study, in family, variant, step order.

    Raises:
        ConfigError: a checkpoint names an unknown backend, or has none to collect with.
    """
    cfg = study.config
    runs = []
    for family, fam in cfg.families.items():
        for label, variant in fam.variants.items():
            if variant.checkpoints == "trainer":
                runs.extend(_trainer_checkpoints(study, family, label))
                continue
            for cp in sorted(variant.checkpoints, key=lambda c: c.step):
                where = f"{study.source}: families.{family}.{label}.checkpoints (step {cp.step})"
                file = cp.persona_file
                if file is not None and not file.is_absolute():
                    file = study.root / file
                backend = None
                if cp.run is None and file is None:
                    backend = cp.backend or variant.backend
                    if backend is None or backend not in cfg.backends:
                        raise ConfigError(
                            f"{where}: no backend {backend!r} to collect the checkpoint with; "
                            "give 'backend' (a name under 'backends'), 'run' or 'persona_file'"
                        )
                runs.append(
                    CheckpointRun(
                        family=family,
                        label=label,
                        step=cp.step,
                        name=cp.run or checkpoint_name(family, label, cp.step),
                        backend=backend,
                        model=cp.model,
                        options=dict(cp.options),
                        file=file,
                    )
                )
    return runs


def _trainer_checkpoints(study: LoadedStudy, family: str, label: str) -> list[CheckpointRun]:
    """The checkpoints the local LoRA trainer of a fine-tuned variant has saved so far
    (before ``final_step``: the last one is the variant itself)."""
    cfg = study.config
    variant = cfg.families[family].variants[label]
    folder = finetune_folder(cfg, family, label)
    if not folder.is_dir() or variant.final_step is None:
        return []
    return [
        CheckpointRun(
            family=family,
            label=label,
            step=step,
            name=checkpoint_name(family, label, step),
            backend=variant.backend,
            model=None,
            options={"adapter": str(path)},
            file=None,
        )
        for step, path in find_checkpoints(folder).items()
        if step < variant.final_step
    ]


def collect_checkpoints(
    study: LoadedStudy,
    *,
    backend_builder: BackendBuilder | None = None,
    progress: bool = True,
) -> dict[str, CollectionSummary]:
    """Collect (resuming) or import every checkpoint run into the study's store.

    Checkpoints naming an existing ``run`` are only checked to exist.

    Raises:
        ConfigError: bad checkpoint settings (before anything is collected).
        UnknownNameError: a named ``run`` is not in the store.
        BackendError: a backend failed; what was collected is stored.
    """
    plan = plan_checkpoints(study)
    if not plan:
        return {}
    cfg = study.config
    inputs, _ = prepare_study(study)
    builder = backend_builder or (lambda kind, options: create_backend(kind, **options))
    summaries: dict[str, CollectionSummary] = {}
    with RunStore.open(cfg.store_path) as store:
        for cp in plan:
            if cp.file is not None:
                store.import_csv(
                    cp.file,
                    name=cp.name,
                    kind="persona",
                    model=cp.name,
                    personas=list(inputs.personas),
                    temperature=cfg.protocol.temperature,
                    instrument=inputs.instrument,
                )
            elif cp.backend is None:
                store.find_run(cp.name)
        jobs = []
        for cp in plan:
            if cp.backend is None:
                continue
            spec = cfg.backends[cp.backend]
            variant = cfg.families[cp.family].variants[cp.label]
            options = {**spec.options, **variant.options, **cp.options}
            produced = (
                read_produced(cfg, cp.family, cp.label) if variant.finetune is not None else None
            )
            # A fine-tuned variant's checkpoints are adapters of the model it started from.
            start = None if produced is None else produced.model
            built = ModelBackendSpec(
                spec.kind,
                cp.model or variant.model or start or spec.model,
                connection=spec.connection_options(),
                options=options,
                context={"instrument": inputs.instrument, "template": inputs.template},
            )
            backend = builder(spec.kind, resolve_options(built))
            run_spec = make_run_spec(
                backend=backend,
                instrument=inputs.instrument,
                personas=list(inputs.personas),
                template=inputs.template,
                name=cp.name,
                model=cp.model or variant.model or start or spec.model or cp.name,
                protocol=cfg.protocol,
            )
            jobs.append((cp, spec, backend, run_spec))

        async def main() -> None:
            try:
                for cp, spec, backend, run_spec in jobs:
                    logger.info("study %s: collecting checkpoint %s", cfg.name, cp.name)
                    summaries[cp.name] = await collect(
                        store,
                        run_spec,
                        backend,
                        list(inputs.personas),
                        inputs.instrument,
                        inputs.template,
                        pacing=spec.pacing(cfg.protocol.max_retries),
                        progress=progress,
                        prices=spec.prices,
                    )
            finally:
                await asyncio.gather(*(j[2].aclose() for j in jobs), return_exceptions=True)

        if jobs:
            asyncio.run(main())
    return summaries


def study_trajectories(study: LoadedStudy) -> dict[tuple[str, str], Trajectory]:
    """The trajectory of every variant with checkpoints, from the study's store.

    Step 0 is the family base's persona run and ``final_step`` the variant's own
    persona run (the stored runs the study collected or imported for them). A variant
    whose runs are missing or share too few complete personas is left out with a warning.
    """
    checkpoints = plan_checkpoints(study)
    if not checkpoints:
        return {}
    cfg = study.config
    inputs, _ = prepare_study(study)
    stored = {
        (r.family, r.label): r.stored_as for r in plan_study(study, inputs) if r.kind == "persona"
    }
    analysis = cfg.analysis
    out: dict[tuple[str, str], Trajectory] = {}
    with RunStore.open(cfg.store_path, create=False) as store:

        def load(name: str) -> LoadedRun:
            return loaded_run(store, store.find_run(name))

        for family, fam in cfg.families.items():
            for label, variant in fam.variants.items():
                mine = [c for c in checkpoints if (c.family, c.label) == (family, label)]
                if not mine or variant.final_step is None:
                    continue
                try:
                    runs = {0: load(stored[(family, fam.base)])}
                    runs.update({c.step: load(c.name) for c in mine})
                    runs[variant.final_step] = load(stored[(family, label)])
                    out[(family, label)] = analyze_trajectory(
                        runs,
                        final_step=variant.final_step,
                        n_persona_boot=analysis.n_persona_boot,
                        n_rerun_boot=analysis.n_rerun_boot,
                        seed=analysis.seed,
                    )
                except UserError as exc:
                    # One variant's missing runs or too few personas must not stop the
                    # rest of the study's outputs.
                    logger.warning(
                        "study %s: no trajectory of %s/%s: %s", cfg.name, family, label, exc
                    )
    return out


def write_trajectory_outputs(
    study: LoadedStudy,
    output_dir: str | Path,
    *,
    figures: bool = True,
    trajectories: dict[tuple[str, str], Trajectory] | None = None,
) -> list[Path]:
    """Write each variant's trajectory (JSON, CSV) and one figure under ``trajectory/``.

    ``trajectories`` are those :func:`study_trajectories` computed (computed here when
    None). Returns the files written (none when no variant has checkpoints).
    """
    if trajectories is None:
        trajectories = study_trajectories(study)
    if not trajectories:
        return []
    folder = Path(output_dir) / "trajectory"
    written = []
    for (family, label), traj in trajectories.items():
        stem = folder / f"{family}_{label}"
        records = traj.to_records()
        text = json.dumps(json_safe(records), indent=2, ensure_ascii=False) + "\n"
        written.append(write_text_atomic(stem.with_suffix(".json"), text))
        written.append(write_text_atomic(stem.with_suffix(".csv"), records_csv_text(records)))
        nm = traj.non_monotone
        if nm is not None and nm.detected:
            logger.warning("study %s, %s/%s: %s", study.config.name, family, label, nm.statement())
    if figures:
        from persona_collapse.report.trajectory import write_trajectory_figure

        lines = {f"{f}/{v}": t for (f, v), t in trajectories.items()}
        written.append(write_trajectory_figure(lines, folder / "trajectory.png"))
    return written
