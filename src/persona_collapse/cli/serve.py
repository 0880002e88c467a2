"""Serving the simulator over an OpenAI-compatible HTTP API."""

from __future__ import annotations
