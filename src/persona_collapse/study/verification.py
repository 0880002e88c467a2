"""The emergent-misalignment check of a study's variants (``verify:`` in the study file).

Each variant with ``verify`` is asked the open-ended questions of
:mod:`persona_collapse.variants.verify` through the backend that measures it, and a
judge scores the answers. Everything goes to one verification store,
``<output>/verify.db``, which makes the check resumable (a rerun asks only what
is missing). ``<output>/verify-index.json`` records which stored run and judge
belong to each variant, so the report is re-rendered from the store alone, with
the thresholds the study file says now.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persona_collapse.backends import ModelBackendSpec, default_key_variable, resolve_options
from persona_collapse.backends.base import Backend
from persona_collapse.core.em_questions import get_questions
from persona_collapse.core.files import write_text_atomic
from persona_collapse.core.judge import DEFAULT_MIN_NUMBER_MASS
from persona_collapse.study.loading import LoadedStudy, verify_config_values
from persona_collapse.study.spec import StudyConfig, StudyVerifySettings
from persona_collapse.variants.verify.pipeline import (
    DEFAULT_JUDGE_BACKEND,
    DEFAULT_JUDGE_MODEL,
    VerifyConfig,
    VerifyOutcome,
    answer_spec,
    answers_frame,
    judge_spec,
    resolve_method,
    summarize,
    verify,
)
from persona_collapse.variants.verify.results import VerifyResult
from persona_collapse.variants.verify.store import VerifyStore

logger = logging.getLogger(__name__)

VERIFY_STORE = "verify.db"
"""Verification store of a study, in its output folder."""

VERIFY_INDEX = "verify-index.json"
"""Variant -> stored verification run and judge, in the study's output folder."""


@dataclass(frozen=True)
class JudgeChoice:
    """The judge of a variant's verification.

    Attributes:
        backend: Name of the study backend it uses (None: the reference judge,
            OpenAI's ``gpt-4o-2024-08-06`` with the key in ``OPENAI_API_KEY``).
        kind: Backend kind.
        model: Judge model (simulator: preset), or None.
        options: Keyword options of the backend (model included).
    """

    backend: str | None
    kind: str
    model: str | None
    options: Mapping[str, Any]

    @property
    def key(self) -> str:
        """What makes two judges the same (one backend is built per key)."""
        return json.dumps(
            {"kind": self.kind, "options": dict(self.options)}, sort_keys=True, default=str
        )


def store_path(config: StudyConfig) -> Path:
    """The study's verification store."""
    return config.output_dir / VERIFY_STORE


def _settings(config: StudyConfig, family: str, label: str, key: str) -> Any:
    variant = config.families[family].variants[label]
    if isinstance(variant.verify, StudyVerifySettings) and getattr(variant.verify, key) is not None:
        return getattr(variant.verify, key)
    return None if config.verify is None else getattr(config.verify, key)


def judge_choice(config: StudyConfig, family: str, label: str) -> JudgeChoice:
    """The judge a verified variant uses (its own ``verify.judge``, else the study's)."""
    name = _settings(config, family, label, "judge")
    model = _settings(config, family, label, "judge_model")
    mass = _settings(config, family, label, "min_number_mass")
    connection: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if name is None:
        kind = DEFAULT_JUDGE_BACKEND
        model = model or DEFAULT_JUDGE_MODEL
    else:
        spec = config.backends[name]
        kind = spec.kind
        extra = dict(spec.options)
        connection = spec.connection_options()
        model = (
            model or spec.model or (DEFAULT_JUDGE_MODEL if kind == DEFAULT_JUDGE_BACKEND else None)
        )
    # A backend that warns about low-mass cells warns at the verification's own threshold.
    threshold = DEFAULT_MIN_NUMBER_MASS if mass is None else mass
    options = resolve_options(
        ModelBackendSpec(
            kind, model, connection=connection, options=extra, context={"min_scale_mass": threshold}
        )
    )
    return JudgeChoice(name, kind, model, options)


def judge_key_variable(config: StudyConfig, family: str, label: str) -> tuple[str, str] | None:
    """``(study key, variable)`` of the API-key variable the variant's judge needs, if any."""
    choice = judge_choice(config, family, label)
    variable = choice.options.get("api_key_env", default_key_variable(choice.kind))
    if variable is None:
        return None
    key = f"backends.{choice.backend}.api_key_env" if choice.backend else "verify.judge"
    return key, str(variable)


