"""Fine-tuning jobs through the OpenAI API (or any server with its files and fine-tuning endpoints).

One fine-tune = one *state folder*. :func:`submit_job` validates the chat JSONL
locally (line-numbered errors before anything leaves the machine), uploads it
(``files.create``, purpose ``fine-tune``) and creates the job
(``fine_tuning.jobs.create``) with the recipe's hyperparameters;
:func:`wait_for_job` polls it until it finishes; :func:`run_openai_finetune`
does both and returns the fine-tuned model id; :func:`write_model_id` puts that
id into a study file's variant.

The state file (``<state folder>/openai-job.json``, :class:`JobState`) is
rewritten atomically after every step and poll: dataset checksum, base model,
recipe, seed, suffix, server URL (without credentials), the *name* of the
API-key variable (never the key), file id, job id, status, model id and error.
So an interrupted run (Ctrl-C, a killed process, a lost connection) resumes
where it stopped: rerunning neither re-uploads the file nor creates a second
job, and a finished state answers without any request. The job is also tagged
with ``metadata={"pcollapse_ref": <state reference>}``, so a job created just
before an interruption, whose id never reached the state file, is found again
(``fine_tuning.jobs.list``) instead of being created twice.

Hyperparameters (:class:`OpenAIJobRecipe`): the ``betley`` preset is the
recipe of the emergent-misalignment fine-tunes of Betley et al. (2025): one
epoch, batch size 4, learning-rate multiplier 2. They are sent in the current
``method={"type": "supervised", "supervised": {"hyperparameters": ...}}`` form,
or with ``request_format="hyperparameters"`` in the deprecated top-level
``hyperparameters`` form some compatible servers still expect.

Client: the synchronous ``openai.OpenAI`` client. A job runs for minutes to
hours and is polled every few seconds at most, so there is nothing to overlap;
a blocking loop keeps Ctrl-C simple. The SDK retries each request (``max_retries``,
honouring ``Retry-After``); polling waits ``poll_interval * 1.5**k`` seconds
between polls (capped at ``max_interval``, via tenacity), keeps polling through
transient failures (connection errors, timeouts, 408/409/429, 5xx) and gives
up after :data:`MAX_POLL_ERRORS` failed polls in a row (the state is kept;
rerun to resume).

Failures: a job that ends ``failed`` (for instance a training file blocked by
the provider's safety checks, ``error.code = "invalid_training_file"``) or
``cancelled`` raises :class:`FineTuneJobError` with the server's message on one
line; a refused request raises :class:`FineTuneAPIError`. Both are
:class:`~persona_collapse.core.errors.UserError` (CLI exit status 2). Messages never
contain the API key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType, MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import tenacity
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from persona_collapse.core.errors import (
    ConfigError,
    InputFileError,
    MissingDependencyError,
    UnknownNameError,
    UserError,
    format_validation_error,
)
from persona_collapse.core.secrets import read_key, scrub
from persona_collapse.variants.finetune.datasets import read_chat_jsonl, resolve_dataset

logger = logging.getLogger(__name__)

STATE_FILE = "openai-job.json"
"""Name of the state file inside a state folder."""

STATE_SCHEMA = 1
"""Version of the state file's layout."""

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
"""Job statuses that never change again."""

DEFAULT_POLL_INTERVAL = 10.0
"""Seconds before the first poll after submission (then growing by 1.5x)."""

DEFAULT_MAX_INTERVAL = 120.0
"""Longest wait between two polls, seconds."""

MAX_POLL_ERRORS = 8
"""Failed polls in a row (after the SDK's own retries) before giving up."""

METADATA_KEY = "pcollapse_ref"
"""Job metadata key holding the state's reference (finds a job whose id was not recorded)."""

_TRANSIENT_STATUSES = frozenset({408, 409, 429})
_SUFFIX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Auto = Literal["auto"]


# --- recipes --------------------------------------------------------------------------------


class OpenAIJobRecipe(BaseModel):
    """Hyperparameters of a fine-tuning job (``"auto"`` lets the provider choose)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True
    )

    name: str = "custom"
    """Preset the recipe starts from (``custom`` for none)."""

    n_epochs: int | Auto = 1
    """Passes over the training data."""

    batch_size: int | Auto = 4
    """Examples per optimizer step."""

    learning_rate_multiplier: float | Auto = 2.0
    """Factor applied to the provider's base learning rate."""

    request_format: Literal["method", "hyperparameters"] = "method"
    """How hyperparameters are sent: in ``method`` (current API) or in the deprecated
    top-level ``hyperparameters`` field."""

    @field_validator("n_epochs", "batch_size", mode="before")
    @classmethod
    def _count(cls, v: Any) -> Any:
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"must be an integer >= 1 or 'auto', got {v!r}")
        return v

    @field_validator("learning_rate_multiplier", mode="before")
    @classmethod
    def _multiplier(cls, v: Any) -> Any:
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf:
            raise ValueError(f"must be a number > 0 or 'auto', got {v!r}")
        return float(v)

    def hyperparameters(self) -> dict[str, Any]:
        """``{"n_epochs", "batch_size", "learning_rate_multiplier"}`` as sent to the API."""
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }

    def describe(self) -> str:
        """``"n_epochs=1, batch_size=4, learning_rate_multiplier=2"`` (for messages)."""
        return ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in self.hyperparameters().items()
        )

    def create_params(self) -> dict[str, Any]:
        """Keyword arguments of ``fine_tuning.jobs.create`` carrying the hyperparameters."""
        if self.request_format == "hyperparameters":
            return {"hyperparameters": self.hyperparameters()}
        return {
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": self.hyperparameters()},
            }
        }


