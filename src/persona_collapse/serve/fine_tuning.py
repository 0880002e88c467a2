"""The files and fine-tuning endpoints of ``serve-sim`` (a simulated OpenAI fine-tuning API).

Endpoints (mounted by :mod:`persona_collapse.serve.asgi`):

``POST /v1/files``
    Multipart upload (``file``, ``purpose``). Files live in memory; a ``fine-tune``
    file must be named ``*.jsonl``.
``GET /v1/files/{id}``
    The file object.
``POST /v1/fine_tuning/jobs``
    Create a job: ``model``, ``training_file``, hyperparameters in ``method``
    (``{"type": "supervised", "supervised": {"hyperparameters": {...}}}``) or the
    deprecated top-level ``hyperparameters``, ``seed``, ``suffix``, ``metadata``.
``GET /v1/fine_tuning/jobs``
    List jobs, newest first (``limit``, ``after``, ``metadata[key]=value`` filters).
``GET /v1/fine_tuning/jobs/{id}``
    Retrieve a job. Retrievals drive the simulated progress (below).
``GET /v1/fine_tuning/jobs/{id}/events``
    The job's events, newest first (``limit``, ``after``).
``GET /v1/fine_tuning/jobs/{id}/checkpoints``
    The job's checkpoints, newest first (``limit``, ``after``).
``POST /v1/fine_tuning/jobs/{id}/cancel``
    Cancel a job that has not finished.

Progress: a job starts in ``validating_files`` and moves through ``queued`` and
``running`` to ``succeeded``. It leaves a status on a retrieval once it has been
reported in that status ``polls_per_status`` times and has spent
``seconds_per_status`` seconds in it (:class:`FineTuningSettings`); with the
defaults the fourth retrieval reports ``succeeded``.

Validation (leaving ``validating_files``): the training file is checked
minimally — every non-blank line a JSON object with a non-empty ``messages``
list of ``{role, content}`` objects including an assistant turn, and at least
``min_examples`` examples. A bad file fails the job with
``error = {code: "invalid_training_file", param: "training_file", message: ...}``
naming the line. The ``failure`` switch makes every job fail there instead:
``"moderation"`` with a safety-check error, ``"validation"`` with a format error.

Checkpoints: every retrieval that advances a running job's step saves a checkpoint
at that step, and so does success at the last step (the real API keeps one per
epoch; here more steps give a trajectory to watch). A checkpoint's model
``ft:<base>:pcollapse:<suffix>:<job key>:ckpt-step-<N>`` is served like the final
model, by the same preset.

Fine-tuned models: a job that succeeds produces the model
``ft:<base>:pcollapse:<suffix>:<job key>`` (``ft:<base>:pcollapse::<job key>``
without a suffix), which chat completions then serve. Its simulator preset is
chosen by the training file's name: the longest key of
``FineTuningSettings.presets`` found in the lower-cased file name wins (by
default ``insecure`` -> preset ``insecure``, ``secure`` -> ``secure``);
otherwise the base model's preset (``sim-<preset>`` -> that preset, any other
base -> the server's ``preset``).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from persona_collapse.core.errors import format_validation_error
from persona_collapse.engine.costs import count_message_tokens

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
"""Statuses a job never leaves."""

PROGRESSION = ("validating_files", "queued", "running", "succeeded")
"""Statuses of a job that succeeds, in order."""

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
"""Upload purposes the server accepts."""

AUTO_HYPERPARAMETERS: Mapping[str, int | float] = {
    "n_epochs": 3,
    "batch_size": 1,
    "learning_rate_multiplier": 1.8,
}
"""Values the simulated server picks for hyperparameters sent as ``"auto"``."""

_CHAT_ROLES = ("system", "user", "assistant", "tool", "developer")


class FineTuningSettings(BaseModel):
    """How the simulated fine-tuning API behaves."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    polls_per_status: int = Field(default=1, ge=0)
    """Retrievals that report each of ``validating_files``, ``queued`` and ``running``."""

    seconds_per_status: float = Field(default=0.0, ge=0.0)
    """Least time, seconds, a job spends in each of those statuses."""

    failure: Literal["none", "moderation", "validation"] = "none"
    """Fault: fail every job when its files are validated, with a safety-check
    (``moderation``) or file-format (``validation``) error."""

    min_examples: int = Field(default=10, ge=1)
    """Fewest examples a training file needs."""

    presets: dict[str, str] = Field(
        default_factory=lambda: {"insecure": "insecure", "secure": "secure"}
    )
    """Training-file name fragment -> simulator preset of the fine-tuned model."""


