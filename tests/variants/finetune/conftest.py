"""Fixtures of the fine-tuning tests: a local HTTP server standing in for the dataset host."""

from __future__ import annotations

import functools
import http.server
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _loopback import serve_on_loopback


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A local HTTP server over a folder; yields (base URL, folder, requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve_on_loopback(functools.partial(Handler, directory=str(root))) as url:
        yield url, root, requested
