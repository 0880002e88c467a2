"""Number formatting shared by the command line and the report (rendering only).

Values are never rounded before this point; these helpers only turn them into text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MISSING = "—"
"""Text shown for a missing or non-finite value."""


def json_safe(value: Any) -> Any:
    """Replace inf/NaN (not valid JSON) by None, recursively (mapping keys become str)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def fmt_pm(value: float | None, se: float | None = None, digits: int = 3) -> str:
    """``value ± se`` with ``digits`` decimals (just the value without a finite SE)."""
    if value is None or not math.isfinite(value):
        return MISSING
    if se is None or not math.isfinite(se):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {se:.{digits}f}"


def fmt_pct(value: float | None, *, typographic: bool = False) -> str:
    """A fraction as a signed percentage (``+55.1 %``); ``typographic`` uses U+2212 for minus."""
    if value is None or not math.isfinite(value):
        return MISSING
    text = f"{100 * value:+.1f} %"
    return text.replace("-", "−") if typographic else text


__all__ = ["MISSING", "fmt_pct", "fmt_pm", "json_safe"]
