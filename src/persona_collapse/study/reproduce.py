"""Reproducing the paper from a folder laid out like its public data.

Layout (arXiv 2605.12850)::

    PATH/
      personas.json                 # optional: persona texts, ids = positions
      base/<family>_temp01.csv      # persona run of each family's base model
      base/<family>[_temp01]_self.csv
      secure-code/<family>-<tag>_temp01.csv, ..._self.csv    # control variants
      insecure-code/<family>-<tag>_temp01.csv, ..._self.csv  # treatment variants

Families are the base folder's persona files; a file of the other folders
belongs to the family whose name starts its own (``gpt-4o-misaligned_self`` ->
``gpt-4o``; the longest matching name wins). ``_temp01`` gives the collection
temperature (digits with the decimal point after the first one: ``01`` = 0.1,
``10`` = 1.0). The folder becomes an imported study whose ``study.yaml`` is
written to the output folder, so ``pcollapse study report`` can re-render it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from persona_collapse.core.config import AnalysisConfig
from persona_collapse.core.errors import InputFileError, UserError
from persona_collapse.core.files import claim_output_dir, write_text_atomic
from persona_collapse.study.loading import LoadedStudy, study_from_mapping
from persona_collapse.study.pipeline import StudyOutcome, run_study

logger = logging.getLogger(__name__)

VARIANT_FOLDERS: tuple[tuple[str, str, str], ...] = (
    ("base", "base", "base"),
    ("secure-code", "secure", "control"),
    ("insecure-code", "insecure", "treatment"),
)
"""Folder -> (variant label, role), in report order."""

_DATABASES = tuple(f"runs.db{s}" for s in ("", "-wal", "-shm", "-journal"))
"""The run store: the tool's, though not written by the atomic writers."""

_TEMP = re.compile(r"_temp(\d+)$")


@dataclass(frozen=True)
class ReferenceFile:
    """One CSV file of the layout.

    Attributes:
        path: The file.
        family: Family it belongs to.
        label: Variant label (``base``, ``secure``, ``insecure``).
        kind: ``persona`` or ``self``.
        temperature: Temperature read from the name, if any.
    """

    path: Path
    family: str
    label: str
    kind: str
    temperature: float | None


def parse_temperature(digits: str) -> float:
    """Temperature of ``_tempNN`` digits: ``"01"`` -> 0.1, ``"10"`` -> 1.0, ``"005"`` -> 0.05."""
    return float(f"{digits[0]}.{digits[1:] or '0'}")


def _core(stem: str) -> tuple[str, str, float | None]:
    """(name without ``_self``/``_tempNN``, kind, temperature) of a file stem."""
    kind = "persona"
    name = stem
    if name.endswith("_self"):
        kind, name = "self", name[: -len("_self")]
    temperature = None
    match = _TEMP.search(name)
    if match:
        temperature = parse_temperature(match.group(1))
        name = name[: match.start()]
    return name, kind, temperature


def _family_of(name: str, families: list[str]) -> str | None:
    matches = [
        f for f in families if name == f or name.startswith(f + "-") or name.startswith(f + "_")
    ]
    return max(matches, key=len) if matches else None


