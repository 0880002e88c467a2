"""Study commands: run, status and report a multi-variant study; reproduce the paper."""

from __future__ import annotations
