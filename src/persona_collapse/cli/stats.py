"""Statistical commands: difference tests, estimator audit, power and budget planning."""

from __future__ import annotations
