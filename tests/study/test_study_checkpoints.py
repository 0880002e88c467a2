"""Study variants with checkpoints: collected once, trajectory outputs written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _study_helpers import CallCounter, write_study

from persona_collapse.core.errors import ConfigError
from persona_collapse.store.sqlite import RunStore
from persona_collapse.study import load_study
from persona_collapse.study.checkpoints import plan_checkpoints
from persona_collapse.study.pipeline import run_study

PERSONAS = 30


def _families(checkpoints: list[dict[str, object]]) -> dict[str, object]:
    return {
        "fam": {
            "base": {"backend": "sim", "model": "base"},
            "secure": {"backend": "sim", "model": "secure"},
            "insecure": {
                "backend": "sim",
                "model": "insecure",
                "final_step": 300,
                "checkpoints": checkpoints,
            },
        }
    }


def test_checkpoints_are_collected_once_and_give_a_trajectory(
    tmp_path: Path, call_counter: CallCounter
) -> None:
    checkpoints = [
        {"step": 100, "model": "base", "options": {"differentiation": 1.2}},
        {"step": 200, "run": "fam/secure"},  # an existing run of the study, reused
    ]
    path = write_study(
        tmp_path,
        personas=PERSONAS,
        overrides={"protocol": {"personas": "personas.txt", "repetitions": 2, "seed": 3,
                                "self_run": False, "toxic_control": False}},
        families=_families(checkpoints),
    )  # fmt: skip
    study = load_study(path)
    outcome = run_study(study, backend_builder=call_counter, progress=False, figures=True)
    # base, secure, insecure and the one collected checkpoint: nothing collected twice.
    with RunStore.open(study.config.store_path, create=False) as store:
        names = sorted(r.name for r in store.list_runs())
    assert names == ["fam/base", "fam/insecure", "fam/insecure/step0100", "fam/secure"]
    out = outcome.output_dir / "trajectory"
    records = json.loads((out / "fam_insecure.json").read_text())
    assert [r["step"] for r in records] == [0, 100, 200, 300]
    assert [r["name"] for r in records] == [
        "fam/base",
        "fam/insecure/step0100",
        "fam/secure",
        "fam/insecure",
    ]
    assert {r["personas"] for r in records} == {PERSONAS}
    assert [r["fraction_of_training"] for r in records] == [0.0, 0.3333, 0.6667, 1.0]
    assert "standalone" in records[0] and "non_monotone_S" in records[-1]
    assert (out / "fam_insecure.csv").read_text().startswith("step,")
    assert (out / "trajectory.png").stat().st_size > 0
    # A rerun collects nothing again.
    calls = call_counter.calls
    run_study(load_study(path), backend_builder=call_counter, progress=False, figures=False)
    assert call_counter.calls == calls


def test_checkpoint_settings_are_checked(tmp_path: Path) -> None:
    bad = _families([{"step": 100, "model": "base"}])
    bad["fam"]["insecure"].pop("final_step")  # type: ignore[index]
    with pytest.raises(ConfigError, match="final_step"):
        load_study(write_study(tmp_path / "a", families=bad))
    both = _families([{"step": 100, "run": "fam/secure", "model": "base"}])
    with pytest.raises(ConfigError, match="one of"):
        load_study(write_study(tmp_path / "b", families=both))
    twice = _families([{"step": 100, "model": "base"}, {"step": 100, "model": "secure"}])
    with pytest.raises(ConfigError, match="steps must differ"):
        load_study(write_study(tmp_path / "c", families=twice))
    fine = _families([{"step": 100, "model": "base"}, {"step": 200, "run": "fam/secure"}])
    plan = plan_checkpoints(load_study(write_study(tmp_path / "d", families=fine)))
    assert [(c.step, c.name, c.backend) for c in plan] == [
        (100, "fam/insecure/step0100", "sim"),
        (200, "fam/secure", None),
    ]


def test_too_few_personas_leave_the_trajectory_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_study(
        tmp_path,
        overrides={"protocol": {"personas": "personas.txt", "repetitions": 2, "seed": 3,
                                "self_run": False, "toxic_control": False}},
        families=_families([{"step": 100, "run": "fam/secure"}]),
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        outcome = run_study(load_study(path), progress=False, figures=False)
    assert outcome.files.html.is_file()
    assert not (outcome.output_dir / "trajectory").exists()
    assert "no trajectory of fam/insecure" in caplog.text and "at least 30" in caplog.text


def test_trainer_checkpoints_are_the_saved_adapters(tmp_path: Path) -> None:
    from persona_collapse.backends.base import Message
    from persona_collapse.variants.finetune.datasets import ChatExample, write_chat_jsonl

    (tmp_path / "models" / "tiny").mkdir(parents=True)
    write_chat_jsonl(
        [ChatExample((Message("user", "q"), Message("assistant", "a")))], tmp_path / "data.jsonl"
    )
    data = {
        "name": "ft",
        "output": "out",
        "backends": {"hf": {"kind": "transformers", "model": "models/tiny"}},
        "families": {
            "fam": {
                "base": {"backend": "hf"},
                "insecure": {
                    "finetune": {"dataset": "data.jsonl"},
                    "checkpoints": "trainer",
                    "final_step": 300,
                },
            }
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)
    assert plan_checkpoints(study) == []  # nothing trained yet
    saved = study.config.output_dir / "finetune" / "fam" / "insecure" / "checkpoints"
    for step in (100, 200, 300):  # the trainer's last checkpoint is the variant itself
        (saved / f"checkpoint-{step}").mkdir(parents=True)
        (saved / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"")
    plan = plan_checkpoints(study)
    assert [(c.step, c.name, c.backend) for c in plan] == [
        (100, "fam/insecure/step0100", "hf"),
        (200, "fam/insecure/step0200", "hf"),
    ]
    assert plan[0].options == {"adapter": str(saved / "checkpoint-100")}

    data["families"]["fam"]["insecure"].pop("finetune")  # type: ignore[index]
    data["families"]["fam"]["insecure"]["backend"] = "hf"  # type: ignore[index]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="local 'finetune'"):
        load_study(path)


def _report_study(tmp_path: Path, step100: dict[str, float], final: dict[str, float]) -> Path:
    families = {
        "fam": {
            "base": {"backend": "sim", "model": "base"},
            "insecure": {
                "backend": "sim",
                "model": "base",
                "options": final,
                "final_step": 200,
                "checkpoints": [{"step": 100, "model": "base", "options": step100}],
            },
        }
    }
    return write_study(
        tmp_path,
        personas=40,
        repetitions=4,
        overrides={"protocol": {"personas": "personas.txt", "repetitions": 4, "seed": 3,
                                "self_run": False, "toxic_control": False},
                   "analysis": {"n_persona_boot": 300, "n_rerun_boot": 60, "seed": 1,
                                "significance": False}},
        families=families,
    )  # fmt: skip


def test_report_has_a_trajectory_section_with_the_non_monotone_evidence(tmp_path: Path) -> None:
    # S rises with differentiation at step 100, then falls as the ceiling pull piles
    # ratings at the top of the scale.
    path = _report_study(
        tmp_path,
        {"differentiation": 2.0, "ceiling_pull": 0.0},  # the variant's options, overridden
        {"differentiation": 2.0, "ceiling_pull": 0.75},
    )
    outcome = run_study(load_study(path), progress=False, figures=True)
    html = outcome.files.html.read_text()
    section = html[html.index('<section id="training-trajectories">') :]
    section = section[: section.index("</section>")]
    records = json.loads((outcome.output_dir / "trajectory" / "fam_insecure.json").read_text())
    nm = records[-1]["non_monotone_S"]
    assert nm["detected"] and nm["peak_step"] == 100
    # The finding with its evidence: the step of the maximum, the drop and its CI.
    assert "S is non-monotone" in section
    assert f"{nm['drop']['value']:.3f}" in section and f"{nm['drop']['low']:.3f}" in section
    assert "40 personas are complete at every one of the 3 steps" in section
    # Per step: S ± SE as in the JSON, and the persona counts.
    for rec in records:
        assert f"{rec['S']:.3f} ± {rec['S_se']:.3f}" in section
        assert f"{rec['endpoint_mass']:.3f} ± {rec['endpoint_mass_se']:.3f}" in section
    assert "40 / 40" in section
    assert "stand-alone (personas)" in section  # the endpoints check
    assert '<figure id="fig_trajectory"' in section and "<svg" in section


def test_report_words_a_monotone_trajectory_without_a_finding(tmp_path: Path) -> None:
    path = _report_study(tmp_path, {"differentiation": 1.2}, {"differentiation": 2.0})
    outcome = run_study(load_study(path), progress=False, figures=False)
    html = outcome.files.html.read_text()
    section = html[html.index('<section id="training-trajectories">') :]
    assert "S is non-monotone" not in section
    assert "S is largest at the final step (200" in section and "no rise then fall" in section
    assert "No figure: figures were switched off" in section