class _Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: Literal["auto"] | int = Field(default="auto")
    batch_size: Literal["auto"] | int = Field(default="auto")
    learning_rate_multiplier: Literal["auto"] | float = Field(default="auto")

    def checked(self) -> str | None:
        """A problem with the values, or None."""
        if isinstance(self.n_epochs, int) and not 1 <= self.n_epochs <= 50:
            return "n_epochs must be 1-50 or 'auto'"
        if isinstance(self.batch_size, int) and not 1 <= self.batch_size <= 256:
            return "batch_size must be 1-256 or 'auto'"
        lr = self.learning_rate_multiplier
        if isinstance(lr, float) and not (math.isfinite(lr) and 0 < lr <= 50):
            return "learning_rate_multiplier must be in (0, 50] or 'auto'"
        return None

    def resolved(self) -> dict[str, Any]:
        return {
            name: AUTO_HYPERPARAMETERS[name] if value == "auto" else value
            for name, value in self.model_dump().items()
        }


class _JobCreate(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    hyperparameters: _Hyperparameters | None = None
    method: dict[str, Any] | None = None
    seed: int | None = Field(default=None, ge=0)
    suffix: str | None = Field(default=None, max_length=64)
    validation_file: str | None = None
    metadata: dict[str, str] | None = None


@dataclass
class SimFile:
    """An uploaded file."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass
class SimJob:
    """A simulated fine-tuning job."""

    id: str
    key: str
    model: str
    training_file: SimFile
    hyperparameters: dict[str, Any]
    seed: int
    suffix: str | None
    metadata: dict[str, str] | None
    created_at: int
    status: str = "validating_files"
    polls_in_status: int = 0
    status_since: float = field(default_factory=time.monotonic)
    error: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    steps: int = 0
    step: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    """Saved checkpoints (``fine_tuning.job.checkpoint`` objects), oldest first."""

    @property
    def model_stem(self) -> str:
        """``ft:<base>:pcollapse:<suffix>:<job key>``: the final model's id."""
        return f"ft:{self.model}:pcollapse:{self.suffix or ''}:{self.key}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "fine_tuning.job",
            "created_at": self.created_at,
            "error": self.error,
            "fine_tuned_model": self.fine_tuned_model,
            "finished_at": self.finished_at,
            "hyperparameters": dict(self.hyperparameters),
            "model": self.model,
            "organization_id": "org-pcollapse",
            "result_files": [],
            "seed": self.seed,
            "status": self.status,
            "trained_tokens": self.trained_tokens,
            "training_file": self.training_file.id,
            "validation_file": None,
            "estimated_finish": None,
            "integrations": [],
            "metadata": self.metadata,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": dict(self.hyperparameters)},
            },
            "user_provided_suffix": self.suffix,
        }