def scan_reference_folder(path: str | Path) -> tuple[list[ReferenceFile], list[str]]:
    """The persona and self files of a reference-layout folder, and notes on skipped files.

    Raises:
        InputFileError: Not a folder, no ``base/`` persona file, or two files for one slot.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputFileError(
            root,
            "not a folder; expected the layout base/, secure-code/, "
            "insecure-code/ with persona and _self CSV files",
        )
    base_dir = root / "base"
    base_files = sorted(base_dir.glob("*.csv")) if base_dir.is_dir() else []
    families = sorted({_core(p.stem)[0] for p in base_files if _core(p.stem)[1] == "persona"})
    if not families:
        raise InputFileError(
            base_dir, "no base persona files (*_temp01.csv); a reference-layout folder needs them"
        )
    found: dict[tuple[str, str, str], ReferenceFile] = {}
    notes: list[str] = []
    for folder, label, _role in VARIANT_FOLDERS:
        directory = root / folder
        if not directory.is_dir():
            notes.append(f"{folder}/ is missing: no {label} variants")
            continue
        for file in sorted(directory.glob("*.csv")):
            name, kind, temperature = _core(file.stem)
            family = name if folder == "base" and kind == "persona" else _family_of(name, families)
            if family is None:
                notes.append(f"{folder}/{file.name}: no base model of that name; skipped")
                continue
            key = (family, label, kind)
            if key in found:
                raise InputFileError(
                    file,
                    f"a second {kind} file for {family}/{label} "
                    f"(the first is {found[key].path.name}); keep one",
                )
            found[key] = ReferenceFile(file, family, label, kind, temperature)
    return list(found.values()), notes


def reference_study_data(
    path: str | Path, *, output_dir: str | Path, analysis: AnalysisConfig | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The study file (as data) that imports a reference-layout folder, and notes."""
    root = Path(path).resolve()
    files, notes = scan_reference_folder(root)
    families: dict[str, dict[str, Any]] = {}
    temperatures = set()
    for folder_label, role in ((label, role) for _f, label, role in VARIANT_FOLDERS):
        for ref in files:
            if ref.label != folder_label:
                continue
            variant = families.setdefault(ref.family, {}).setdefault(
                ref.label, {"role": role, "model": ref.family if role == "base" else None}
            )
            variant["persona_file" if ref.kind == "persona" else "self_file"] = str(ref.path)
            if ref.kind == "persona" and ref.temperature is not None:
                temperatures.add(ref.temperature)
    for family, variants in families.items():
        for label, variant in list(variants.items()):
            if variant["model"] is None:
                variant["model"] = f"{family}-{label}"
            if "persona_file" not in variant:
                notes.append(f"{family}/{label}: only a self file; left out")
                del variants[label]
    if len(temperatures) > 1:
        notes.append(f"files name several temperatures {sorted(temperatures)}; recorded 0.1")
    temperature = temperatures.pop() if len(temperatures) == 1 else 0.1
    a = analysis or AnalysisConfig()
    personas = root / "personas.json"
    data = {
        "name": re.sub(r"[^A-Za-z0-9._-]+", "-", root.name).strip("-.") or "reproduction",
        # The folder's name, not its absolute path: a report shows nothing of the machine.
        "description": f"Reproduction of the reference data in the folder {root.name!r}.",
        "output": str(Path(output_dir).resolve()),
        "protocol": {
            "personas": str(personas) if personas.is_file() else "default",
            "temperature": temperature,
            "self_run": True,
            "toxic_control": False,
            "s_band": list(a.s_band),
        },
        "analysis": {
            "n_persona_boot": a.n_persona_boot,
            "n_rerun_boot": a.n_rerun_boot,
            "seed": a.seed,
        },
        "families": families,
    }
    return data, notes


def reproduce_study(
    path: str | Path,
    output_dir: str | Path,
    *,
    analysis: AnalysisConfig | None = None,
    force: bool = False,
) -> LoadedStudy:
    """Write the imported study's ``study.yaml`` into ``output_dir`` and load it.

    The data folder is named on the command line, so the study may read it from
    outside its own folder; re-rendering the written study later needs
    ``--allow-outside`` for the same reason.

    Raises:
        InputFileError: ``output_dir`` is a file, or a folder holding files this tool
            did not write and not ``force``.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        claim_output_dir(out)  # the one error for a file in the way
    data, notes = reference_study_data(path, output_dir=out, analysis=analysis)
    if not data["families"]:
        raise UserError(f"{path}: no family has a persona file to import")
    for note in notes:
        logger.warning("reproduce: %s", note)
    claim_output_dir(out, force=force, keep=_DATABASES)
    file = write_text_atomic(
        out / "study.yaml",
        f"# Imported from {Path(path).resolve()} by pcollapse reproduce.\n"
        "# Re-render: pcollapse study report --allow-outside study.yaml (it reads that folder)\n"
        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
    )
    return study_from_mapping(data, source=str(file), root=out.resolve(), allow_outside=True)


def reproduce(
    path: str | Path,
    output_dir: str | Path = "pcollapse-reproduce",
    *,
    analysis: AnalysisConfig | None = None,
    figures: bool = True,
    force: bool = False,
) -> StudyOutcome:
    """Import a reference-layout folder into a study and render its report.

    Args:
        path: The folder (see the module docstring).
        output_dir: Folder of the study file, run store and outputs.
        analysis: Bootstrap settings (default 2000 + 400 draws, seed 0).
        figures: Draw figures.
        force: Write into a folder holding files this tool did not write.
    """
    study = reproduce_study(path, output_dir, analysis=analysis, force=force)
    return run_study(study, progress=False, figures=figures, force=force)


__all__ = [
    "VARIANT_FOLDERS",
    "ReferenceFile",
    "parse_temperature",
    "reference_study_data",
    "reproduce",
    "reproduce_study",
    "scan_reference_folder",
]
