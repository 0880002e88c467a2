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
    from persona_collapse.stats.audit import audit_estimators
    from persona_collapse.stats.compare import (
        FamilyComparison,
        average_changes,
        check_band,
        compare_family,
        relative_change,
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
    from persona_collapse.stats.significance import family_significance, holm, study_significance
    from persona_collapse.stats.sources import LoadedRun, load_runs, run_metrics, run_self_profile
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
    from persona_collapse.variants.verify import VerifyConfig, run_verify

__all__ = [
    "DEFAULT_TEMPLATE",
    "FOUNDATIONS",
    "AnalysisConfig",
    "Backend",
    "BackendError",
    "CollectionSummary",
    "ConfigError",
    "FamilyComparison",
    "Generation",
    "InputFileError",
    "Instrument",
    "Item",
    "LoadedRun",
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
    "StoreError",
    "StudyConfig",
    "TransientBackendError",
    "UnknownNameError",
    "Usage",
    "UserError",
    "VerifyConfig",
    "__version__",
    "analyze_distributions",
    "analyze_ratings",
    "audit_estimators",
    "available_backends",
    "average_changes",
    "builtin_personas",
    "check_band",
    "collect",
    "compare_family",
    "create_backend",
    "estimate_cost",
    "execute_run",
    "extract_rating",
    "family_significance",
    "get_persona_set",
    "holm",
    "load_instrument",
    "load_personas",
    "load_runs",
    "load_study",
    "load_template",
    "mean_sigma",
    "mfq30",
    "plan_design",
    "read_ratings_csv",
    "relative_change",
    "reproduce",
    "robustness",
    "run_collection",
    "run_demo",
    "run_metrics",
    "run_self_profile",
    "run_study",
    "run_verify",
    "self_profile",
    "study_significance",
    "susceptibility",
    "toxic_personas",
    "write_ratings_csv",
]
