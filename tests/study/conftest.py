"""Fixtures of the study tests (helpers live in ``_study_helpers``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _study_helpers import CallCounter, write_study


@pytest.fixture
def study_writer() -> Callable[..., Path]:
    return write_study


@pytest.fixture
def call_counter() -> CallCounter:
    return CallCounter()
