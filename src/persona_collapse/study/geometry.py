"""Hidden-state persona geometry of a study's ``transformers`` variants.

With a ``geometry:`` block, every chosen family whose base variant runs on a
``transformers`` backend is measured as in ``pcollapse geometry``: the base model
is loaded once, and each other variant that is that model plus a PEFT adapter
(an ``adapter`` option, or a local fine-tune) is swapped onto it. Variants on
another model or backend are left out with a note. :func:`collect_study_geometry`
writes one float16 states file per variant under ``geometry/<family>/states/``
(resumable: finished files are reused, killed ones continue from their parts);
:func:`analyse_study_geometry` reads them (never a model) and the family's
treatment and control roles give the excess ΔPR; :func:`write_study_geometry`
writes the CSV files and figures beside them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_collapse.backends import model_option
from persona_collapse.core.errors import ConfigError
from persona_collapse.study.loading import LoadedStudy
from persona_collapse.study.orchestrate import backend_options, resolve_inputs

if TYPE_CHECKING:
    from persona_collapse.backends.hidden_states import Variant
    from persona_collapse.report.geometry import GeometryAnalysis

logger = logging.getLogger(__name__)

GEOMETRY_DIR = "geometry"
"""Folder of the study output holding one sub-folder per family."""

STATES_DIR = "states"
"""Sub-folder of a family's geometry folder with one ``.npz`` per variant."""

_KIND = "transformers"


@dataclass(frozen=True)
class GeometryFamily:
    """What the geometry of one family reads.

    Attributes:
        family: Family name; ``base``: its base variant's label.
        model: The base model (folder or Hub id) every variant shares.
        load: Options loading it (device, dtype, revision, local_files_only).
        variants: The base, then one variant per adapter.
        treatment, control: Variant labels of the excess (None unless both are measured).
        skipped: Variants left out, with the reason.
    """

    family: str
    base: str
    model: str
    load: dict[str, Any]
    variants: tuple[Variant, ...]
    treatment: str | None
    control: str | None
    skipped: tuple[str, ...] = ()


def geometry_folder(study: LoadedStudy, family: str) -> Path:
    """Where a family's states, tables and figures go."""
    return study.config.output_dir / GEOMETRY_DIR / family


def _load_options(options: dict[str, Any], device_map: str | None) -> dict[str, Any]:
    keys = ("device", "dtype", "revision", "local_files_only")
    load = {k: options[k] for k in keys if options.get(k) is not None}
    if device_map is not None:
        load["device_map"] = device_map
    return load


def plan_geometry(study: LoadedStudy) -> list[GeometryFamily]:
    """The families to measure, in study order (empty without a ``geometry`` block).

    A fine-tuned variant that is not produced yet is left out (with a note).

    Raises:
        ConfigError: a family named in ``geometry.families`` has no base on a
            ``transformers`` backend, or no family at all qualifies.
    """
    from persona_collapse.backends.hidden_states import Variant

    cfg = study.config
    settings = cfg.geometry
    if settings is None:
        return []
    inputs = resolve_inputs(study)
    chosen = settings.families
    plans = []
    for family, fam in cfg.families.items():
        if chosen is not None and family not in chosen:
            continue
        where = f"{study.source}: geometry, family {family!r}"
        base_spec = fam.variants[fam.base]
        kind = None if base_spec.backend is None else cfg.backends[base_spec.backend].kind
        if kind != _KIND:
            if chosen is not None:
                raise ConfigError(
                    f"{where}: the base variant {fam.base!r} does not run on a "
                    f"'{_KIND}' backend; hidden states need a local model"
                )
            continue
        _, base_opts = backend_options(cfg, family, fam.base, inputs.instrument, inputs.template)
        if base_opts.get("adapter") is not None:
            raise ConfigError(f"{where}: the base variant carries an adapter; give its model")
        model = str(base_opts[model_option(_KIND)])
        variants = [Variant(fam.base)]
        skipped = []
        for label, spec in fam.variants.items():
            if label == fam.base:
                continue
            backend = None if spec.backend is None else cfg.backends[spec.backend]
            if backend is None or backend.kind != _KIND:
                skipped.append(f"{label}: not on a '{_KIND}' backend")
                continue
            try:
                _, opts = backend_options(cfg, family, label, inputs.instrument, inputs.template)
            except ConfigError as exc:  # a fine-tune not produced yet
                skipped.append(f"{label}: {exc}")
                continue
            if str(opts[model_option(_KIND)]) != model:
                skipped.append(f"{label}: another model than the base's")
            elif opts.get("adapter") is None:
                skipped.append(f"{label}: no adapter (the base model itself)")
            else:
                variants.append(Variant(label, str(opts["adapter"])))
        measured = {v.name for v in variants}
        treatment, control = fam.treatment, fam.control
        if treatment not in measured or control not in measured:
            treatment = control = None
        plans.append(
            GeometryFamily(
                family=family,
                base=fam.base,
                model=model,
                load=_load_options(base_opts, settings.device_map),
                variants=tuple(variants),
                treatment=treatment,
                control=control,
                skipped=tuple(skipped),
            )
        )
    if not plans:
        raise ConfigError(
            f"{study.source}: geometry: no family has its base variant on a '{_KIND}' "
            "backend (hidden states need a local model); remove 'geometry' or add one"
        )
    return plans