def verify_config(
    config: StudyConfig, family: str, label: str, *, backend_kind: str, model_label: str
) -> VerifyConfig:
    """The :class:`VerifyConfig` of a verified variant (study settings, then the variant's).

    Raises:
        ConfigError: Invalid settings (the study loader has checked them already).
    """
    choice = judge_choice(config, family, label)
    values = {
        **verify_config_values(config, family, label),
        "backend": backend_kind,
        "model": model_label,
        "judge_backend": choice.kind,
        "judge_model": choice.model,
        "store": store_path(config),
    }
    return VerifyConfig.from_mapping(values, source=f"verification of {family}/{label}")


def read_index(config: StudyConfig) -> dict[str, dict[str, Any]]:
    """The study's verification index (empty when nothing was verified yet)."""
    path = config.output_dir / VERIFY_INDEX
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable %s (%s)", path, exc)
        return {}
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}


def _write_index(config: StudyConfig, index: Mapping[str, Any]) -> None:
    text = json.dumps(dict(index), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_text_atomic(config.output_dir / VERIFY_INDEX, text)


@dataclass(frozen=True)
class VerificationTarget:
    """A variant to verify, with the backends that answer and judge.

    Attributes:
        family, label: The variant.
        config: Its verification settings.
        backend: The backend measuring the variant (it answers the questions).
        judge: The judge backend.
    """

    family: str
    label: str
    config: VerifyConfig
    backend: Backend
    judge: Backend

    @property
    def key(self) -> str:
        """``family/label``."""
        return f"{self.family}/{self.label}"


async def verify_variants(
    study: LoadedStudy, targets: list[VerificationTarget]
) -> dict[str, VerifyOutcome]:
    """Verify each target in turn (resuming from the store); records the index.

    Backends are not closed here (the caller owns them).

    Returns:
        ``family/label`` -> outcome (``asked``: answers judged in this session).
    """
    config = study.config
    index = read_index(config)
    outcomes: dict[str, VerifyOutcome] = {}
    for target in targets:
        logger.info("study %s: verifying %s", config.name, target.key)
        outcome = await verify(target.config, backend=target.backend, judge=target.judge)
        outcomes[target.key] = outcome
        questions = get_questions(target.config.questions)
        method = resolve_method(target.config.judge_mode, target.judge)
        with VerifyStore.open(target.config.store) as store:
            run = store.get_or_create_run(answer_spec(target.config, target.backend, questions))
            judge_id = store.get_or_create_judge(judge_spec(target.config, target.judge, method))
        entry = {
            "run": run.name,
            "judge_id": judge_id,
            "method": method,
            "model": target.config.model_label,
            "judge": target.config.judge_label,
        }
        if index.get(target.key) != entry:
            index[target.key] = entry
            _write_index(config, index)
    return outcomes


def load_verification(
    config: StudyConfig,
    family: str,
    label: str,
    index: Mapping[str, Mapping[str, Any]],
) -> VerifyResult | None:
    """A variant's verification result from the store (None when not verified yet).

    Reads the store only; the thresholds and sample count are the study's current ones.
    """
    entry = index.get(f"{family}/{label}")
    path = store_path(config)
    if entry is None or not path.is_file():
        return None
    try:
        cfg = VerifyConfig.model_validate(
            {
                **verify_config_values(config, family, label),
                "model": str(entry["model"]),
                "judge_model": str(entry["judge"]),
                "store": path,
            }
        )
        method = str(entry["method"])
        judge_id = int(entry["judge_id"])
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("verification index entry of %s/%s unusable (%s)", family, label, exc)
        return None
    if method not in ("logprobs", "sampling"):
        return None
    questions = get_questions(cfg.questions)
    with VerifyStore.open(path, create=False) as store:
        run = next((r for r in store.list_runs() if r.name == entry["run"]), None)
        if run is None:
            return None
        frame = answers_frame(store, run, judge_id, questions, cfg.n_samples)
    if frame.empty:
        return None
    result, _ = summarize(
        cfg,
        frame,
        name=run.name,
        method="logprobs" if method == "logprobs" else "sampling",
        questions=questions,
    )
    return result


__all__ = [
    "VERIFY_INDEX",
    "VERIFY_STORE",
    "JudgeChoice",
    "VerificationTarget",
    "judge_choice",
    "judge_key_variable",
    "load_verification",
    "read_index",
    "store_path",
    "verify_config",
    "verify_variants",
]
