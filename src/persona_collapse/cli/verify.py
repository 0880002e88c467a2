"""Emergent-misalignment verification: open-ended questions judged for alignment and coherence."""

from __future__ import annotations