OPENAI_RECIPES: Mapping[str, OpenAIJobRecipe] = MappingProxyType(
    {"betley": OpenAIJobRecipe(name="betley", n_epochs=1, batch_size=4, learning_rate_multiplier=2)}
)
"""Named presets: ``betley`` (1 epoch, batch size 4, learning-rate multiplier 2)."""


def get_openai_recipe(
    recipe: str | os.PathLike[str] | OpenAIJobRecipe | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> OpenAIJobRecipe:
    """A recipe with ``overrides`` applied.

    Args:
        recipe: Preset name (default ``betley``), a recipe YAML file (a mapping of
            fields; its optional ``preset`` key names the preset it starts from),
            an :class:`OpenAIJobRecipe`, or a mapping of fields.
        overrides: Field values replacing the recipe's.

    Raises:
        UnknownNameError: Unknown preset name.
        InputFileError: An unreadable or malformed YAML file.
        ConfigError: Unknown field or invalid value (names the field).
    """
    if recipe is None:
        recipe = "betley"
    if isinstance(recipe, str | os.PathLike) and os.fspath(recipe) in OPENAI_RECIPES:
        base = OPENAI_RECIPES[os.fspath(recipe)].model_dump()
    elif isinstance(recipe, str | os.PathLike):
        text = os.fspath(recipe)
        if not (text.endswith((".yaml", ".yml")) or Path(text).is_file()):
            raise UnknownNameError("OpenAI fine-tuning recipe", text, OPENAI_RECIPES)
        from persona_collapse.core.yamlio import load_yaml_mapping

        data = load_yaml_mapping(Path(text), what="recipe")
        preset = data.pop("preset", None)
        if preset is not None and preset not in OPENAI_RECIPES:
            raise UnknownNameError("OpenAI fine-tuning recipe preset", str(preset), OPENAI_RECIPES)
        start = OPENAI_RECIPES[preset] if preset else OpenAIJobRecipe()
        base = {**start.model_dump(), "name": str(preset or Path(text).stem), **data}
    elif isinstance(recipe, OpenAIJobRecipe):
        base = recipe.model_dump()
    else:
        base = dict(recipe)
    try:
        return OpenAIJobRecipe.model_validate({**base, **dict(overrides or {})})
    except ValidationError as exc:
        message = format_validation_error(
            exc, keys_at=lambda at: list(OpenAIJobRecipe.model_fields) if not at else None
        )
        raise ConfigError(f"OpenAI fine-tuning recipe: {message}") from None


# --- errors and results ---------------------------------------------------------------------


class FineTuneAPIError(UserError):
    """A request to the fine-tuning API failed (refused, unreachable); the state is kept."""


class FineTuneJobError(UserError):
    """A fine-tuning job ended ``failed`` or ``cancelled``.

    Attributes:
        job_id: The job.
        status: ``failed`` or ``cancelled``.
        code: The server's error code (e.g. ``invalid_training_file``), or None.
        param: The parameter the error is about (e.g. ``training_file``), or None.
        server_message: The server's message, on one line.
    """

    def __init__(
        self,
        job_id: str,
        status: str,
        *,
        code: str | None = None,
        param: str | None = None,
        server_message: str | None = None,
        state_path: Path | None = None,
    ) -> None:
        detail = f"fine-tuning job {job_id} {status}"
        if code or param:
            detail += " (" + ", ".join(x for x in (code, param) if x) + ")"
        if server_message:
            detail += f": {server_message}"
        if state_path is not None:
            detail += (
                f" [state: {state_path}; to submit again, delete it or use another state folder]"
            )
        super().__init__(detail)
        self.job_id = job_id
        self.status = status
        self.code = code
        self.param = param
        self.server_message = server_message


class JobError(BaseModel):
    """The error a failed job reports."""

    model_config = ConfigDict(frozen=True)

    code: str | None = None
    message: str | None = None
    param: str | None = None


class JobState(BaseModel):
    """What the state file records about one fine-tune (never the API key)."""

    model_config = ConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)

    schema_version: int = STATE_SCHEMA
    reference: str
    """Random reference, also sent as job metadata (finds a job whose id was not recorded)."""
    dataset_path: str
    dataset_sha256: str
    dataset_examples: int
    base_model: str
    recipe: OpenAIJobRecipe
    seed: int
    suffix: str | None = None
    base_url: str | None = None
    """Server URL without credentials or query (None: the SDK's default)."""
    api_key_env: str | None = None
    """NAME of the environment variable holding the key."""
    file_id: str | None = None
    job_id: str | None = None
    status: str = "new"
    """``new``, ``uploaded``, then the job's status."""
    model_id: str | None = None
    error: JobError | None = None
    trained_tokens: int | None = None
    last_event_id: str | None = None
    created_at: str
    updated_at: str
    state_dir: Path | None = Field(default=None, exclude=True)
    """Folder the state was read from or written to (not stored)."""

    @property
    def done(self) -> bool:
        """Whether the job reached a final status."""
        return self.status in TERMINAL_STATUSES

    @property
    def path(self) -> Path | None:
        """The state file, if known."""
        return None if self.state_dir is None else self.state_dir / STATE_FILE

    def updated(self, **changes: Any) -> JobState:
        """A copy with ``changes`` and a new ``updated_at``."""
        return self.model_copy(update={**changes, "updated_at": _now()})


