"""The demo study: two synthetic families x base/secure/insecure on the simulator.

No network and no keys: each family is the simulator in another simulated world
(``world_seed``), measured with the full protocol (persona runs, self runs and
the toxic-persona control of the base models), plus the persona-specificity
controls: a BFI-44 run on 10 personas and a capability task of 20 arithmetic word
problems generated here (``items_gsm8k.json``). The study file is written into
the output folder, so the demo can be re-run, inspected and edited with the
``pcollapse study`` commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from persona_collapse.core.config import AnalysisConfig
from persona_collapse.core.controls import arithmetic_items, items_json
from persona_collapse.core.files import claim_output_dir, write_text_atomic
from persona_collapse.study.loading import LoadedStudy, study_from_mapping
from persona_collapse.study.pipeline import StudyOutcome, run_study

DEMO_FAMILIES: dict[str, int] = {"sim-a": 0, "sim-b": 1}
"""Demo family name -> the simulator's world seed."""

_DEMO_DATABASES = tuple(
    f"{db}{s}" for db in ("runs.db", "controls.db") for s in ("", "-wal", "-shm", "-journal")
)
"""The demo's run and control stores: the tool's, though not written by the atomic writers."""

DEMO_ITEMS = "items_gsm8k.json"
"""The demo's capability items: our own arithmetic word problems (not reference items)."""

DEMO_CONTROLS: dict[str, Any] = {
    "bfi44": True,
    "max_personas": 10,
    "capability": {"gsm8k": DEMO_ITEMS},
    "repetitions": 10,
}
"""The demo's persona-specificity controls: a small BFI-44 run and a capability task."""

DEMO_VARIANTS: dict[str, str] = {"base": "base", "secure": "control", "insecure": "treatment"}
"""Simulator preset (= variant label) -> role."""


def demo_study_data(
    *,
    max_personas: int | None = None,
    repetitions: int = 10,
    seed: int = 0,
    analysis: AnalysisConfig | None = None,
) -> dict[str, Any]:
    """The demo's study file as plain data (output folder: the file's own folder)."""
    a = analysis or AnalysisConfig(seed=seed)
    protocol: dict[str, Any] = {"repetitions": repetitions, "seed": seed, "s_band": list(a.s_band)}
    if max_personas is not None:
        protocol["max_personas"] = max_personas
    return {
        "name": "demo",
        "description": (
            "Two synthetic model families on the built-in simulator, each as a base model, a "
            "secure-code control and an insecure-code fine-tune: no network, no keys."
        ),
        "output": ".",
        "protocol": protocol,
        "analysis": {
            "n_persona_boot": a.n_persona_boot,
            "n_rerun_boot": a.n_rerun_boot,
            "seed": a.seed,
        },
        "backends": {
            "simulator": {"kind": "simulator", "max_concurrency": 8, "options": {"seed": seed}}
        },
        "controls": dict(DEMO_CONTROLS),
        "families": {
            family: {
                preset: {
                    "backend": "simulator",
                    "model": preset,
                    "role": role,
                    "options": {"world_seed": world},
                }
                for preset, role in DEMO_VARIANTS.items()
            }
            for family, world in DEMO_FAMILIES.items()
        },
    }


def demo_study(
    output_dir: str | Path = "pcollapse-demo",
    *,
    max_personas: int | None = None,
    repetitions: int = 10,
    seed: int = 0,
    analysis: AnalysisConfig | None = None,
    force: bool = False,
) -> LoadedStudy:
    """Write the demo's ``study.yaml`` into ``output_dir`` and load it.

    Raises:
        InputFileError: ``output_dir`` is a file, or a folder holding files this tool
            did not write (a user's ``study.yaml`` is never replaced) and not ``force``.
    """
    out = claim_output_dir(output_dir, force=force, keep=_DEMO_DATABASES)
    data = demo_study_data(
        max_personas=max_personas, repetitions=repetitions, seed=seed, analysis=analysis
    )
    path = write_text_atomic(
        out / "study.yaml",
        "# The demo study (pcollapse demo). Re-run: pcollapse study run study.yaml\n"
        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
    )
    # After study.yaml: a user's study file there stops the demo before anything is written.
    write_text_atomic(out / DEMO_ITEMS, items_json(arithmetic_items(20, seed=seed)))
    return study_from_mapping(data, source=str(path), root=out.resolve())


def run_demo(
    output_dir: str | Path = "pcollapse-demo",
    *,
    max_personas: int | None = None,
    repetitions: int = 10,
    seed: int = 0,
    progress: bool = True,
    analysis: AnalysisConfig | None = None,
    figures: bool = True,
    force: bool = False,
) -> StudyOutcome:
    """Run the demo study end to end (resumes when run again) and write its report.

    Args:
        output_dir: Folder of the study file, run store and outputs.
        max_personas: Use only the first N built-in personas.
        repetitions: Repetitions per persona-item cell.
        seed: Run, simulator and bootstrap seed.
        progress: Show progress bars.
        analysis: Bootstrap settings (default: 2000 + 400 draws seeded with ``seed``).
        figures: Draw figures.
        force: Write into a folder holding files this tool did not write.
    """
    study = demo_study(
        output_dir,
        max_personas=max_personas,
        repetitions=repetitions,
        seed=seed,
        analysis=analysis,
        force=force,
    )
    return run_study(study, progress=progress, figures=figures, force=force)


__all__ = ["DEMO_FAMILIES", "DEMO_VARIANTS", "demo_study", "demo_study_data", "run_demo"]
