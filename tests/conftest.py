"""Shared fixtures. Tests needing the paper's reference data skip when it is absent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference" / "costa2026-persona-collapse"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Folder of the arXiv 2605.12850 reference data, or skip the test."""
    if not (REFERENCE_DIR / "expected.json").is_file():
        pytest.skip(
            f"reference data not found at {REFERENCE_DIR} "
            "(../shared is only present in CI and developer checkouts)"
        )
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def reference_expected(reference_dir: Path) -> dict[str, Any]:
    """Parsed ``expected.json`` of the reference data."""
    data: dict[str, Any] = json.loads((reference_dir / "expected.json").read_text())
    return data
