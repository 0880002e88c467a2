"""persona-collapse: behavioural detection of persona-model collapse.

The public API is what this module re-exports.
"""

from persona_collapse._version import __version__
from persona_collapse.audit import audit_estimators
from persona_collapse.backends import available_backends, create_backend
from persona_collapse.backends.base import (
    Backend,
    Generation,
    Message,
    Prompt,
    ScaleDistribution,
    Usage,
)
from persona_collapse.collect import CollectionSummary, RetryPolicy, collect, run_collection
from persona_collapse.compare import (
    FamilyComparison,
    average_changes,
    check_band,
    compare_family,
    relative_change,
)
from persona_collapse.config import AnalysisConfig, RunConfig
from persona_collapse.costs import ModelPrices, estimate_cost
from persona_collapse.errors import (
    BackendError,
    ConfigError,
    InputFileError,
    PersonaCollapseError,
    StoreError,
    TransientBackendError,
    UnknownNameError,
    UserError,
)
from persona_collapse.instrument import FOUNDATIONS, Instrument, Item, load_instrument, mfq30
from persona_collapse.metrics import (
    RunMetrics,
    SelfProfile,
    analyze_distributions,
    analyze_ratings,
    mean_sigma,
    robustness,
    self_profile,
    susceptibility,
)
from persona_collapse.personas import (
    PersonaSet,
    builtin_personas,
    get_persona_set,
    load_personas,
    toxic_personas,
)
from persona_collapse.planning import plan_design
from persona_collapse.prompts import DEFAULT_TEMPLATE, PromptTemplate, extract_rating, load_template
from persona_collapse.significance import family_significance, holm, study_significance
from persona_collapse.sources import LoadedRun, load_runs, run_metrics, run_self_profile
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
from persona_collapse.verify import VerifyConfig, run_verify

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
    "PersonaCollapseError",
    "PersonaSet",
    "Prompt",
    "PromptTemplate",
    "RetryPolicy",
    "RunConfig",
    "RunMetrics",
    "RunOutcome",
    "RunStore",
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
