"""Producing and verifying variants: datasets, fine-tuning, emergent-misalignment checks."""

from __future__ import annotations
