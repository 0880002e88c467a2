"""API keys: read them from the environment once, and scrub them from any text we keep.

Every key the package reads goes through :func:`read_key`, which remembers its value
for this process. :func:`scrub` then replaces those values, and anything shaped like
a credential (``Bearer <token>``, ``sk-...``), in replies, error messages and
metadata before they are stored, logged or raised. The stores call it on every value
they write (:class:`persona_collapse.store.base.SQLiteStore`), so a server that
echoes the request's ``Authorization`` header cannot get the key into a store,
export or report.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

MASK = "***"

_LOOKS_LIKE_KEY = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{8,}")
# "Bearer" followed by a token-shaped word (no spaces; 8+ characters), so prose such as
# "the bearer of bad news" is left alone.
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=\-]{8,}")
# Keys shorter than this are not scrubbed by value: replacing every "abc" in a reply
# would corrupt it without protecting anything.
_MIN_KEY_LENGTH = 8

_lock = threading.Lock()
_known: set[str] = set()


def remember(value: str) -> None:
    """Scrub ``value`` from every text from now on (this process)."""
    if len(value) >= _MIN_KEY_LENGTH:
        with _lock:
            _known.add(value)


def read_key(variable: str | None) -> str:
    """The key in environment variable ``variable`` ("" if unset or None), remembered."""
    if not variable:
        return ""
    value = os.environ.get(variable, "")
    remember(value)
    return value


def scrub(text: str) -> str:
    """``text`` with known keys, ``Bearer <token>`` and ``sk-...`` shapes masked."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for key in known:
        if key in text:
            text = text.replace(key, MASK)
    # Substring tests first: the stores call this for every value they write.
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(rf"\1\2{MASK}", text)
    if "k-" in text:
        text = _LOOKS_LIKE_KEY.sub(rf"\1-{MASK}", text)
    return text


def scrub_value(value: Any) -> Any:
    """:func:`scrub` applied to a string; any other value unchanged."""
    return scrub(value) if isinstance(value, str) else value


__all__ = ["MASK", "read_key", "remember", "scrub", "scrub_value"]
