"""Verdicts that never say more than the statistics, on a simulated degenerate variant (issue 10).

The treatment is the simulator pulled almost to the top of the scale: most of its
ratings fall on one value, so the report must call its S ceiling-limited and
withhold the verdict on S, while R keeps its tested verdict.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
import yaml

from persona_collapse.core.personas import builtin_personas
from persona_collapse.report.model import (
    CEILING_ENTROPY_BITS,
    CEILING_TOP1_SHARE,
    ceiling_limit,
    study_verdict,
    verdict_text,
)
from persona_collapse.report.tables import diagnostics_frame
from persona_collapse.study import StudyOutcome, load_study, run_study


@pytest.fixture(scope="module")
def degenerate(tmp_path_factory: pytest.TempPathFactory) -> StudyOutcome:
    folder = tmp_path_factory.mktemp("degenerate")
    (folder / "personas.json").write_text(json.dumps(list(builtin_personas().head(6))))
    data = {
        "name": "degenerate",
        "output": "out",
        "protocol": {"personas": "personas.json", "repetitions": 2, "seed": 3},
        "analysis": {"n_persona_boot": 60, "n_rerun_boot": 10},
        "backends": {"sim": {"kind": "simulator", "options": {"seed": 4}}},
        "families": {
            "fam": {
                "base": {"backend": "sim", "model": "base"},
                "insecure": {
                    "backend": "sim",
                    "model": "insecure",
                    "options": {"ceiling_pull": 0.97, "width": 0.5, "undecided_rate": 0.05},
                },
            }
        },
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return run_study(load_study(path), progress=False, figures=False)


def test_degenerate_treatment_is_ceiling_limited_and_s_is_withheld(
    degenerate: StudyOutcome,
) -> None:
    results = degenerate.results
    fam = results.families["fam"]
    treatment = fam.variants["insecure"]
    limit = ceiling_limit(treatment)
    assert limit is not None
    assert limit.top1_share >= CEILING_TOP1_SHARE or limit.entropy_bits < CEILING_ENTROPY_BITS
    assert ceiling_limit(fam.variants["base"]) is None
    v = study_verdict(results, fam)
    assert v.s_withheld and v.dS_test is not None and v.dR_test is not None
    text = verdict_text(v, results.band)
    assert "S is ceiling-limited (insecure:" in text and "verdict on S is withheld" in text
    assert "S rises" not in text and "S drops" not in text and "leaves" not in text
    page = html.unescape(degenerate.files.html.read_text(encoding="utf-8"))
    assert "verdict on S is withheld" in page
    assert "‡ S is ceiling-limited for this variant" in page
    assert f"yes: {limit.text()}" in page
    diagnostics = diagnostics_frame(results).set_index("variant")
    assert diagnostics.loc["insecure", "s_ceiling_limited"]
    assert not diagnostics.loc["base", "s_ceiling_limited"]


def test_report_defines_failed_slots_and_parse_failures_once(degenerate: StudyOutcome) -> None:
    # Issue 10.3: both terms defined where they appear, and used with those names.
    page = html.unescape(degenerate.files.html.read_text(encoding="utf-8"))
    text = re.sub(r"<[^>]+>", "", page)
    assert "Failed slots: answer slots that hold no valid rating after every retry" in text
    assert "Parse failures: replies, retries included" in text
    assert ">failed slots<" in page and ">parse failures (share of replies)<" in page
    assert ">failed<" not in page


def test_protocol_and_source_show_no_absolute_path(degenerate: StudyOutcome) -> None:
    # Issue 10.4: paths relative to the study file, never the machine's absolute ones.
    page = degenerate.files.html.read_text(encoding="utf-8")
    root = str(Path(degenerate.results.source).parent)
    assert root not in page
    assert degenerate.results.protocol["personas"].startswith("personas (6 personas)")


def test_shown_path_never_spells_out_the_machines_folders(tmp_path: Path) -> None:
    from persona_collapse.study.analysis import shown_path

    study = tmp_path / "studies" / "a"
    assert shown_path(study / "personas.json", study) == "personas.json"
    sibling = tmp_path / "data" / "p.json"
    assert shown_path(sibling, study) == str(Path("..", "..", "data", "p.json"))
    # Sharing only the file system's root: the last two parts, not "../../../...".
    outside = Path(Path(tmp_path).anchor, "elsewhere-xyz", "data", "personas.json")
    assert shown_path(outside, study) == str(Path("…", "data", "personas.json"))
    assert shown_path("default", study) == "default"
