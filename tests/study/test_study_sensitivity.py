"""The sensitivity suite of a simulator study: an effect that survives every factor and
one that flips with the template (issue 13.3)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from _study_helpers import CallCounter

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.errors import ConfigError, UserError
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import BUILTIN_TEMPLATES
from persona_collapse.store.sqlite import RunStore
from persona_collapse.study import load_study
from persona_collapse.study.controls import estimate_study
from persona_collapse.study.orchestrate import prepare_study
from persona_collapse.study.pipeline import run_study
from persona_collapse.study.sensitivity import (
    estimate_sensitivity,
    plan_levels,
    plan_sensitivity,
    run_sensitivity,
    sensitivity_status,
)

PERSONAS = 16
# A treatment with twice the base's spread across personas (ΔS > 0) and wider answers (ΔR < 0).
TREATMENT = {"differentiation": 1.6, "width": 3.0}
FRAGILE = {**TREATMENT, "template_shift": {"plain": -1.3}}  # spread 0.3 under 'plain'


def write(folder: Path, treatment: dict[str, Any], sensitivity: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "personas.txt").write_text("\n".join(builtin_personas().head(PERSONAS)) + "\n")
    data = {
        "name": "sens",
        "output": "out",
        "protocol": {
            "personas": "personas.txt",
            "repetitions": 2,
            "seed": 3,
            "self_run": False,
            "toxic_control": False,
        },
        "analysis": {"n_persona_boot": 200, "n_rerun_boot": 20, "seed": 1},
        "backends": {"sim": {"kind": "simulator", "options": {"seed": 0}}},
        "families": {
            "fam": {
                "base": {"backend": "sim", "model": "base"},
                "insecure": {"backend": "sim", "model": "base", "options": treatment},
            }
        },
        "sensitivity": sensitivity,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


ROBUST_SUITE = {
    "templates": ["default", "plain"],  # 'default' is the protocol's: the headline itself
    "orders": 1,
    "personas": {"source": "default", "size": PERSONAS, "samples": 1, "method": "resample"},
    "temperatures": [0.1, 0.3],  # 0.1 is the protocol's
    "seed": 5,
}


@pytest.fixture(scope="module")
def robust(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CallCounter]:
    path = write(tmp_path_factory.mktemp("robust"), TREATMENT, ROBUST_SUITE)
    study = load_study(path)
    # Before anything is collected, the dry run counts the suite's runs too.
    forecast = estimate_sensitivity(study)
    assert len(forecast) == 4 * 2 and all(e.missing == e.units > 0 for _, e in forecast)
    assert len(estimate_study(study)) == 2
    counter = CallCounter()
    run_study(study, backend_builder=counter, progress=False, figures=True, preflight=False)
    return path, counter


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write(tmp_path_factory.mktemp("fragile"), FRAGILE, {"templates": ["plain", "formal"]})
    run_study(load_study(path), progress=False, figures=False, preflight=False)
    return path


def test_a_robust_effect_is_reported_robust(robust: tuple[Path, CallCounter]) -> None:
    path, _ = robust
    out = path.parent / "out"
    record = json.loads((out / "sensitivity" / "robustness.json").read_text())
    assert record["robust"] is True
    conditions = {(r["factor"], r["level"]) for r in record["rows"]}
    assert conditions == {
        ("headline", "protocol"),
        ("template", "plain"),
        ("order", "shuffle 1"),
        ("personas", "sample 1"),
        ("temperature", "0.3"),
    }
    for verdict in record["verdicts"]:
        assert verdict["robust"] and verdict["factors"] == dict.fromkeys(
            ("template", "order", "personas", "temperature"), True
        )
    head = {r["metric"]: r for r in record["rows"] if r["factor"] == "headline"}
    assert head["S"]["estimate"] > 0.3 and head["R"]["estimate"] < -0.3
    assert head["S"]["significant"] and head["R"]["significant"]
    assert (out / "sensitivity" / "robustness.csv").read_text().startswith("family,variant,")
    assert (out / "sensitivity" / "robustness.png").stat().st_size > 0
    html = (out / "report.html").read_text()
    assert "Robustness of the finding" in html and "The finding is robust" in html
    assert html.count("<svg") >= 2  # the robustness figure is embedded


def test_the_headline_is_the_studys_own_significance_test(
    robust: tuple[Path, CallCounter],
) -> None:
    out = robust[0].parent / "out"
    rows = json.loads((out / "sensitivity" / "robustness.json").read_text())["rows"]
    with (out / "significance.csv").open(newline="") as handle:
        study_rows = list(csv.DictReader(handle))
    for metric in ("S", "R"):
        mine = next(r for r in rows if r["factor"] == "headline" and r["metric"] == metric)
        theirs = next(
            r
            for r in study_rows
            if r["contrast"] == "insecure" and r["metric"] == metric and r["scope"] == "overall"
        )
        assert mine["estimate"] == pytest.approx(float(theirs["estimate"]), rel=1e-9)
        assert mine["p_holm"] == pytest.approx(float(theirs["p_holm"]), rel=1e-6, abs=1e-300)


def test_default_levels_reuse_the_studys_runs_and_nothing_is_collected_twice(
    robust: tuple[Path, CallCounter],
) -> None:
    path, counter = robust
    study = load_study(path)
    with RunStore.open(study.config.store_path, create=False) as store:
        names = sorted(r.name for r in store.list_runs())
    suite = [n for n in names if "/sensitivity/" in n]
    assert sorted(set(names) - set(suite)) == ["fam/base", "fam/insecure"]
    assert len(suite) == 8  # 4 non-default levels x 2 variants; none for 'default', T=0.1
    assert not any("default" in n or "0.1" in n for n in suite)
    assert all(p.complete for p in sensitivity_status(study))
    assert all(e.missing == 0 for _, e in estimate_sensitivity(study))
    calls = counter.calls
    run_study(study, backend_builder=counter, progress=False, figures=False, preflight=False)
    assert counter.calls == calls


def test_an_effect_that_flips_with_the_template_is_reported_fragile(fragile: Path) -> None:
    study = load_study(fragile)
    # The truth: S of the treatment is above the base's, except under 'plain'.
    personas = list(builtin_personas().head(PERSONAS))

    def true_s(options: dict[str, Any], template: str) -> float:
        backend = SimulatorBackend("base", template=BUILTIN_TEMPLATES[template], **options)
        return backend.true_metrics(personas, temperature=0.1).S

    for template in ("default", "formal"):
        assert true_s(FRAGILE, template) > 1.5 * true_s({}, template)
    assert true_s(FRAGILE, "plain") < 0.5 * true_s({}, "plain")

    result = run_sensitivity(study)
    assert not result.robust
    s = result.verdict("fam", "insecure", "S")
    assert s.headline.significant and s.headline.estimate > 0
    (failure,) = s.failures
    assert failure.condition.label == "template=plain"
    assert failure.status == "flips" and failure.significant and failure.estimate < 0
    assert s.factor_holds("template") is False
    assert result.verdict("fam", "insecure", "R").robust  # the width effect survives
    html = (fragile.parent / "out" / "report.html").read_text()
    assert "The finding is fragile" in html and "flips under template=plain" in html


def test_levels_are_seeded_and_checked(tmp_path: Path) -> None:
    suite = {"orders": 2, "personas": {"source": "default", "size": 10, "samples": 3}}
    study = load_study(write(tmp_path / "a", TREATMENT, suite))
    inputs, _ = prepare_study(study)
    levels = plan_levels(study, inputs)
    again = plan_levels(load_study(write(tmp_path / "b", TREATMENT, suite)), inputs)
    assert [lv.condition.label for lv in levels] == [
        "order=shuffle 1",
        "order=shuffle 2",
        "personas=sample 1",
        "personas=sample 2",
        "personas=sample 3",
    ]
    orders = [tuple(i.id for i in lv.instrument.items) for lv in levels[:2]]
    assert orders[0] != orders[1]
    assert orders == [tuple(i.id for i in lv.instrument.items) for lv in again[:2]]
    samples = [set(lv.personas) for lv in levels[2:]]
    assert all(len(s) == 10 for s in samples)
    assert not (samples[0] & samples[1]) and not (samples[1] & samples[2])  # disjoint
    assert [set(lv.personas) for lv in again[2:]] == samples
    assert {r.name for r in plan_sensitivity(study)} >= {
        "fam/base/sensitivity/order-shuffle_1",
        "fam/insecure/sensitivity/personas-sample_3",
    }


@pytest.mark.parametrize(
    ("suite", "fragments"),
    [
        ({"templates": ["plian"]}, ["sensitivity.templates[0]", "did you mean 'plain'"]),
        (
            {"personas": {"source": "personas.txt", "size": 40}},
            ["sensitivity.personas", "40 personas", "only 16"],
        ),
        (
            {"personas": {"source": "default", "size": 60, "samples": 2}},
            ["2 disjoint samples of 60 need 120", "method: resample"],
        ),
        ({"personas": {"source": "no_such_set", "size": 4}}, ["sensitivity.personas.source"]),
    ],
)
def test_bad_levels_fail_before_anything_is_collected(
    tmp_path: Path, suite: dict[str, Any], fragments: list[str]
) -> None:
    study = load_study(write(tmp_path, TREATMENT, suite))
    with pytest.raises(ConfigError) as info:
        run_sensitivity(study, collect=True, progress=False, preflight=False)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert not study.config.store_path.exists()


@pytest.mark.parametrize(
    ("suite", "fragment"),
    [
        ({"temperatures": [0.5, 0.5]}, "temperatures must differ"),
        ({"orders": -1}, "orders"),
        ({"templates": ["plain"], "shuffles": 2}, "shuffles"),
        ({"personas": {"size": 1}}, "size"),
        ({"personas": {"size": 4, "method": "bootstrap"}}, "method"),
    ],
)
def test_bad_sensitivity_sections_are_refused(
    tmp_path: Path, suite: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_study(write(tmp_path, TREATMENT, suite))


def test_a_study_without_the_suite_has_no_result(tmp_path: Path) -> None:
    study = load_study(write(tmp_path, TREATMENT, {}))
    assert plan_sensitivity(study) == []
    with pytest.raises(UserError, match="sensitivity"):
        run_sensitivity(study)


def test_a_template_file_is_a_level_and_the_protocols_own_is_the_headline(
    tmp_path: Path,
) -> None:
    (tmp_path / "wording.yaml").write_text(
        "persona_system: 'Act as this person: {persona}'\n", encoding="utf-8"
    )
    suite = {"templates": ["wording.yaml", "default", "interview"]}
    study = load_study(write(tmp_path, TREATMENT, suite))
    inputs, _ = prepare_study(study)
    levels = plan_levels(study, inputs)
    assert [lv.condition.label for lv in levels] == ["template=wording", "template=interview"]
    assert levels[0].template.persona_system == "Act as this person: {persona}"
    assert levels[1].template == BUILTIN_TEMPLATES["interview"]
