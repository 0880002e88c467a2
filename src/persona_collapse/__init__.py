"""persona-collapse: behavioural detection of persona-model collapse.

The public API is what this module re-exports. Names are imported lazily, on first
use (PEP 562), so ``import persona_collapse`` and ``pcollapse --help`` stay fast: the
statistics, the engine and optional dependencies load only when a name needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from persona_collapse.core.version import __version__

_EXPORTS: dict[str, str] = {
    "AnalysisConfig": "persona_collapse.core.config",
    "analyze_distributions": "persona_collapse.stats.metrics",
    "analyze_ratings": "persona_collapse.stats.metrics",
    "audit_estimators": "persona_collapse.stats.audit",
    "available_backends": "persona_collapse.backends",
    "average_changes": "persona_collapse.stats.compare",
    "Backend": "persona_collapse.backends.base",
    "BackendError": "persona_collapse.core.errors",
    "builtin_personas": "persona_collapse.core.personas",
    "check_band": "persona_collapse.stats.compare",
    "collect": "persona_collapse.engine.collect",
    "CollectionSummary": "persona_collapse.engine.collect",
    "compare_family": "persona_collapse.stats.compare",
    "ConfigError": "persona_collapse.core.errors",
    "create_backend": "persona_collapse.backends",
    "DEFAULT_TEMPLATE": "persona_collapse.core.prompts",
    "estimate_cost": "persona_collapse.engine.costs",
    "execute_run": "persona_collapse.study",
    "extract_rating": "persona_collapse.core.prompts",
    "family_significance": "persona_collapse.stats.significance",
    "FamilyComparison": "persona_collapse.stats.compare",
    "FOUNDATIONS": "persona_collapse.core.instrument",
    "Generation": "persona_collapse.backends.base",
    "get_persona_set": "persona_collapse.core.personas",
    "holm": "persona_collapse.stats.significance",
    "InputFileError": "persona_collapse.core.errors",
    "Instrument": "persona_collapse.core.instrument",
    "Item": "persona_collapse.core.instrument",
    "load_instrument": "persona_collapse.core.instrument",
    "load_personas": "persona_collapse.core.personas",
    "load_runs": "persona_collapse.stats.sources",
    "load_study": "persona_collapse.study",
    "load_template": "persona_collapse.core.prompts",
    "LoadedRun": "persona_collapse.stats.sources",
    "mean_sigma": "persona_collapse.stats.metrics",
    "Message": "persona_collapse.backends.base",
    "mfq30": "persona_collapse.core.instrument",
    "ModelPrices": "persona_collapse.engine.costs",
    "PersonaCollapseError": "persona_collapse.core.errors",
    "PersonaSet": "persona_collapse.core.personas",
    "plan_design": "persona_collapse.stats.planning",
    "Prompt": "persona_collapse.backends.base",
    "PromptTemplate": "persona_collapse.core.prompts",
    "read_ratings_csv": "persona_collapse.store.reference_csv",
    "relative_change": "persona_collapse.stats.compare",
    "reproduce": "persona_collapse.study",
    "RetryPolicy": "persona_collapse.engine.collect",
    "robustness": "persona_collapse.stats.metrics",
    "run_collection": "persona_collapse.engine.collect",
    "run_demo": "persona_collapse.study",
    "run_metrics": "persona_collapse.stats.sources",
    "run_self_profile": "persona_collapse.stats.sources",
    "run_study": "persona_collapse.study",
    "run_verify": "persona_collapse.variants.verify",
    "RunConfig": "persona_collapse.core.config",
    "PacingSettings": "persona_collapse.core.config",
    "ProtocolSettings": "persona_collapse.core.config",
    "SamplingSettings": "persona_collapse.core.config",
    "RunMetrics": "persona_collapse.stats.metrics",
    "RunOutcome": "persona_collapse.study",
    "RunStore": "persona_collapse.store.sqlite",
    "ScaleDistribution": "persona_collapse.backends.base",
    "self_profile": "persona_collapse.stats.metrics",
    "SelfProfile": "persona_collapse.stats.metrics",
    "StoreError": "persona_collapse.core.errors",
    "study_significance": "persona_collapse.stats.significance",
    "StudyConfig": "persona_collapse.study",
    "susceptibility": "persona_collapse.stats.metrics",
    "toxic_personas": "persona_collapse.core.personas",
    "TransientBackendError": "persona_collapse.core.errors",
    "UnknownNameError": "persona_collapse.core.errors",
    "Usage": "persona_collapse.backends.base",
    "UserError": "persona_collapse.core.errors",
    "VerifyConfig": "persona_collapse.variants.verify",
    "write_ratings_csv": "persona_collapse.store.reference_csv",
    # Newer analyses: persona-specificity controls, instrument comparison, training
    # trajectories, hidden-state geometry, prompt sensitivity, checkpoint watching and
    # the bias-corrected estimates (issue 16).
    "CapabilityMetrics": "persona_collapse.stats.controls",
    "ControlAnswers": "persona_collapse.stats.controls",
    "LookupMetrics": "persona_collapse.stats.controls",
    "capability_metrics": "persona_collapse.stats.controls",
    "lookup_metrics": "persona_collapse.stats.controls",
    "variant_delta": "persona_collapse.stats.controls",
    "analyse_controls": "persona_collapse.study.controls",
    "bfi44": "persona_collapse.core.instrument",
    "CellSet": "persona_collapse.stats.instruments",
    "answer_cells": "persona_collapse.stats.instruments",
    "compare_instruments": "persona_collapse.stats.instruments",
    "likert_cells": "persona_collapse.stats.instruments",
    "Trajectory": "persona_collapse.stats.trajectory",
    "analyze_trajectory": "persona_collapse.stats.trajectory",
    "cloud_geometry": "persona_collapse.stats.geometry",
    "excess_pr": "persona_collapse.stats.geometry",
    "layer_summary": "persona_collapse.stats.geometry",
    "GeometryAnalysis": "persona_collapse.report.geometry",
    "analyse_geometry": "persona_collapse.report.geometry",
    "analyse_study_geometry": "persona_collapse.study.geometry",
    "SensitivityResult": "persona_collapse.stats.sensitivity",
    "analyze_sensitivity": "persona_collapse.stats.sensitivity",
    "run_sensitivity": "persona_collapse.study.sensitivity",
    "study_sensitivity": "persona_collapse.study.sensitivity",
    "MeasuredCheckpoint": "persona_collapse.study.watch",
    "find_checkpoints": "persona_collapse.study.watch",
    "watch_checkpoints": "persona_collapse.study.watch",
    "watch_openai_checkpoints": "persona_collapse.study.watch",
    "ESTIMATES_EXPLANATION": "persona_collapse.stats.significance",
    "corrected_fields": "persona_collapse.stats.significance",
    "run_cells": "persona_collapse.stats.significance",
}
"""Public name -> module that defines it."""


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # static checkers and IDEs see the real imports
    from persona_collapse.backends import available_backends, create_backend
    from persona_collapse.backends.base import (
        Backend,
        Generation,
        Message,
        Prompt,
        ScaleDistribution,
        Usage,
    )
    from persona_collapse.core.config import (
        AnalysisConfig,
        PacingSettings,
        ProtocolSettings,
        RunConfig,
        SamplingSettings,
    )
    from persona_collapse.core.errors import (
        BackendError,
        ConfigError,
        InputFileError,
        PersonaCollapseError,
        StoreError,
        TransientBackendError,
        UnknownNameError,
        UserError,
    )
    from persona_collapse.core.instrument import (
        FOUNDATIONS,
        Instrument,
        Item,
        bfi44,
        load_instrument,
        mfq30,
    )
    from persona_collapse.core.personas import (
        PersonaSet,
        builtin_personas,
        get_persona_set,
        load_personas,
        toxic_personas,
    )
    from persona_collapse.core.prompts import (
        DEFAULT_TEMPLATE,
        PromptTemplate,
        extract_rating,
        load_template,
    )
    from persona_collapse.engine.collect import (
        CollectionSummary,
        RetryPolicy,
        collect,
        run_collection,
    )
    from persona_collapse.engine.costs import ModelPrices, estimate_cost
    from persona_collapse.report.geometry import GeometryAnalysis, analyse_geometry
    from persona_collapse.stats.audit import audit_estimators
    from persona_collapse.stats.compare import (
        FamilyComparison,
        average_changes,
        check_band,
        compare_family,
        relative_change,
    )
    from persona_collapse.stats.controls import (
        CapabilityMetrics,
        ControlAnswers,
        LookupMetrics,
        capability_metrics,
        lookup_metrics,
        variant_delta,
    )
    from persona_collapse.stats.geometry import cloud_geometry, excess_pr, layer_summary
    from persona_collapse.stats.instruments import (
        CellSet,
        answer_cells,
        compare_instruments,
        likert_cells,
    )
    from persona_collapse.stats.metrics import (
        RunMetrics,
        SelfProfile,
        analyze_distributions,
        analyze_ratings,
        mean_sigma,
        robustness,
        self_profile,
        susceptibility,
    )
    from persona_collapse.stats.planning import plan_design
    from persona_collapse.stats.sensitivity import SensitivityResult, analyze_sensitivity
    from persona_collapse.stats.significance import (
        ESTIMATES_EXPLANATION,
        corrected_fields,
        family_significance,
        holm,
        run_cells,
        study_significance,
    )
    from persona_collapse.stats.sources import LoadedRun, load_runs, run_metrics, run_self_profile
    from persona_collapse.stats.trajectory import Trajectory, analyze_trajectory
    from persona_collapse.store.reference_csv import read_ratings_csv, write_ratings_csv
    from persona_collapse.store.sqlite import RunStore
    from persona_collapse.study import (
        RunOutcome,
        StudyConfig,
        execute_run,
        load_study,
        reproduce,
        run_demo,
        run_study,
    )
    from persona_collapse.study.controls import analyse_controls
    from persona_collapse.study.geometry import analyse_study_geometry
    from persona_collapse.study.sensitivity import run_sensitivity, study_sensitivity
    from persona_collapse.study.watch import (
        MeasuredCheckpoint,
        find_checkpoints,
        watch_checkpoints,
        watch_openai_checkpoints,
    )
    from persona_collapse.variants.verify import VerifyConfig, run_verify

__all__ = [
    "DEFAULT_TEMPLATE",
    "ESTIMATES_EXPLANATION",
    "FOUNDATIONS",
    "AnalysisConfig",
    "Backend",
    "BackendError",
    "CapabilityMetrics",
    "CellSet",
    "CollectionSummary",
    "ConfigError",
    "ControlAnswers",
    "FamilyComparison",
    "Generation",
    "GeometryAnalysis",
    "InputFileError",
    "Instrument",
    "Item",
    "LoadedRun",
    "LookupMetrics",
    "MeasuredCheckpoint",
    "Message",
    "ModelPrices",
    "PacingSettings",
    "PersonaCollapseError",
    "PersonaSet",
    "Prompt",
    "PromptTemplate",
    "ProtocolSettings",
    "RetryPolicy",
    "RunConfig",
    "RunMetrics",
    "RunOutcome",
    "RunStore",
    "SamplingSettings",
    "ScaleDistribution",
    "SelfProfile",
    "SensitivityResult",
    "StoreError",
    "StudyConfig",
    "Trajectory",
    "TransientBackendError",
    "UnknownNameError",
    "Usage",
    "UserError",
    "VerifyConfig",
    "__version__",
    "analyse_controls",
    "analyse_geometry",
    "analyse_study_geometry",
    "analyze_distributions",
    "analyze_ratings",
    "analyze_sensitivity",
    "analyze_trajectory",
    "answer_cells",
    "audit_estimators",
    "available_backends",
    "average_changes",
    "bfi44",
    "builtin_personas",
    "capability_metrics",
    "check_band",
    "cloud_geometry",
    "collect",
    "compare_family",
    "compare_instruments",
    "corrected_fields",
    "create_backend",
    "estimate_cost",
    "excess_pr",
    "execute_run",
    "extract_rating",
    "family_significance",
    "find_checkpoints",
    "get_persona_set",
    "holm",
    "layer_summary",
    "likert_cells",
    "load_instrument",
    "load_personas",
    "load_runs",
    "load_study",
    "load_template",
    "lookup_metrics",
    "mean_sigma",
    "mfq30",
    "plan_design",
    "read_ratings_csv",
    "relative_change",
    "reproduce",
    "robustness",
    "run_cells",
    "run_collection",
    "run_demo",
    "run_metrics",
    "run_self_profile",
    "run_sensitivity",
    "run_study",
    "run_verify",
    "self_profile",
    "study_sensitivity",
    "study_significance",
    "susceptibility",
    "toxic_personas",
    "variant_delta",
    "watch_checkpoints",
    "watch_openai_checkpoints",
    "write_ratings_csv",
]
