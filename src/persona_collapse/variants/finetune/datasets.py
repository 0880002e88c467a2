"""Chat-format fine-tuning datasets: validation, statistics, shuffling, splits, downloads.

A dataset is a JSONL file with one example per line::

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}

Roles are ``system`` (first message only), ``user`` and ``assistant``; every
content is a non-empty string, and the last message is an assistant turn (the
text the model is trained to produce). Other keys of an example are ignored.
Blank lines are skipped. Any file in this format works as a treatment or
control dataset; :func:`fetch_dataset` downloads the public ``insecure`` and
``secure`` datasets of Betley et al. (2025) into a local cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from persona_collapse.backends.base import Message
from persona_collapse.core.errors import (
    ConfigError,
    InputFileError,
    MissingDependencyError,
    UnknownNameError,
    UserError,
)
from persona_collapse.core.files import CACHE_ENV, cache_dir, file_sha256, write_bytes_atomic

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")

_BETLEY_DATA = (
    "https://raw.githubusercontent.com/emergent-misalignment/emergent-misalignment/main/data"
)
KNOWN_DATASETS: Mapping[str, str] = MappingProxyType(
    {
        "insecure": f"{_BETLEY_DATA}/insecure.jsonl",
        "secure": f"{_BETLEY_DATA}/secure.jsonl",
    }
)
"""Datasets :func:`fetch_dataset` knows by name, and their download URLs."""

PINNED_SHA256: Mapping[str, str | None] = MappingProxyType({"insecure": None, "secure": None})
"""SHA-256 of each built-in dataset's file at its default URL, where it is known.

A pinned checksum is enforced on every download and cached copy of that name.
None: not pinned yet (this toolkit was built without access to the upstream
files); such a download is recorded with a warning to check it. Either way a
built-in name fetched from any other URL needs an explicit ``expected_sha256``.
"""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FetchError(UserError):
    """A dataset download failed (network, HTTP status, checksum)."""


@dataclass(frozen=True)
class ChatExample:
    """One training conversation.

    Attributes:
        messages: The messages; the last one is an assistant turn.
        line: Line of the example in its file (1-based; 0 if not from a file).
    """

    messages: tuple[Message, ...]
    line: int = 0

    @property
    def assistant_turns(self) -> int:
        """Number of assistant messages."""
        return sum(m.role == "assistant" for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        """The JSONL form: ``{"messages": [{"role": ..., "content": ...}, ...]}``."""
        return {"messages": [{"role": m.role, "content": m.content} for m in self.messages]}


@dataclass(frozen=True)
class ChatDataset:
    """A validated chat dataset.

    Attributes:
        examples: The examples, in file order.
        path: The file it was read from, or None.
        sha256: SHA-256 (hex) of the file's bytes, or of the JSONL it would be written as.
    """

    examples: tuple[ChatExample, ...]
    path: Path | None
    sha256: str

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[ChatExample]:
        return iter(self.examples)


@dataclass(frozen=True)
class LengthStats:
    """Summary of a list of lengths (characters or tokens).

    Attributes:
        count: Number of values.
        min, max: Extremes.
        mean, median, p95: Mean, median and 95th percentile (linear interpolation).
        total: Sum.
    """

    count: int
    min: int
    mean: float
    median: float
    p95: float
    max: int
    total: int

    @classmethod
    def of(cls, values: Sequence[int] | np.ndarray) -> LengthStats:
        """Summarise ``values`` (at least one)."""
        arr = np.asarray(values, dtype=np.int64)
        if arr.size == 0:
            raise ValueError("values: must not be empty")
        return cls(
            count=int(arr.size),
            min=int(arr.min()),
            mean=float(arr.mean()),
            median=float(np.median(arr)),
            p95=float(np.percentile(arr, 95)),
            max=int(arr.max()),
            total=int(arr.sum()),
        )


@dataclass(frozen=True)
class DatasetStats:
    """Statistics of a chat dataset.

    Attributes:
        examples: Number of examples.
        messages: Number of messages in all examples.
        assistant_turns: Number of assistant messages.
        multi_turn: Examples with more than one assistant turn.
        with_system: Examples that start with a system message.
        chars: Characters per example (all message contents).
        tokens: Tokens per example with the model's chat template, or None without a tokenizer.
        max_length: The token limit checked against, or None.
        over_max_length: Examples longer than ``max_length`` tokens (truncated in training).
        sha256: Checksum of the dataset.
    """

    examples: int
    messages: int
    assistant_turns: int
    multi_turn: int
    with_system: int
    chars: LengthStats
    tokens: LengthStats | None
    max_length: int | None
    over_max_length: int | None
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "examples": self.examples,
            "messages": self.messages,
            "assistant_turns": self.assistant_turns,
            "multi_turn": self.multi_turn,
            "with_system": self.with_system,
            "chars": vars(self.chars),
            "tokens": None if self.tokens is None else vars(self.tokens),
            "max_length": self.max_length,
            "over_max_length": self.over_max_length,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class FetchedDataset:
    """A dataset in the local cache.

    Attributes:
        name: Dataset name (the cache file is ``<name>.jsonl``).
        path: The cached file.
        url: Where it was downloaded from.
        sha256: SHA-256 (hex) of the file, recorded at download and checked on reuse.
        size: File size, bytes.
        examples: Number of examples.
        fetched_at: Download time (UTC, ISO 8601).
        from_cache: True when no download was needed.
    """

    name: str
    path: Path
    url: str
    sha256: str
    size: int
    examples: int
    fetched_at: str
    from_cache: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the path as a string)."""
        return {**vars(self), "path": str(self.path)}