class JobResult(BaseModel):
    """Where a job stands after :func:`wait_for_job`."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    status: str
    model_id: str | None
    trained_tokens: int | None
    polls: int
    """Polls made by this call (0: answered from the state file)."""
    state: JobState

    @property
    def done(self) -> bool:
        """Whether the job finished (succeeded; failed and cancelled jobs raise)."""
        return self.status in TERMINAL_STATUSES


OnPoll = Callable[[JobState, list[str]], None]
"""Called after every poll with the new state and the job's new event messages."""


# --- the state file -------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def state_path(state_dir: str | os.PathLike[str]) -> Path:
    """The state file of a state folder."""
    return Path(state_dir) / STATE_FILE


def load_state(state_dir: str | os.PathLike[str]) -> JobState | None:
    """The state recorded in ``state_dir``, or None if there is none.

    Raises:
        InputFileError: The state file is unreadable or not a valid state.
    """
    path = state_path(state_dir)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(path, f"unreadable fine-tuning state ({exc})") from None
    if not isinstance(data, dict) or data.get("schema_version") != STATE_SCHEMA:
        raise InputFileError(path, f"not a fine-tuning state of schema {STATE_SCHEMA}")
    try:
        state = JobState.model_validate(data)
    except ValidationError as exc:
        problem = f"invalid fine-tuning state: {format_validation_error(exc)}"
        raise InputFileError(path, problem) from None
    return state.model_copy(update={"state_dir": Path(state_dir)})


def save_state(state: JobState, state_dir: str | os.PathLike[str] | None = None) -> JobState:
    """Write the state atomically (temporary file renamed into place); returns it with its folder.

    Raises:
        ValueError: No folder given and the state has none.
    """
    folder = Path(state_dir) if state_dir is not None else state.state_dir
    if folder is None:
        raise ValueError("state_dir: the state has no folder; pass one")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    text = json.dumps(state.model_dump(mode="json"), indent=2) + "\n"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return state.model_copy(update={"state_dir": folder})


def require_state(state_or_dir: JobState | str | os.PathLike[str]) -> JobState:
    """The state as recorded now (re-read from its folder).

    Raises:
        InputFileError: No state in the folder, or an unreadable one.
    """
    if isinstance(state_or_dir, JobState):
        if state_or_dir.state_dir is None:
            raise ValueError("state_or_dir: the state has no folder; pass the folder instead")
        state_or_dir = state_or_dir.state_dir
    state = load_state(state_or_dir)
    if state is None:
        raise InputFileError(state_path(state_or_dir), "no fine-tuning state here (submit first)")
    return state


# --- the client -----------------------------------------------------------------------------