def _inputs(study: LoadedStudy) -> tuple[list[str], tuple[str, ...]]:
    from persona_collapse.backends.hidden_states import PERSONA_TEMPLATES

    settings = study.config.geometry
    if settings is None:  # pragma: no cover - callers check
        raise ConfigError("the study has no geometry block")
    texts = list(resolve_inputs(study).personas)
    if settings.max_personas is not None:
        texts = texts[: settings.max_personas]
    return texts, PERSONA_TEMPLATES[: settings.templates]


def collect_study_geometry(
    study: LoadedStudy, *, progress: Callable[[str, int, int], None] | None = None
) -> dict[str, dict[str, Path]]:
    """Collect (or finish, or reuse) the states of every planned family; family ->
    variant -> states file. A family whose files are all finished loads no model.

    Raises:
        ConfigError: see :func:`plan_geometry`; a model or adapter that cannot be loaded.
        MissingDependencyError: torch, transformers or peft is missing.
    """
    from persona_collapse.backends.hidden_states import (
        StateReader,
        collect_variants,
        finished_states,
    )

    settings = study.config.geometry
    if settings is None:
        return {}
    texts, templates = _inputs(study)
    out: dict[str, dict[str, Path]] = {}
    for plan in plan_geometry(study):
        folder = geometry_folder(study, plan.family) / STATES_DIR
        saved = [finished_states(folder, v, plan.model, texts, templates) for v in plan.variants]
        if all(p is not None for p in saved):
            out[plan.family] = {v.name: p for v, p in zip(plan.variants, saved, strict=True) if p}
            continue
        logger.info("study %s: hidden states of family %s", study.config.name, plan.family)
        reader = StateReader.load(
            plan.model,
            batch_size=settings.batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            **plan.load,
        )
        try:
            out[plan.family] = collect_variants(
                reader, list(plan.variants), texts, templates, folder, progress=progress
            )
        finally:
            del reader  # one model in memory at a time
    return out


def analyse_study_geometry(study: LoadedStudy) -> dict[str, GeometryAnalysis]:
    """The geometry of every planned family whose states are all collected (family ->
    analysis); families without them are left out with a warning. Loads no model."""
    from persona_collapse.backends.hidden_states import finished_states, load_states
    from persona_collapse.report.geometry import analyse_geometry

    settings = study.config.geometry
    if settings is None:
        return {}
    texts, templates = _inputs(study)
    bands = [(name, lo, hi + 1) for name, (lo, hi) in settings.bands.items()]
    out = {}
    for plan in plan_geometry(study):
        folder = geometry_folder(study, plan.family) / STATES_DIR
        saved = {
            v.name: finished_states(folder, v, plan.model, texts, templates) for v in plan.variants
        }
        missing = sorted(name for name, path in saved.items() if path is None)
        if missing:
            logger.warning(
                "study %s: no geometry of family %s: no hidden states of %s yet "
                "(run 'pcollapse study run')",
                study.config.name,
                plan.family,
                ", ".join(missing),
            )
            continue
        out[plan.family] = analyse_geometry(
            {name: load_states(path) for name, path in saved.items() if path is not None},
            base=plan.base,
            treatment=plan.treatment,
            control=plan.control,
            draws=settings.draws,
            fraction=settings.fraction,
            bootstrap=settings.bootstrap,
            bands=bands,
            seed=settings.seed,
        )
    return out


def write_study_geometry(
    analyses: dict[str, GeometryAnalysis], output_dir: str | Path, *, figures: bool = True
) -> list[Path]:
    """Each family's geometry tables (CSV) and figures (PNG) under
    ``<output_dir>/geometry/<family>/``."""
    from persona_collapse.core.errors import MissingDependencyError
    from persona_collapse.report.geometry import write_geometry_outputs

    written = []
    for family, analysis in analyses.items():
        folder = Path(output_dir) / GEOMETRY_DIR / family
        try:
            written += write_geometry_outputs(analysis, folder, figures=figures)
        except MissingDependencyError as exc:
            logger.warning("no geometry figures: %s", exc)
            written += write_geometry_outputs(analysis, folder, figures=False)
    return written


__all__ = [
    "GEOMETRY_DIR",
    "GeometryFamily",
    "analyse_study_geometry",
    "collect_study_geometry",
    "geometry_folder",
    "plan_geometry",
    "write_study_geometry",
]