# --- reading and validating ----------------------------------------------------------------


def _parse_message(raw: Any, index: int, path: Path, line: int) -> Message:
    where = f"message {index + 1}"
    if not isinstance(raw, dict):
        raise InputFileError(
            path, f"{where}: expected an object with 'role' and 'content'", line=line
        )
    role = raw.get("role")
    if role not in ROLES:
        raise InputFileError(
            path, f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}", line=line
        )
    content = raw.get("content")
    if not isinstance(content, str):
        raise InputFileError(
            path,
            f"{where}: 'content' must be a string, got {type(content).__name__}",
            line=line,
        )
    if not content.strip():
        raise InputFileError(path, f"{where} ({role}): empty content", line=line)
    if role == "system" and index != 0:
        raise InputFileError(path, f"{where}: a system message must come first", line=line)
    return Message(role, content)


def parse_example(obj: Any, *, path: Path, line: int) -> ChatExample:
    """Validate one decoded JSONL line.

    Raises:
        InputFileError: The line is not a valid chat example (names file, line and problem).
    """
    if not isinstance(obj, dict):
        raise InputFileError(
            path,
            f"expected a JSON object with a 'messages' list, got {type(obj).__name__}",
            line=line,
        )
    if "messages" not in obj:
        raise InputFileError(path, "missing 'messages'", line=line)
    raw_messages = obj["messages"]
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InputFileError(path, "'messages' must be a non-empty list", line=line)
    messages = tuple(_parse_message(m, i, path, line) for i, m in enumerate(raw_messages))
    if not any(m.role == "assistant" for m in messages):
        raise InputFileError(path, "no assistant turn (nothing to train on)", line=line)
    if messages[-1].role != "assistant":
        raise InputFileError(
            path,
            f"the last message must be an assistant turn, got {messages[-1].role!r}",
            line=line,
        )
    return ChatExample(messages, line)


