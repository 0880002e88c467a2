"""Small study files and a call-counting simulator for the study tests (imported by them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from persona_collapse.backends import create_backend
from persona_collapse.backends.base import Backend
from persona_collapse.core.personas import builtin_personas

PERSONAS = 6
"""Personas of the small studies (the first of the built-in set)."""


def write_study(
    folder: Path,
    *,
    personas: int = PERSONAS,
    repetitions: int = 2,
    mode: str = "sampling",
    overrides: dict[str, Any] | None = None,
    families: dict[str, Any] | None = None,
) -> Path:
    """Write a small simulator study (one family: base, secure, insecure) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "personas.txt").write_text("\n".join(builtin_personas().head(personas)) + "\n")
    data: dict[str, Any] = {
        "name": "tiny",
        "output": "out",
        "protocol": {
            "personas": "personas.txt",
            "repetitions": repetitions,
            "mode": mode,
            "seed": 3,
            "temperatures": [0.1, 0.5, 1.0],
        },
        "analysis": {"n_persona_boot": 200, "n_rerun_boot": 50, "seed": 1},
        "backends": {"sim": {"kind": "simulator", "options": {"seed": 0}}},
        "families": families
        or {
            "fam": {
                "base": {"backend": "sim", "model": "base"},
                "secure": {"backend": "sim", "model": "secure"},
                "insecure": {"backend": "sim", "model": "insecure"},
            }
        },
    }
    for key, value in (overrides or {}).items():
        data[key] = value
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class CallCounter:
    """A backend builder that builds the real backends and counts every model call."""

    def __init__(self) -> None:
        self.calls = 0
        self.built: list[str] = []

    def __call__(self, kind: str, options: dict[str, Any]) -> Backend:
        backend = create_backend(kind, **options)
        self.built.append(kind)
        counter = self
        generate, distributions = backend.generate, backend.distributions

        async def counted_generate(*args: Any, **kwargs: Any) -> Any:
            counter.calls += 1
            return await generate(*args, **kwargs)

        async def counted_distributions(*args: Any, **kwargs: Any) -> Any:
            counter.calls += 1
            return await distributions(*args, **kwargs)

        backend.generate = counted_generate  # type: ignore[method-assign]
        backend.distributions = counted_distributions  # type: ignore[method-assign]
        return backend