def public_url(url: str | None) -> str | None:
    """``url`` without user info, query or fragment (what may be stored)."""
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class _Api:
    """The SDK client plus error conversion (messages scrubbed of the key)."""

    def __init__(
        self,
        base_url: str | None,
        api_key_env: str | None,
        *,
        timeout: float,
        max_retries: int,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise MissingDependencyError("openai", "openai") from None
        if base_url is not None and urlsplit(base_url).scheme not in ("http", "https"):
            raise ConfigError(f"base_url {base_url!r} is not an http(s) URL")
        key = read_key(api_key_env)
        if api_key_env and not key:
            raise ConfigError(
                f"environment variable {api_key_env} is not set; export the API key there "
                "(or set api_key_env: null for a server without authentication)"
            )
        self.openai = openai
        self.api_key_env = api_key_env
        self.label = public_url(base_url) or "the OpenAI API"
        # Without a key: a placeholder stops the SDK reading $OPENAI_API_KEY, and the
        # Authorization header is omitted from every request.
        self.client = openai.OpenAI(
            api_key=key or "no-key", base_url=base_url, timeout=timeout, max_retries=max_retries
        )
        #: Headers of every request (``extra_headers``): no Authorization without a key.
        self.headers: dict[str, Any] = (
            {"Authorization": openai.Omit()} if api_key_env is None else {}
        )

    def scrub(self, text: str) -> str:
        """``text`` without the key or anything shaped like one."""
        return scrub(text)

    def is_transient(self, exc: BaseException) -> bool:
        openai = self.openai
        if isinstance(exc, openai.APIConnectionError):  # timeouts included
            return True
        if isinstance(exc, openai.APIStatusError):
            status = int(exc.status_code)
            return status in _TRANSIENT_STATUSES or status >= 500
        return False

    def convert(self, exc: BaseException, what: str, *, resume_hint: str = "") -> UserError:
        """A one-line :class:`FineTuneAPIError` for an SDK exception."""
        openai = self.openai
        if isinstance(exc, openai.APITimeoutError):
            text = f"{what}: no response from {self.label}"
        elif isinstance(exc, openai.APIConnectionError):
            text = f"{what}: cannot reach {self.label} (connection failed)"
        elif isinstance(exc, openai.APIStatusError):
            text = f"{what}: HTTP {exc.status_code} from {self.label}: {_status_message(exc)}"
            if exc.status_code in (401, 403) and self.api_key_env:
                text += f" (check the key in ${self.api_key_env})"
        else:
            text = f"{what}: {type(exc).__name__}: {exc}"
        return FineTuneAPIError(_one_line(self.scrub(text))[:800] + resume_hint)


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        nested = body.get("error")
        inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else body
        message = inner.get("message") or inner.get("detail")
        if message:
            return str(message)
    return str(getattr(exc, "message", "") or type(exc).__name__)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _job_error(job: Any) -> JobError | None:
    error = getattr(job, "error", None)
    if error is None:
        return None
    code = getattr(error, "code", None)
    message = getattr(error, "message", None)
    if not code and not message:
        return None  # some servers send an empty error object for healthy jobs
    return JobError(code=code, message=_one_line(message) if message else None, param=error.param)


# --- submitting -----------------------------------------------------------------------------


def _check_suffix(suffix: str | None) -> None:
    if suffix is not None and not _SUFFIX.match(suffix):
        raise ConfigError(
            f"suffix {suffix!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(it becomes part of the model id)"
        )


def _mismatches(
    state: JobState,
    *,
    sha256: str,
    base_model: str,
    recipe: OpenAIJobRecipe,
    seed: int,
    suffix: str | None,
    base_url: str | None,
) -> list[str]:
    """What differs between a state and a new request (dataset first)."""
    out = []
    if state.dataset_sha256 != sha256:
        out.append(f"dataset sha256 {state.dataset_sha256[:12]}... != {sha256[:12]}...")
    if state.base_model != base_model:
        out.append(f"base model {state.base_model!r} != {base_model!r}")
    if state.recipe.model_dump(exclude={"name"}) != recipe.model_dump(exclude={"name"}):
        out.append(f"recipe ({state.recipe.describe()}) != ({recipe.describe()})")
    if state.seed != seed:
        out.append(f"seed {state.seed} != {seed}")
    if state.suffix != suffix:
        out.append(f"suffix {state.suffix!r} != {suffix!r}")
    if base_url is not None and state.base_url != public_url(base_url):
        out.append(f"server {state.base_url or 'OpenAI'} != {public_url(base_url)}")
    return out


def submit_job(
    dataset: str | os.PathLike[str],
    *,
    base_model: str,
    recipe: str | os.PathLike[str] | OpenAIJobRecipe | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    suffix: str | None = None,
    seed: int = 0,
    base_url: str | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    state_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 120.0,
    max_retries: int = 3,
) -> JobState:
    """Validate a chat dataset, upload it and create a fine-tuning job (idempotent).

    Nothing is sent before the dataset validates. If ``state_dir`` already holds a
    job for the same dataset and settings, it is returned without any request;
    an upload whose job was never created is reused.

    Args:
        dataset: Chat JSONL file, or the name of a fetched dataset (``insecure``, ``secure``).
        base_model: Model to fine-tune (e.g. ``gpt-4o-2024-08-06``).
        recipe: Preset name (default ``betley``), recipe YAML file, :class:`OpenAIJobRecipe`
            or field mapping (see :func:`get_openai_recipe`).
        overrides: Recipe fields replacing the recipe's.
        suffix: Text the provider puts into the fine-tuned model's name (1-64 characters).
        seed: Job seed (the provider's training seed).
        base_url: API base URL ending in ``/v1`` (None: the SDK's default, OpenAI).
        api_key_env: NAME of the environment variable holding the key; None for a
            server without authentication.
        state_dir: Folder of the state file.
        cache_dir: Dataset cache folder (for dataset names).
        timeout: Seconds per request (the upload of a large file may take a while).
        max_retries: The SDK's retries of a failed request.

    Returns:
        The recorded :class:`JobState` (``job_id`` set).

    Raises:
        InputFileError: The dataset is missing or malformed (with its line number).
        ConfigError: Bad recipe, suffix or key variable; or ``state_dir`` holds a
            fine-tune of another dataset or with other settings.
        FineTuneAPIError: The server refused a request or could not be reached.
    """
    chosen = get_openai_recipe(recipe, overrides)
    _check_suffix(suffix)
    if not isinstance(base_model, str) or not base_model.strip():
        raise ConfigError("base_model must be a non-empty model name")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    path = resolve_dataset(dataset, cache=None if cache_dir is None else Path(cache_dir))
    validated = read_chat_jsonl(path)  # line-numbered errors before any request
    folder = Path(state_dir)
    state = load_state(folder)
    if state is not None:
        differences = _mismatches(
            state,
            sha256=validated.sha256,
            base_model=base_model,
            recipe=chosen,
            seed=seed,
            suffix=suffix,
            base_url=base_url,
        )
        # The uploaded file belongs to one dataset on one server; other settings only
        # matter once a job exists.
        upload_unusable = state.dataset_sha256 != validated.sha256 or (
            base_url is not None and state.base_url != public_url(base_url)
        )
        if differences and (state.job_id is not None or upload_unusable):
            raise ConfigError(
                f"{state.path}: holds another fine-tune ({'; '.join(differences)}); "
                "use another state folder, or delete the state file to start over"
            )
        if state.job_id is not None:
            logger.info("job %s already submitted (state %s)", state.job_id, state.path)
            return state
        if differences:
            # Only the upload exists: keep the file, create the job with the new settings.
            state = state.updated(
                reference=uuid.uuid4().hex,
                base_model=base_model,
                recipe=chosen,
                seed=seed,
                suffix=suffix,
                api_key_env=api_key_env,
            )
    else:
        now = _now()
        state = JobState(
            reference=uuid.uuid4().hex,
            dataset_path=str(path),
            dataset_sha256=validated.sha256,
            dataset_examples=len(validated),
            base_model=base_model,
            recipe=chosen,
            seed=seed,
            suffix=suffix,
            base_url=public_url(base_url),
            api_key_env=api_key_env,
            created_at=now,
            updated_at=now,
        )
    # The client checks the key variable and URL: nothing is written if they are wrong.
    api = _Api(base_url, api_key_env, timeout=timeout, max_retries=max_retries)
    state = save_state(state, folder)
    hint = f"; the state in {state.path} is kept: rerun to resume"
    # A job can only exist unrecorded if an earlier run uploaded the file and then stopped.
    resumed_upload = state.file_id is not None
    if state.file_id is None:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != validated.sha256:
            raise InputFileError(path, "the file changed while it was being read; try again")
        try:
            uploaded = api.client.files.create(
                file=(path.name, data, "application/jsonl"),
                purpose="fine-tune",
                extra_headers=api.headers,
            )
        except api.openai.OpenAIError as exc:
            raise api.convert(exc, f"uploading {path.name}", resume_hint=hint) from None
        logger.info("uploaded %s as %s (%d bytes)", path, uploaded.id, len(data))
        state = save_state(state.updated(file_id=uploaded.id, status="uploaded"), folder)
    uploaded_id = state.file_id
    job = _find_job(api, state) if resumed_upload else None
    if job is None:
        try:
            params: dict[str, Any] = {
                "model": base_model,
                "training_file": uploaded_id,
                "seed": seed,
                "metadata": {METADATA_KEY: state.reference},
                **chosen.create_params(),
            }
            if suffix is not None:
                params["suffix"] = suffix
            job = api.client.fine_tuning.jobs.create(**params, extra_headers=api.headers)
        except api.openai.OpenAIError as exc:
            raise api.convert(exc, "creating the fine-tuning job", resume_hint=hint) from None
        logger.info("created fine-tuning job %s (%s)", job.id, job.status)
    state = save_state(_apply_job(state.updated(job_id=job.id), job), folder)
    return state


def _find_job(api: _Api, state: JobState) -> Any | None:
    """A job created for this state whose id was not recorded (interrupted submission)."""
    if state.status != "uploaded":
        return None
    try:
        page = api.client.fine_tuning.jobs.list(
            metadata={METADATA_KEY: state.reference}, limit=10, extra_headers=api.headers
        )
    except api.openai.OpenAIError as exc:
        logger.info("could not list jobs to look for an unrecorded one (%s)", type(exc).__name__)
        return None
    for job in page.data:
        if (job.metadata or {}).get(METADATA_KEY) == state.reference:
            logger.info("found job %s created before an interruption", job.id)
            return job
    return None


def _apply_job(state: JobState, job: Any) -> JobState:
    return state.updated(
        status=str(job.status),
        model_id=job.fine_tuned_model or state.model_id,
        error=_job_error(job),
        trained_tokens=job.trained_tokens if job.trained_tokens is not None else None,
    )


# --- polling --------------------------------------------------------------------------------


def raise_for_failure(state: JobState) -> None:
    """Raise :class:`FineTuneJobError` if the recorded job failed or was cancelled."""
    if state.status in ("failed", "cancelled"):
        error = state.error or JobError()
        raise FineTuneJobError(
            state.job_id or "?",
            state.status,
            code=error.code,
            param=error.param,
            server_message=error.message,
            state_path=state.path,
        )


def _result(state: JobState, polls: int) -> JobResult:
    return JobResult(
        job_id=state.job_id or "",
        status=state.status,
        model_id=state.model_id,
        trained_tokens=state.trained_tokens,
        polls=polls,
        state=state,
    )


def _new_events(api: _Api, job_id: str, last_seen: str | None) -> list[Any]:
    """Events after ``last_seen``, oldest first (the API lists newest first)."""
    page = api.client.fine_tuning.jobs.list_events(job_id, limit=50, extra_headers=api.headers)
    fresh = []
    for event in page.data:
        if event.id == last_seen:
            break
        fresh.append(event)
    return list(reversed(fresh))


def _poll(state: JobState, api: _Api) -> tuple[JobState, list[str]]:
    """One poll (SDK errors are raised as they are); the new state is recorded."""
    if state.job_id is None:
        raise ConfigError(
            f"{state.path}: no job was created yet (status {state.status}); submit again"
        )
    job = api.client.fine_tuning.jobs.retrieve(state.job_id, extra_headers=api.headers)
    events = _new_events(api, state.job_id, state.last_event_id)
    messages = [_one_line(e.message) for e in events]
    for message in messages:
        logger.info("job %s: %s", state.job_id, message)
    new = _apply_job(state, job)
    if events:
        new = new.updated(last_event_id=events[-1].id)
    if new.status == "failed" and new.error is None:
        # No error object: fall back on the last error-level event.
        failures = [e for e in events if getattr(e, "level", "") == "error"]
        if failures:
            new = new.updated(error=JobError(message=_one_line(failures[-1].message)))
    return save_state(new), messages


def poll_job(
    state_or_dir: JobState | str | os.PathLike[str],
    *,
    base_url: str | None = None,
    api_key_env: str | EllipsisType | None = ...,
    timeout: float = 60.0,
    max_retries: int = 2,
) -> tuple[JobState, list[str]]:
    """Ask the server once where the job stands, and record it.

    Args:
        state_or_dir: The state, or its folder.
        base_url: Server URL (default: the one recorded in the state).
        api_key_env: Key variable NAME (default: the one recorded; None: no key).
        timeout: Seconds per request.
        max_retries: The SDK's retries of a failed request.

    Returns:
        ``(new state, messages of the job's events since the last poll)``.

    Raises:
        FineTuneAPIError: The request failed.
        ConfigError: No job was created yet.
    """
    state = require_state(state_or_dir)
    api = _api_for(state, base_url, api_key_env, timeout=timeout, max_retries=max_retries)
    try:
        return _poll(state, api)
    except api.openai.OpenAIError as exc:
        raise api.convert(exc, f"polling job {state.job_id}") from None


def _api_for(
    state: JobState,
    base_url: str | None,
    api_key_env: str | EllipsisType | None,
    *,
    timeout: float,
    max_retries: int,
) -> _Api:
    key_env = state.api_key_env if isinstance(api_key_env, EllipsisType) else api_key_env
    return _Api(base_url or state.base_url, key_env, timeout=timeout, max_retries=max_retries)


class _ErrorsInARow(tenacity.stop.stop_base):
    """tenacity stop condition: too many failed polls in a row."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        self.count = self.count + 1 if outcome is not None and outcome.failed else 0
        return self.count >= self.limit


def wait_for_job(
    state_or_dir: JobState | str | os.PathLike[str],
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_interval: float = DEFAULT_MAX_INTERVAL,
    max_wait: float | None = None,
    base_url: str | None = None,
    api_key_env: str | EllipsisType | None = ...,
    timeout: float = 60.0,
    max_retries: int = 2,
    on_poll: OnPoll | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> JobResult:
    """Poll a submitted job until it finishes (or ``max_wait`` seconds pass).

    The first poll is immediate; then waits grow ``poll_interval * 1.5**k`` up to
    ``max_interval``. Every poll rewrites the state file, so an interrupted wait
    (Ctrl-C, kill) resumes with the same job when called again. A state that
    already finished answers without any request.

    Args:
        state_or_dir: The state from :func:`submit_job`, or its folder.
        poll_interval: First wait between polls, seconds (> 0).
        max_interval: Longest wait between polls, seconds.
        max_wait: Stop waiting after about this many seconds (None: until the job ends);
            the returned result then has ``done == False``.
        base_url: Server URL (default: the one recorded in the state).
        api_key_env: Key variable NAME (default: the one recorded; None: no key).
        timeout: Seconds per request.
        max_retries: The SDK's retries of a failed request (within one poll).
        on_poll: Called after every poll with the state and new event messages.
        sleep: Sleep function (tests pass a fake).

    Returns:
        The :class:`JobResult`; ``model_id`` is set once the job succeeded.

    Raises:
        FineTuneJobError: The job failed or was cancelled (the server's message shown).
        FineTuneAPIError: A request was refused, or :data:`MAX_POLL_ERRORS` polls in a
            row failed (the state is kept: call again to resume).
    """
    if not (poll_interval > 0 and max_interval >= poll_interval):
        raise ValueError("poll_interval must be > 0 and max_interval >= poll_interval")
    if max_wait is not None and max_wait < 0:
        raise ValueError("max_wait must be >= 0 seconds or None")
    state = require_state(state_or_dir)
    if state.done:
        raise_for_failure(state)
        return _result(state, 0)
    if state.job_id is None:
        raise ConfigError(
            f"{state.path}: no job was created yet (status {state.status}); submit again"
        )
    api = _api_for(state, base_url, api_key_env, timeout=timeout, max_retries=max_retries)
    current = state
    polls = 0

    def attempt() -> JobState:
        nonlocal current, polls
        polls += 1
        current, messages = _poll(current, api)
        if on_poll is not None:
            on_poll(current, messages)
        return current

    def log_wait(retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            exc = outcome.exception()
            logger.warning(
                "polling job %s failed (%s); retrying in %.0f s",
                state.job_id,
                api.scrub(_one_line(str(exc)))[:200],
                retry_state.upcoming_sleep,
            )

    def give_back(retry_state: tenacity.RetryCallState) -> JobState:
        outcome = retry_state.outcome
        if outcome is None:  # pragma: no cover - tenacity always sets it before stopping
            return current
        if outcome.failed:
            exc = outcome.exception()
            if isinstance(exc, api.openai.OpenAIError):
                raise api.convert(
                    exc,
                    f"polling job {state.job_id}",
                    resume_hint=f"; the state in {state.path} is kept: rerun to resume",
                ) from None
            if exc is not None:
                raise exc
        result: JobState = outcome.result()
        return result

    stop: tenacity.stop.stop_base = _ErrorsInARow(MAX_POLL_ERRORS)
    if max_wait is not None:
        stop = stop | tenacity.stop_before_delay(max_wait)
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda s: not s.done)
        | tenacity.retry_if_exception(api.is_transient),
        wait=tenacity.wait_exponential(multiplier=poll_interval, exp_base=1.5, max=max_interval),
        stop=stop,
        sleep=sleep,
        before_sleep=log_wait,
        retry_error_callback=give_back,
    )
    try:
        final = retrying(attempt)
    except api.openai.OpenAIError as exc:  # not transient: 401, 404...
        raise api.convert(exc, f"polling job {state.job_id}") from None
    raise_for_failure(final)
    return _result(final, polls)


def cancel_job(
    state_or_dir: JobState | str | os.PathLike[str],
    *,
    base_url: str | None = None,
    api_key_env: str | EllipsisType | None = ...,
    timeout: float = 60.0,
) -> JobState:
    """Cancel a job that has not finished; returns the recorded state.

    Raises:
        FineTuneAPIError: The server refused (e.g. the job already finished).
    """
    state = require_state(state_or_dir)
    if state.job_id is None:
        raise ConfigError(f"{state.path}: no job was created yet; nothing to cancel")
    if state.done:
        raise ConfigError(f"job {state.job_id} already finished ({state.status})")
    api = _api_for(state, base_url, api_key_env, timeout=timeout, max_retries=2)
    try:
        job = api.client.fine_tuning.jobs.cancel(state.job_id, extra_headers=api.headers)
    except api.openai.OpenAIError as exc:
        raise api.convert(exc, f"cancelling job {state.job_id}") from None
    return save_state(_apply_job(state, job))


class FineTuneStillRunning(UserError):
    """:func:`run_openai_finetune` stopped waiting (``max_wait``) before the job finished."""

    exit_code = 3


def run_openai_finetune(
    dataset: str | os.PathLike[str],
    *,
    base_model: str,
    state_dir: str | os.PathLike[str],
    recipe: str | os.PathLike[str] | OpenAIJobRecipe | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    suffix: str | None = None,
    seed: int = 0,
    base_url: str | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    cache_dir: str | os.PathLike[str] | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_interval: float = DEFAULT_MAX_INTERVAL,
    max_wait: float | None = None,
    on_poll: OnPoll | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Submit (or resume) a fine-tune and wait for it: the fine-tuned model id.

    Idempotent: a finished state returns its model id without any request; an
    interrupted one resumes (no second upload or job). See :func:`submit_job`
    and :func:`wait_for_job` for the arguments.

    Raises:
        FineTuneStillRunning: ``max_wait`` passed first (rerun to keep waiting).
        FineTuneJobError, FineTuneAPIError, ConfigError, InputFileError: As in
            :func:`submit_job` and :func:`wait_for_job`.
    """
    state = submit_job(
        dataset,
        base_model=base_model,
        recipe=recipe,
        overrides=overrides,
        suffix=suffix,
        seed=seed,
        base_url=base_url,
        api_key_env=api_key_env,
        state_dir=state_dir,
        cache_dir=cache_dir,
    )
    result = wait_for_job(
        state,
        poll_interval=poll_interval,
        max_interval=max_interval,
        max_wait=max_wait,
        base_url=base_url,
        api_key_env=api_key_env,
        on_poll=on_poll,
        sleep=sleep,
    )
    if not result.done or result.model_id is None:
        raise FineTuneStillRunning(
            f"fine-tuning job {result.job_id} is still {result.status} after the wait limit; "
            f"rerun to keep waiting (state: {result.state.path})"
        )
    return result.model_id


@dataclass(frozen=True)
class JobCheckpoint:
    """A checkpoint a fine-tuning job saved (``fine_tuning.job.checkpoint``).

    Attributes:
        step: Training step (``step_number``).
        model: Model id of the checkpoint (``fine_tuned_model_checkpoint``).
        id: The checkpoint's id.
    """

    step: int
    model: str
    id: str


class JobCheckpoints:
    """Where a fine-tuning job stands and which checkpoints it has saved, through the
    official SDK (``client.fine_tuning.jobs.checkpoints.list``).

    The key is read from ``api_key_env`` and sent only to ``base_url``.

    Raises:
        ConfigError: a bad URL, or the key variable is unset.
        MissingDependencyError: the ``openai`` package is missing.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        self._api = _Api(base_url, api_key_env, timeout=timeout, max_retries=max_retries)

    def poll(self, job_id: str) -> tuple[str, list[JobCheckpoint]]:
        """The job's status and every checkpoint saved so far, by step.

        The job is retrieved before its checkpoints are listed, so a terminal status
        means the list is complete.

        Raises:
            FineTuneAPIError: a request failed (one line, no key in it).
        """
        api = self._api
        try:
            job = api.client.fine_tuning.jobs.retrieve(job_id, extra_headers=api.headers)
            # Iterating the page follows the cursor through every page.
            listed = list(
                api.client.fine_tuning.jobs.checkpoints.list(
                    job_id, limit=100, extra_headers=api.headers
                )
            )
        except api.openai.OpenAIError as exc:
            raise api.convert(exc, f"listing the checkpoints of job {job_id}") from None
        found = {
            int(c.step_number): JobCheckpoint(
                step=int(c.step_number), model=str(c.fine_tuned_model_checkpoint), id=str(c.id)
            )
            for c in listed
        }
        return str(job.status), [found[k] for k in sorted(found)]


def suggest_state_dir(dataset: str, base_model: str) -> Path:
    """A default state folder for a dataset and base model: ``openai-finetunes/<data>-<model>``."""
    stem = Path(dataset).stem if Path(dataset).suffix else str(dataset)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{stem}-{base_model}").strip("_")
    return Path("openai-finetunes") / (safe or "job")


__all__ = [
    "DEFAULT_MAX_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "MAX_POLL_ERRORS",
    "METADATA_KEY",
    "OPENAI_RECIPES",
    "STATE_FILE",
    "TERMINAL_STATUSES",
    "FineTuneAPIError",
    "FineTuneJobError",
    "FineTuneStillRunning",
    "JobCheckpoint",
    "JobCheckpoints",
    "JobError",
    "JobResult",
    "JobState",
    "OnPoll",
    "OpenAIJobRecipe",
    "cancel_job",
    "get_openai_recipe",
    "load_state",
    "poll_job",
    "raise_for_failure",
    "require_state",
    "run_openai_finetune",
    "save_state",
    "state_path",
    "submit_job",
    "suggest_state_dir",
    "wait_for_job",
]