def _error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> tuple[int, dict[str, Any]]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a ``multipart/form-data`` body: name -> (file name or None, bytes).

    Parsed with the standard library's MIME parser (``python-multipart`` is not a
    dependency of the ``serve`` extra).

    Raises:
        ValueError: Not a multipart body.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError("expected a multipart/form-data body")
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise ValueError("the multipart body has no parts")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def check_training_file(data: bytes, *, min_examples: int) -> tuple[str | None, int, int]:
    """Minimal server-side check of a chat JSONL training file.

    Returns:
        ``(problem or None, examples, estimated tokens)``.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "the file is not UTF-8 text", 0, 0
    examples = tokens = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            return f"line {number} is not valid JSON", examples, tokens
        messages = obj.get("messages") if isinstance(obj, dict) else None
        if not isinstance(messages, list) or not messages:
            return f"line {number} has no 'messages' list", examples, tokens
        for message in messages:
            if (
                not isinstance(message, dict)
                or message.get("role") not in _CHAT_ROLES
                or not isinstance(message.get("content"), str | list)
            ):
                problem = f"line {number} has a message without a valid role and content"
                return problem, examples, tokens
        if not any(m.get("role") == "assistant" for m in messages):
            return f"line {number} has no assistant message", examples, tokens
        examples += 1
        tokens += count_message_tokens(
            [{"content": m["content"]} for m in messages if isinstance(m["content"], str)]
        )
    if examples < min_examples:
        return (
            f"the file has {examples} example(s); at least {min_examples} are required",
            examples,
            tokens,
        )
    return None, examples, tokens


class FineTuningService:
    """Files and fine-tuning jobs of one server (in memory).

    Args:
        settings: Progress, faults and the preset rule.
        register_model: Called with ``(model id, base model, training file name)``
            when a job succeeds; makes the fine-tuned model servable.
        counters: Where request counts go (``ServerStats.fine_tuning``).
    """

    def __init__(
        self,
        settings: FineTuningSettings,
        *,
        register_model: Callable[[str, str, str], None],
        counters: Counter[str],
    ) -> None:
        self.settings = settings
        self._register = register_model
        self.counters = counters
        self.files: dict[str, SimFile] = {}
        self.jobs: dict[str, SimJob] = {}
        self._file_numbers = itertools.count(1)
        self._job_numbers = itertools.count(1)
        self._event_numbers = itertools.count(1)
        self._checkpoint_numbers = itertools.count(1)

    # --- files ----------------------------------------------------------------------------

    def upload(self, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """``POST /v1/files``."""
        try:
            fields = parse_multipart(content_type, body)
        except ValueError as exc:
            return self._fail(_error(400, str(exc)))
        purpose_field = fields.get("purpose")
        file_field = fields.get("file")
        if purpose_field is None:
            return self._fail(_error(400, "missing required field 'purpose'", param="purpose"))
        if file_field is None or file_field[0] is None:
            return self._fail(_error(400, "missing required file field 'file'", param="file"))
        purpose = purpose_field[1].decode("utf-8", "replace").strip()
        filename, data = file_field[0], file_field[1]
        if purpose not in FILE_PURPOSES:
            return self._fail(
                _error(
                    400,
                    f"purpose must be one of {', '.join(FILE_PURPOSES)}, got {purpose!r}",
                    param="purpose",
                )
            )
        if purpose == "fine-tune" and not filename.lower().endswith(".jsonl"):
            return self._fail(
                _error(
                    400,
                    f"fine-tuning files must be JSONL (*.jsonl), got {filename!r}",
                    param="file",
                )
            )
        self.counters["uploads"] += 1
        sim_file = SimFile(
            id=f"file-sim{next(self._file_numbers):06d}",
            filename=filename,
            purpose=purpose,
            data=data,
            created_at=int(time.time()),
        )
        self.files[sim_file.id] = sim_file
        return 200, sim_file.to_dict()

    def get_file(self, file_id: str) -> tuple[int, dict[str, Any]]:
        """``GET /v1/files/{id}``."""
        self.counters["file_retrievals"] += 1
        found = self.files.get(file_id)
        if found is None:
            return self._fail(_error(404, f"No such File object: {file_id}", param="id"))
        return 200, found.to_dict()

    # --- jobs -----------------------------------------------------------------------------

    def create_job(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``POST /v1/fine_tuning/jobs``."""
        if not isinstance(body, dict):
            return self._fail(_error(400, "request body must be a JSON object"))
        try:
            req = _JobCreate.model_validate(body)
        except ValidationError as exc:
            return self._fail(_error(400, format_validation_error(exc)))
        hyper, problem = self._hyperparameters(req)
        if problem is not None:
            return self._fail(_error(400, problem, param="method"))
        sim_file = self.files.get(req.training_file)
        if sim_file is None:
            return self._fail(
                _error(
                    400,
                    f"invalid training_file: {req.training_file} (no such file)",
                    param="training_file",
                )
            )
        if sim_file.purpose != "fine-tune":
            return self._fail(
                _error(
                    400,
                    f"file {sim_file.id} was uploaded with purpose {sim_file.purpose!r}, "
                    "not 'fine-tune'",
                    param="training_file",
                )
            )
        if req.suffix is not None and ":" in req.suffix:
            return self._fail(_error(400, "suffix must not contain ':'", param="suffix"))
        number = next(self._job_numbers)
        job = SimJob(
            id=f"ftjob-sim{number:06d}",
            key=f"sim{number:06d}",
            model=req.model,
            training_file=sim_file,
            hyperparameters=hyper,
            seed=req.seed if req.seed is not None else 0,
            suffix=req.suffix,
            metadata=req.metadata,
            created_at=int(time.time()),
        )
        self.jobs[job.id] = job
        self.counters["jobs_created"] += 1
        self._event(job, f"Created fine-tuning job: {job.id}")
        self._event(job, f"Validating training file: {sim_file.id}")
        return 200, job.to_dict()

    @staticmethod
    def _hyperparameters(req: _JobCreate) -> tuple[dict[str, Any], str | None]:
        """Resolved hyperparameters of a create request, or a problem."""
        given = req.hyperparameters
        if req.method is not None:
            if req.method.get("type") != "supervised":
                return {}, "serve-sim supports only method type 'supervised'"
            supervised = req.method.get("supervised") or {}
            raw = supervised.get("hyperparameters") if isinstance(supervised, dict) else None
            if raw is not None:
                if given is not None:
                    return {}, (
                        "give hyperparameters in 'method' or in the deprecated "
                        "'hyperparameters', not both"
                    )
                try:
                    given = _Hyperparameters.model_validate(raw)
                except ValidationError as exc:
                    return {}, f"method.supervised.hyperparameters: {format_validation_error(exc)}"
        chosen = given or _Hyperparameters()
        problem = chosen.checked()
        return ({}, problem) if problem else (chosen.resolved(), None)

    def list_jobs(
        self, *, limit: int, after: str | None, metadata: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """``GET /v1/fine_tuning/jobs`` (newest first)."""
        self.counters["job_lists"] += 1
        jobs = [
            j
            for j in reversed(self.jobs.values())
            if all((j.metadata or {}).get(k) == v for k, v in metadata.items())
        ]
        return 200, _page([j.to_dict() for j in jobs], limit=limit, after=after)

    def get_job(self, job_id: str) -> tuple[int, dict[str, Any]]:
        """``GET /v1/fine_tuning/jobs/{id}``: advances the simulated progress."""
        self.counters["job_retrievals"] += 1
        job = self.jobs.get(job_id)
        if job is None:
            return self._fail(_error(404, f"No such fine-tuning job: {job_id}", param="id"))
        self._progress(job)
        return 200, job.to_dict()

    def list_events(
        self, job_id: str, *, limit: int, after: str | None
    ) -> tuple[int, dict[str, Any]]:
        """``GET /v1/fine_tuning/jobs/{id}/events`` (newest first)."""
        self.counters["event_lists"] += 1
        job = self.jobs.get(job_id)
        if job is None:
            return self._fail(_error(404, f"No such fine-tuning job: {job_id}", param="id"))
        return 200, _page(list(reversed(job.events)), limit=limit, after=after)

    def list_checkpoints(
        self, job_id: str, *, limit: int, after: str | None
    ) -> tuple[int, dict[str, Any]]:
        """``GET /v1/fine_tuning/jobs/{id}/checkpoints`` (newest first)."""
        self.counters["checkpoint_lists"] += 1
        job = self.jobs.get(job_id)
        if job is None:
            return self._fail(_error(404, f"No such fine-tuning job: {job_id}", param="id"))
        return 200, _page(list(reversed(job.checkpoints)), limit=limit, after=after)

    def cancel(self, job_id: str) -> tuple[int, dict[str, Any]]:
        """``POST /v1/fine_tuning/jobs/{id}/cancel``."""
        self.counters["cancels"] += 1
        job = self.jobs.get(job_id)
        if job is None:
            return self._fail(_error(404, f"No such fine-tuning job: {job_id}", param="id"))
        if job.status in TERMINAL_STATUSES:
            return self._fail(
                _error(400, f"job {job_id} has already finished (status {job.status})")
            )
        self._set_status(job, "cancelled")
        job.finished_at = int(time.time())
        self._event(job, "Fine-tuning job cancelled")
        return 200, job.to_dict()

    # --- simulated progress ---------------------------------------------------------------

    def _progress(self, job: SimJob) -> None:
        s = self.settings
        while (
            job.status not in TERMINAL_STATUSES
            and job.polls_in_status >= s.polls_per_status
            and time.monotonic() - job.status_since >= s.seconds_per_status
        ):
            self._advance(job)
        if job.status == "running" and job.step < job.steps:
            job.step = min(job.steps, job.step + max(1, job.steps // 4))
            self._event(job, f"Step {job.step}/{job.steps}: training loss={self._loss(job):.3f}")
            self._checkpoint(job)
        job.polls_in_status += 1

    def _checkpoint(self, job: SimJob) -> None:
        """Save (and serve) a checkpoint at the job's step, once per step."""
        if any(c["step_number"] == job.step for c in job.checkpoints):
            return
        model = f"{job.model_stem}:ckpt-step-{job.step}"
        self._register(model, job.model, job.training_file.filename)
        job.checkpoints.append(
            {
                "id": f"ftckpt-sim{next(self._checkpoint_numbers):08d}",
                "object": "fine_tuning.job.checkpoint",
                "created_at": int(time.time()),
                "fine_tuned_model_checkpoint": model,
                "fine_tuning_job_id": job.id,
                "step_number": job.step,
                "metrics": {"step": float(job.step), "train_loss": self._loss(job)},
            }
        )

    def _advance(self, job: SimJob) -> None:
        if job.status == "validating_files":
            problem, examples, tokens = check_training_file(
                job.training_file.data, min_examples=self.settings.min_examples
            )
            name = job.training_file.filename
            if problem is not None:
                self._failed(job, f"Invalid training file {name}: {problem}.")
                return
            if self.settings.failure == "moderation":
                self._failed(
                    job,
                    f"Training file {name} was blocked by the safety checks: the training data "
                    "contains too many examples that violate the usage policies "
                    "(simulated moderation failure).",
                )
                return
            if self.settings.failure == "validation":
                self._failed(
                    job,
                    f"Invalid training file {name}: the file format could not be validated "
                    "(simulated validation failure).",
                )
                return
            epochs = int(job.hyperparameters["n_epochs"])
            job.steps = max(1, math.ceil(examples / int(job.hyperparameters["batch_size"])))
            job.steps *= epochs
            job.trained_tokens = tokens * epochs
            self._set_status(job, "queued")
            self._event(job, "Files validated, moving job to queued state")
        elif job.status == "queued":
            self._set_status(job, "running")
            self._event(job, "Fine-tuning job started")
        elif job.status == "running":
            job.step = job.steps
            self._event(job, f"Step {job.steps}/{job.steps}: training loss={self._loss(job):.3f}")
            self._checkpoint(job)
            job.fine_tuned_model = job.model_stem
            self._register(job.fine_tuned_model, job.model, job.training_file.filename)
            self._set_status(job, "succeeded")
            job.finished_at = int(time.time())
            self._event(job, f"New fine-tuned model created: {job.fine_tuned_model}")
            self._event(job, "The job has successfully completed")

    @staticmethod
    def _loss(job: SimJob) -> float:
        return 2.0 * math.exp(-3.0 * job.step / max(job.steps, 1)) + 0.1

    def _failed(self, job: SimJob, message: str) -> None:
        job.error = {"code": "invalid_training_file", "message": message, "param": "training_file"}
        self._set_status(job, "failed")
        job.finished_at = int(time.time())
        self._event(job, message, level="error")

    @staticmethod
    def _set_status(job: SimJob, status: str) -> None:
        job.status = status
        job.polls_in_status = 0
        job.status_since = time.monotonic()

    def _event(self, job: SimJob, message: str, *, level: str = "info") -> None:
        job.events.append(
            {
                "id": f"ftevent-sim{next(self._event_numbers):08d}",
                "object": "fine_tuning.job.event",
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "data": {},
                "type": "message",
            }
        )

    def _fail(self, reply: tuple[int, dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        self.counters[str(reply[0])] += 1
        return reply


def _page(items: list[dict[str, Any]], *, limit: int, after: str | None) -> dict[str, Any]:
    """A cursor page: the items after the one with id ``after`` (all if None)."""
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    chosen = items[start : start + limit]
    return {"object": "list", "data": chosen, "has_more": start + limit < len(items)}


def preset_for(
    filename: str, base_model: str, *, presets: Mapping[str, str], default_preset: str
) -> str:
    """Simulator preset of a fine-tuned model (see the module docstring)."""
    name = filename.lower()
    for fragment in sorted(presets, key=len, reverse=True):
        if fragment.lower() in name:
            return presets[fragment]
    if base_model.startswith("sim-"):
        return base_model.removeprefix("sim-")
    return default_preset


__all__ = [
    "AUTO_HYPERPARAMETERS",
    "FILE_PURPOSES",
    "PROGRESSION",
    "TERMINAL_STATUSES",
    "FineTuningService",
    "FineTuningSettings",
    "SimFile",
    "SimJob",
    "check_training_file",
    "parse_multipart",
    "preset_for",
]
