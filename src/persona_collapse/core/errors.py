"""Exception types. Errors a user can fix derive from :class:`UserError`.

The CLI prints a :class:`UserError` as one line, without a traceback, and exits
with status 2. Library code raises them; it never prints.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class PersonaCollapseError(Exception):
    """Base class of every exception raised on purpose by this package."""


class UserError(PersonaCollapseError):
    """Bad input the user can fix (a file, a field, a name). CLI exit status 2."""

    exit_code = 2


class InputFileError(UserError):
    """A file the user gave is missing, empty or malformed.

    The message names the file and, where it applies, the line or field.
    """

    def __init__(self, path: object, problem: str, *, line: int | None = None) -> None:
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


class TooFewPersonasError(UserError, ValueError):
    """Fewer than two personas have a valid rating on every item, so S cannot be computed.

    Also a :class:`ValueError`, which the metric functions raise for bad arrays.
    """

    def __init__(self, complete: int, total: int, *, where: str = "") -> None:
        prefix = f"{where}: " if where else ""
        super().__init__(
            f"{prefix}only {complete} of {total} personas are complete; S and R need at "
            "least 2 personas with a valid rating on every item (collect more answers, "
            "or check why the replies do not parse)"
        )
        self.complete = complete
        self.total = total


class ConfigError(UserError):
    """An invalid configuration value, instrument definition or study file."""


class UnknownNameError(UserError):
    """An unknown name (backend, preset, persona set, run...) with suggestions."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known_list = sorted(known)
        message = f"unknown {kind} {name!r}"
        close = difflib.get_close_matches(name, known_list, n=3, cutoff=0.5)
        hint = did_you_mean(name, known_list)
        if hint:
            message += f"; {hint}"
        elif known_list:
            message += "; known: " + ", ".join(known_list)
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.suggestions = close


class StoreError(UserError):
    """A run store that cannot be opened, is corrupt or has an unsupported schema."""


class StoreCorruptError(StoreError):
    """A store file whose pages are damaged (SQLite reports it malformed)."""

    def __init__(self, path: object, kind: str, detail: object) -> None:
        super().__init__(
            f"{path}: the {kind} file is damaged ({detail}); see what is wrong with "
            f"'pcollapse store check {path}' and save the answers still readable with "
            f"'pcollapse store salvage {path} OUT.csv'"
        )
        self.path = path


class MissingDependencyError(UserError):
    """An optional dependency is not installed; the message gives the install hint."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this feature needs the optional package {package!r}; "
            f"install it with: pip install 'persona-collapse[{extra}]'"
        )


class BackendError(PersonaCollapseError):
    """A backend failed in a way that retrying will not fix.

    ``resumable`` says that running the same command again may succeed (the failure
    was transient: the engine ran out of retries); otherwise the cause (a refused
    key, an unknown model, a rejected request) must be fixed first.
    """

    def __init__(self, message: str, *, resumable: bool = False) -> None:
        super().__init__(message)
        self.resumable = resumable


class TransientBackendError(BackendError):
    """A backend failure worth retrying (rate limit, timeout, 5xx).

    ``retry_after`` is the delay in seconds the server asked for, if any;
    ``rate_limited`` says the server refused for rate limiting (the engine then
    lowers its concurrency).
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, rate_limited: bool = False
    ) -> None:
        super().__init__(message, resumable=True)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """``did you mean 'a' or 'b'?`` for the known names close to ``name``; None if none is."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return "did you mean " + " or ".join(repr(c) for c in close) + "?" if close else None


def format_validation_error(
    exc: ValidationError,
    *,
    what: str = "field",
    known: Sequence[str] | None = None,
    source: str | None = None,
    prefix: tuple[str | int, ...] = (),
    keys_at: Callable[[tuple[str | int, ...]], Sequence[str] | None] | None = None,
) -> str:
    """One line naming the offending field of a pydantic error, what was wrong and the fix.

    The one formatter of validation errors (config and study files, recipes, backend
    options, server requests). An unknown key is reported before anything else: a
    misspelt key also makes the real one missing, and the did-you-mean names the fix.
    Wrapper levels of root models (``root``) are left out of the field's path.

    Args:
        exc: The pydantic error.
        what: What the fields are (``field``, ``simulator parameter``...).
        known: Accepted names, when they form one closed list (backend parameters): an
            unknown one is answered with all of them and a "did you mean".
        source: The file (or other origin) to start the line with.
        prefix: Where in the source the validated data sit (``("verify",)``).
        keys_at: The keys allowed at a path of the source (``prefix`` included; None
            when not known): an unknown key gets a "did you mean" among them, or
            "remove it", and the list.
    """
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    path = (*prefix, *(p for p in err["loc"] if p != "root"))
    where = ".".join(str(p) for p in path) or "(top level)"
    head = f"{source}: " if source else ""
    kind = err["type"]
    if kind == "extra_forbidden":
        name = str(path[-1]) if path else ""
        if known is not None:
            message = f"unknown {what} {where!r}; known: {', '.join(known)}"
            hint = did_you_mean(name, known)
            return head + message + (f"; {hint}" if hint else "")
        allowed = sorted(keys_at(path[:-1]) or ()) if keys_at is not None else []
        hint = did_you_mean(name, allowed) or "remove it"
        listed = f" (allowed keys: {', '.join(allowed)})" if allowed else ""
        return f"{head}{what} {where!r}: unknown key; {hint}{listed}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        return f"{head}{what} {where!r}: {msg}; add it"
    got = "" if kind.startswith("value_error") else f" (got {_short(err.get('input'))})"
    return f"{head}{what} {where!r}: {msg}{got}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