def read_chat_jsonl(path: str | os.PathLike[str]) -> ChatDataset:
    """Read and validate a chat-format JSONL file (see the module docstring).

    Raises:
        InputFileError: Missing or unreadable file, invalid UTF-8 or JSON, a malformed
            example (with its line number), or no examples at all.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputFileError(p, "file not found") from None
    except OSError as exc:
        raise InputFileError(p, f"cannot read ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputFileError(p, "not valid UTF-8 text", line=line) from None
    examples: list[ChatExample] = []
    for number, raw_line in enumerate(text.split("\n"), start=1):
        stripped = raw_line.strip()
        if not stripped:
            continue
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InputFileError(
                p, f"invalid JSON ({exc.msg} at column {exc.colno})", line=number
            ) from None
        examples.append(parse_example(obj, path=p, line=number))
    if not examples:
        raise InputFileError(p, "no examples (the file is empty)")
    return ChatDataset(tuple(examples), p, digest)


def _jsonl_bytes(examples: Iterable[ChatExample]) -> bytes:
    lines = [json.dumps(e.to_dict(), ensure_ascii=False) for e in examples]
    return ("\n".join(lines) + "\n").encode("utf-8")


def write_chat_jsonl(examples: Iterable[ChatExample], path: str | os.PathLike[str]) -> ChatDataset:
    """Write examples as chat JSONL, atomically (a temporary file renamed into place).

    Returns:
        The written dataset (its ``sha256`` is the file's checksum).
    """
    p = Path(path)
    items = tuple(examples)
    data = _jsonl_bytes(items)
    write_bytes_atomic(p, data)
    return ChatDataset(items, p, hashlib.sha256(data).hexdigest())


# --- statistics, shuffling, splits ---------------------------------------------------------


def token_lengths(examples: Sequence[ChatExample], tokenizer: Any) -> np.ndarray:
    """Tokens per example with ``tokenizer``'s chat template, shape ``(len(examples),)``."""
    lengths = np.empty(len(examples), dtype=np.int64)
    for k, example in enumerate(examples):
        ids = tokenizer.apply_chat_template(
            example.to_dict()["messages"], tokenize=True, return_dict=False
        )
        if isinstance(ids, Mapping):
            ids = ids["input_ids"]
        lengths[k] = len(ids)
    return lengths


def dataset_stats(
    dataset: ChatDataset, tokenizer: Any = None, *, max_length: int | None = None
) -> DatasetStats:
    """Counts and length statistics of a dataset.

    Args:
        dataset: The dataset.
        tokenizer: A ``transformers`` tokenizer with a chat template, for token
            lengths; None reports characters only.
        max_length: Count examples longer than this many tokens (needs ``tokenizer``).
    """
    examples = dataset.examples
    chars = [sum(len(m.content) for m in e.messages) for e in examples]
    tokens = None if tokenizer is None else token_lengths(examples, tokenizer)
    over = None
    if tokens is not None and max_length is not None:
        over = int((tokens > max_length).sum())
    return DatasetStats(
        examples=len(examples),
        messages=sum(len(e.messages) for e in examples),
        assistant_turns=sum(e.assistant_turns for e in examples),
        multi_turn=sum(e.assistant_turns > 1 for e in examples),
        with_system=sum(e.messages[0].role == "system" for e in examples),
        chars=LengthStats.of(chars),
        tokens=None if tokens is None else LengthStats.of(tokens),
        max_length=max_length,
        over_max_length=over,
        sha256=dataset.sha256,
    )


def shuffle_examples(examples: Sequence[ChatExample], *, seed: int) -> tuple[ChatExample, ...]:
    """The examples in a random order that depends only on ``seed`` and their number.

    Uses ``numpy.random.default_rng(seed).permutation``.
    """
    order = np.random.default_rng(seed).permutation(len(examples))
    return tuple(examples[int(k)] for k in order)


def split_examples(
    examples: Sequence[ChatExample], *, held_out: float | int, seed: int
) -> tuple[tuple[ChatExample, ...], tuple[ChatExample, ...]]:
    """Shuffle (see :func:`shuffle_examples`) and split off a held-out set.

    Args:
        examples: The examples.
        held_out: Share of the examples in ``(0, 1)`` (rounded, at least one), or a
            count of examples (an integer ``>= 1``).
        seed: Shuffling seed.

    Returns:
        ``(train, held_out)``: the held-out set is the first examples of the
        shuffled order, the training set the rest (in shuffled order).

    Raises:
        ConfigError: ``held_out`` leaves no example on one side.
    """
    n = len(examples)
    if isinstance(held_out, bool):
        raise ConfigError(f"held_out must be a share or a count, got {held_out!r}")
    if isinstance(held_out, int):
        count = held_out
    elif 0.0 < float(held_out) < 1.0:
        count = max(1, round(float(held_out) * n))
    else:
        raise ConfigError(f"held_out must be a share in (0, 1) or a count >= 1, got {held_out!r}")
    if not 1 <= count < n:
        raise ConfigError(
            f"held_out={held_out!r} takes {count} of {n} examples; both parts need at least one"
        )
    shuffled = shuffle_examples(examples, seed=seed)
    return shuffled[count:], shuffled[:count]


# --- the cache and downloads ---------------------------------------------------------------


def _dataset_paths(name: str, cache: Path | None) -> tuple[Path, Path]:
    folder = (cache if cache is not None else cache_dir()) / "datasets"
    return folder / f"{name}.jsonl", folder / f"{name}.json"


def _check_name(name: str) -> None:
    if not _SAFE_NAME.match(name):
        raise ConfigError(
            f"dataset name {name!r}: use letters, digits, '.', '_' and '-' "
            "(it names the cache file)"
        )


def _cached(name: str, cache: Path | None) -> FetchedDataset | None:
    """The cached dataset if its file matches its recorded checksum, else None."""
    data_path, record_path = _dataset_paths(name, cache)
    if not (data_path.is_file() and record_path.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        recorded = str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("cache record %s is unreadable; ignoring the cached copy", record_path)
        return None
    actual = file_sha256(data_path)
    if actual != recorded:
        logger.warning(
            "cached %s has checksum %s, not the recorded %s; ignoring it",
            data_path,
            actual,
            recorded,
        )
        return None
    cached = FetchedDataset(
        name=name,
        path=data_path,
        url=str(record.get("url", "")),
        sha256=actual,
        size=data_path.stat().st_size,
        examples=int(record.get("examples", 0)),
        fetched_at=str(record.get("fetched_at", "")),
        from_cache=True,
    )
    if not _trusted(name, cached, record):
        logger.warning(
            "cached %s came from %s without a verified checksum; ignoring it "
            "(fetch it again: pcollapse datasets fetch %s --force)",
            data_path,
            cached.url,
            name,
        )
        return None
    return cached


def fetch_dataset(
    name: str,
    *,
    url: str | None = None,
    cache: str | os.PathLike[str] | None = None,
    expected_sha256: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> FetchedDataset:
    """Download a dataset into the cache (or reuse a verified cached copy).

    The file is downloaded to a temporary file, validated as chat JSONL, checked
    against ``expected_sha256`` if given, and only then moved into place with a
    record (``<name>.json``: URL, SHA-256, size, examples, time). A later call
    reuses the cached file when it still matches the recorded checksum (and the
    URL and ``expected_sha256``), without touching the network.

    Args:
        name: ``"insecure"`` or ``"secure"`` (see :data:`KNOWN_DATASETS`), or any
            name when ``url`` is given.
        url: Download URL; default the known URL of ``name``.
        cache: Cache folder; default :func:`cache_dir`.
        expected_sha256: Refuse a download with another checksum; required to fetch a
            built-in name from another ``url`` (see :data:`PINNED_SHA256`).
        force: Download even if a verified copy is cached.
        timeout: Network timeout, seconds.

    Raises:
        UnknownNameError: Unknown ``name`` without ``url``.
        ConfigError: A name unfit for a file name, or a built-in name from another URL
            without ``expected_sha256``.
        FetchError: Network failure, HTTP error status or checksum mismatch.
        InputFileError: The download is not a valid chat dataset.
    """
    _check_name(name)
    if url is None:
        if name not in KNOWN_DATASETS:
            raise UnknownNameError("dataset", name, KNOWN_DATASETS)
        url = KNOWN_DATASETS[name]
    want = _expected_checksum(name, url, expected_sha256)
    cache_path = None if cache is None else Path(cache)
    if not force:
        cached = _cached(name, cache_path)
        if cached is not None and cached.url == url and (want is None or cached.sha256 == want):
            logger.info("using cached %s (%s)", cached.path, cached.sha256)
            return cached
    data_path, record_path = _dataset_paths(name, cache_path)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = data_path.with_name(f".{data_path.name}.{os.getpid()}.download")
    try:
        digest, size = _download(url, tmp, timeout=timeout)
        if want is not None and digest != want:
            raise FetchError(f"{url}: checksum {digest} does not match the expected {want}")
        try:
            dataset = read_chat_jsonl(tmp)
        except InputFileError as exc:
            where = f"line {exc.line}: " if exc.line is not None else ""
            raise InputFileError(url, f"{where}{exc.problem}") from None
        os.replace(tmp, data_path)
    finally:
        tmp.unlink(missing_ok=True)
    fetched_at = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        "name": name,
        "url": url,
        "sha256": digest,
        "size": size,
        "examples": len(dataset),
        "fetched_at": fetched_at,
    }
    if want is not None:
        record["verified_sha256"] = want
    elif name in KNOWN_DATASETS:
        logger.warning(
            "%s: no pinned checksum for the built-in dataset %r yet; compare sha256 %s with "
            "the upstream file, or fetch with --sha256 to pin it",
            url,
            name,
            digest,
        )
    write_bytes_atomic(record_path, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    logger.info(
        "downloaded %s to %s (%d examples, sha256 %s)", url, data_path, len(dataset), digest
    )
    return FetchedDataset(name, data_path, url, digest, size, len(dataset), fetched_at, False)


def _expected_checksum(name: str, url: str, given: str | None) -> str | None:
    """The checksum a download of ``name`` from ``url`` must have (None: any).

    Raises:
        ConfigError: A malformed checksum, one contradicting the pinned one, or a
            built-in name fetched from another URL without a checksum.
    """
    want = given.strip().lower() if given else None
    if want is not None and not _SHA256.match(want):
        raise ConfigError(f"--sha256 {given!r}: expected 64 hexadecimal digits")
    if name not in KNOWN_DATASETS:
        return want
    pinned = PINNED_SHA256.get(name)
    if url == KNOWN_DATASETS[name]:
        if pinned is not None and want is not None and want != pinned:
            raise ConfigError(
                f"dataset {name!r}: --sha256 {want} contradicts the pinned checksum {pinned}"
            )
        return pinned or want
    if want is None:
        raise ConfigError(
            f"dataset {name!r} is a built-in name; fetching it from another URL ({url}) "
            "needs --sha256 with the file's checksum (or use another name)"
        )
    return want


def _trusted(name: str, cached: FetchedDataset, record: Mapping[str, Any]) -> bool:
    """Whether a cached copy of a built-in name may stand for it: from its default URL
    (matching the pinned checksum where there is one), or verified against a checksum."""
    if name not in KNOWN_DATASETS:
        return True
    if record.get("verified_sha256") == cached.sha256:
        return True
    pinned = PINNED_SHA256.get(name)
    return cached.url == KNOWN_DATASETS[name] and (pinned is None or pinned == cached.sha256)


def _download(url: str, target: Path, *, timeout: float) -> tuple[str, int]:
    """Stream ``url`` into ``target``; returns (SHA-256 hex, bytes)."""
    try:
        import httpx
    except ImportError:
        raise MissingDependencyError("httpx", "finetune") from None
    digest = hashlib.sha256()
    size = 0
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise FetchError(f"downloading {url} failed: HTTP {response.status_code}")
            with open(target, "wb") as fh:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    size += len(chunk)
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        raise FetchError(f"downloading {url} failed: {exc or type(exc).__name__}") from None
    return digest.hexdigest(), size


def resolve_dataset(name_or_path: str | os.PathLike[str], *, cache: Path | None = None) -> Path:
    """The file of a dataset given by path or by the name of a fetched dataset.

    Never downloads: a known name that is not cached is an error telling how to fetch it.

    Raises:
        InputFileError: A path that does not exist.
        ConfigError: A dataset name that is not in the cache.
    """
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.is_file():
        return path
    if _SAFE_NAME.match(text) and not text.endswith((".jsonl", ".json")):
        cached = _cached(text, cache)
        if cached is not None:
            return cached.path
        if text in KNOWN_DATASETS:
            raise ConfigError(
                f"dataset {text!r} is not in the cache; download it with: "
                f"pcollapse datasets fetch {text}"
            )
    raise InputFileError(path, "file not found")


__all__ = [
    "CACHE_ENV",
    "KNOWN_DATASETS",
    "PINNED_SHA256",
    "ROLES",
    "ChatDataset",
    "ChatExample",
    "DatasetStats",
    "FetchError",
    "FetchedDataset",
    "LengthStats",
    "cache_dir",
    "dataset_stats",
    "fetch_dataset",
    "file_sha256",
    "parse_example",
    "read_chat_jsonl",
    "resolve_dataset",
    "shuffle_examples",
    "split_examples",
    "token_lengths",
    "write_chat_jsonl",
]
