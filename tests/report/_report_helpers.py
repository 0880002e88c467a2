"""A small study whose persona file, family name and description carry HTML/JS payloads."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from persona_collapse.core.personas import builtin_personas

SCRIPT_PAYLOAD = '<script>window.__pwned = 1; document.title = "pwned";</script>'
IMG_PAYLOAD = "<img src=x onerror=\"window.__pwned = 2; document.title = 'pwned'\">"
HOSTILE_PERSONA = f"A hacker {SCRIPT_PAYLOAD} who signs every post with {IMG_PAYLOAD} & more."
HOSTILE_FAMILY = "fam<img src=y onerror=alert(3)>"
HOSTILE_DESCRIPTION = "<b>bold</b> <script>window.__pwned = 4</script> & <i>friends</i>"


def write_hostile_study(folder: Path) -> Path:
    """One family (base, secure, insecure) on the simulator, five personas, one of them hostile."""
    folder.mkdir(parents=True, exist_ok=True)
    personas = [HOSTILE_PERSONA, *builtin_personas().head(4)]
    (folder / "personas.json").write_text(json.dumps(personas, ensure_ascii=False))
    variants = {
        "base": {"backend": "sim", "model": "base"},
        "secure": {"backend": "sim", "model": "secure"},
        "insecure": {"backend": "sim", "model": "insecure"},
    }
    data = {
        "name": "hostile",
        "description": HOSTILE_DESCRIPTION,
        "output": "out",
        "protocol": {"personas": "personas.json", "repetitions": 2, "seed": 1},
        "analysis": {"n_persona_boot": 100, "n_rerun_boot": 20},
        "backends": {"sim": {"kind": "simulator", "options": {"seed": 2}}},
        "families": {HOSTILE_FAMILY: variants, "plain": variants},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path
