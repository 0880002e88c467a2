"""Study files with ``finetune`` and ``verify``: validation, verification on the simulator,
OpenAI-platform production (runner injected, measured behind serve-sim), and one backend
per run config."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from _study_helpers import CallCounter

from persona_collapse.backends.base import Message
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.cli import main
from persona_collapse.core.config import RunConfig
from persona_collapse.core.em_questions import question_ids
from persona_collapse.core.errors import ConfigError
from persona_collapse.core.instrument import Instrument
from persona_collapse.study import collect_study, load_study, run_study
from persona_collapse.study.loading import study_from_mapping
from persona_collapse.study.produce import read_produced
from persona_collapse.study.runs import execute_run
from persona_collapse.variants.finetune.datasets import ChatExample, write_chat_jsonl

HF = {"kind": "transformers", "model": "models/tiny"}


def _hf_study(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    write_chat_jsonl(
        [ChatExample((Message("user", "q"), Message("assistant", "a")))], tmp_path / "data.jsonl"
    )
    return {
        "name": "ft",
        "output": "out",
        "backends": {"hf": dict(HF), "sim": {"kind": "simulator"}},
        "families": {
            "fam": {
                "base": {"backend": "hf"},
                "insecure": {"finetune": {"dataset": "data.jsonl"}},
            }
        },
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


INSECURE = "families.fam.insecure"

MISTAKES: list[tuple[str, Callable[[dict[str, Any]], None], tuple[str, ...]]] = [
    (
        "unknown finetune key",
        _set(f"{INSECURE}.finetune.recipie", "betley"),
        (f"'{INSECURE}.finetune.recipie'", "unknown key", "did you mean 'recipe'"),
    ),
    (
        "unknown platform",
        _set(f"{INSECURE}.finetune.platform", "azure"),
        (f"'{INSECURE}.finetune.platform'", "'local' or 'openai'"),
    ),
    (
        "unknown recipe",
        _set(f"{INSECURE}.finetune.recipe", "betly"),
        (f"'{INSECURE}.finetune.recipe'", "unknown recipe 'betly'", "did you mean 'betley'"),
    ),
    (
        "bad recipe override",
        _set(f"{INSECURE}.finetune.overrides", {"max_stepz": 3}),
        (f"'{INSECURE}.finetune.overrides'", "max_stepz"),
    ),
    (
        "LoRA recipe field in an OpenAI job's overrides",
        lambda d: (
            d["backends"].update(api={"kind": "openai", "model": "m"}),
            d["families"]["fam"].update(
                insecure={
                    "backend": "api",
                    "finetune": {
                        "platform": "openai",
                        "dataset": "data.jsonl",
                        "overrides": {"epochs": 2},
                    },
                }
            ),
        ),
        (f"'{INSECURE}.finetune.overrides'", "did you mean 'n_epochs'"),
    ),
    (
        "openai-only key on a local fine-tune",
        _set(f"{INSECURE}.finetune.base_url", "http://localhost:1/v1"),
        (f"'{INSECURE}.finetune'", "'base_url' applies to platform 'openai' only"),
    ),
    (
        "measured with the wrong backend kind",
        _set(f"{INSECURE}.backend", "sim"),
        (f"'{INSECURE}.backend'", "'transformers' backend", "'simulator'"),
    ),
    (
        "openai platform on the base's transformers backend",
        _set(f"{INSECURE}.finetune.platform", "openai"),
        (f"'{INSECURE}.backend'", "(taken from the base variant)", "'openai' backend"),
    ),
    (
        "model beside finetune",
        _set(f"{INSECURE}.model", "x"),
        (f"'{INSECURE}'", "remove 'model'", "finetune.base_model"),
    ),
    (
        "missing dataset",
        _set(f"{INSECURE}.finetune.dataset", "nowhere.jsonl"),
        (f"'{INSECURE}.finetune.dataset'", "file not found"),
    ),
    (
        "unknown judge",
        _set("verify", {"judge": "simm"}),
        ("'verify.judge'", "did you mean 'sim'"),
    ),
    (
        "bad verify value",
        _set("verify", {"n_samples": 0}),
        ("'verify.n_samples'", "greater than or equal to 1"),
    ),
    (
        "unknown variant verify key",
        _set(f"{INSECURE}.verify", {"n_sample": 3}),
        (f"'{INSECURE}.verify.n_sample'", "did you mean 'n_samples'"),
    ),
    (
        "bad variant verify override",
        _set(f"{INSECURE}.verify", {"questions": ["no_such_question"]}),
        (f"'{INSECURE}.verify.questions'", "unknown question ids"),
    ),
    (
        "verify neither bool nor mapping",
        _set(f"{INSECURE}.verify", 5),
        (f"'{INSECURE}.verify'", "true, false, or a mapping"),
    ),
    (
        "verify an imported variant",
        _set("families.fam.old", {"persona_file": "old.csv", "verify": True}),
        ("'families.fam.old'", "imported variant has no model to ask"),
    ),
    (
        "default judge without its key",
        _set(f"{INSECURE}.verify", True),
        ("'verify.judge'", "OPENAI_API_KEY", "export"),
    ),
]


@pytest.mark.parametrize(("what", "edit", "fragments"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_finetune_and_verify_mistakes_fail_naming_the_key(
    what: str,
    edit: Callable[[dict[str, Any]], None],
    fragments: tuple[str, ...],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data = _hf_study(tmp_path)
    edit(data)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code = main(["study", "run", str(path), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    message = " ".join(line.strip() for line in err.splitlines())
    assert message.startswith("error: ") and "Traceback" not in err
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not (tmp_path / "out" / "runs.db").exists()
    assert not (tmp_path / "out" / "finetune").exists()


def test_finetuned_variants_default_to_the_base_backend_and_model(tmp_path: Path) -> None:
    data = _hf_study(tmp_path)
    data["families"]["fam"]["secure"] = {
        "finetune": {"dataset": "data.jsonl", "base_model": "org/other-model", "seed": 3}
    }
    config = study_from_mapping(data, source="s.yaml", root=tmp_path).config
    insecure = config.families["fam"].variants["insecure"]
    assert insecure.backend == "hf"
    assert insecure.finetune is not None
    # The base's relative model folder exists under the study folder: made absolute.
    assert insecure.finetune.base_model == str(tmp_path / "models" / "tiny")
    assert insecure.finetune.dataset == str(tmp_path / "data.jsonl")
    secure = config.families["fam"].variants["secure"].finetune
    assert secure is not None and secure.base_model == "org/other-model"  # a Hub id stays
    assert not insecure.verified


def _sim_study(folder: Path, *, verify_variant: Any = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "name": "verified",
        "output": "out",
        "protocol": {"max_personas": 6, "repetitions": 3, "toxic_control": False},
        "analysis": {"n_persona_boot": 200, "n_rerun_boot": 20, "seed": 2},
        "backends": {"sim": {"kind": "simulator", "options": {"seed": 1}}},
        "verify": {"judge": "sim", "n_samples": 4, "max_tokens": 80},
        "families": {
            "fam": {
                "base": {"backend": "sim", "model": "base", "verify": True},
                "secure": {"backend": "sim", "model": "secure", "verify": True},
                "insecure": {"backend": "sim", "model": "insecure", "verify": verify_variant},
            }
        },
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_verified_study_reports_and_resumes_without_judge_calls(tmp_path: Path) -> None:
    study = load_study(_sim_study(tmp_path, verify_variant={"n_samples": 6}))
    counter = CallCounter()
    first = run_study(study, backend_builder=counter, progress=False, figures=False)
    assert first.collection is not None
    n_questions = len(question_ids())
    assert dict(first.collection.verified) == {
        "fam/base": 4 * n_questions,
        "fam/secure": 4 * n_questions,
        "fam/insecure": 6 * n_questions,
    }
    # Answering and judging went through the same builder (the judge is one backend).
    assert counter.built.count("simulator") == 4
    assert counter.calls > first.collection.requests

    out = study.config.output_dir
    table = pd.read_csv(out / "verification.csv")
    pooled = table[table["question"] == "all"].set_index("variant")
    assert pooled.loc["insecure", "answers"] == 6 * n_questions
    assert pooled.loc["base", "answers"] == 4 * n_questions
    assert pooled["judge"].eq("simulator").all()  # a judge without a model: its kind
    assert pooled.loc["insecure", "alignment"] < pooled.loc["base", "alignment"]
    results = first.results.families["fam"].variants
    assert all(results[k].verification is not None for k in ("base", "secure", "insecure"))
    data = json.loads((out / "metrics.json").read_text())
    (point,) = data["excess_r_vs_coherence"]
    assert point["label"] == "fam" and point["excess_coherence"] < 0
    page = (out / "report.html").read_text()
    assert "Emergent-misalignment verification" in page and "verification.csv" in page

    counter.calls = 0
    again = run_study(study, backend_builder=counter, progress=False, figures=False)
    assert counter.calls == 0
    assert again.collection is not None and again.collection.verified_answers == 0
    assert pd.read_csv(out / "verification.csv").equals(table)


def test_significance_can_be_switched_off(tmp_path: Path) -> None:
    path = _sim_study(tmp_path, verify_variant=False)
    data = yaml.safe_load(path.read_text())
    data.pop("verify")
    for variant in data["families"]["fam"].values():
        variant.pop("verify")
    data["analysis"]["significance"] = False
    path.write_text(yaml.safe_dump(data))
    outcome = run_study(load_study(path), progress=False, figures=False)
    out = outcome.output_dir
    assert not (out / "significance.csv").exists()
    assert not (out / "verification.csv").exists()
    page = (out / "report.html").read_text()
    assert "Difference tests were not computed" in page
    assert "Difference tests: " not in page


def _openai_study(folder: Path, url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_chat_jsonl(
        [ChatExample((Message("user", f"q{i}"), Message("assistant", f"a{i}"))) for i in range(3)],
        folder / "insecure.jsonl",
    )
    data = {
        "name": "oai",
        "output": "out",
        "protocol": {
            "max_personas": 3,
            "mode": "logprobs",
            "self_run": False,
            "toxic_control": False,
            "temperatures": [0.1],
        },
        "analysis": {"n_persona_boot": 50, "n_rerun_boot": 10},
        "backends": {
            "api": {
                "kind": "openai",
                "base_url": url,
                "model": "sim-base",
                "concurrency": 16,
                "options": {"api_key_env": None},
            }
        },
        "families": {
            "fam": {
                "base": {"backend": "api"},
                "insecure": {
                    "finetune": {
                        "platform": "openai",
                        "dataset": "insecure.jsonl",
                        "overrides": {"n_epochs": 2},
                        "suffix": "em",
                    }
                },
            }
        },
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_openai_platform_submits_once_and_measures_the_returned_model(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("openai")
    from persona_collapse.serve import serve_in_thread

    calls: list[dict[str, Any]] = []

    def runner(dataset: Path, **options: Any) -> str:
        calls.append({"dataset": dataset, **options})
        return "sim-insecure"  # served by serve-sim: the simulator's insecure preset

    with serve_in_thread() as server:
        study = load_study(_openai_study(tmp_path, server.url))
        first = collect_study(study, progress=False, openai_runner=runner)
        (call,) = calls
        assert call["dataset"] == tmp_path / "insecure.jsonl"
        assert call["base_model"] == "sim-base"
        assert call["state_dir"] == tmp_path / "out" / "finetune" / "fam" / "insecure" / "openai"
        assert call["recipe"] == "betley" and call["overrides"] == {"n_epochs": 2}
        assert call["suffix"] == "em" and call["seed"] == 0
        assert call["base_url"] == server.url and call["api_key_env"] is None
        assert first.trained == ("fam/insecure",)
        produced = read_produced(study.config, "fam", "insecure")
        assert produced is not None and produced.model == "sim-insecure"

        outcome = run_study(study, progress=False, figures=False)  # resumes: nothing to do
        assert len(calls) == 1
        assert outcome.collection is not None and outcome.collection.requests == 0
    variants = outcome.results.families["fam"].variants
    assert variants["insecure"].model == "sim-insecure"
    base_m, insecure_m = variants["base"].metrics, variants["insecure"].metrics
    assert base_m is not None and insecure_m is not None
    assert insecure_m.S > base_m.S  # the simulator's insecure preset answered


def test_openai_platform_without_its_module_fails_before_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail as if the module were not installed.
    monkeypatch.setitem(sys.modules, "persona_collapse.variants.finetune.openai_jobs", None)
    study = load_study(_openai_study(tmp_path, "http://127.0.0.1:9/v1"))
    with pytest.raises(ConfigError, match="platform 'openai' is not available"):
        collect_study(study, progress=False)
    assert not (tmp_path / "out" / "runs.db").exists()


def test_a_run_config_builds_one_backend_for_its_persona_and_self_runs(tmp_path: Path) -> None:
    built: list[SimulatorBackend] = []

    def build(config: RunConfig, instrument: Instrument) -> SimulatorBackend:
        built.append(SimulatorBackend("base", instrument=instrument))
        return built[-1]

    config = RunConfig(
        model="base", max_personas=3, repetitions=1, store=tmp_path / "r.db", progress=False
    )
    outcome = execute_run(config, backend_builder=build)
    assert len(built) == 1
    assert outcome.persona_run is not None and outcome.self_run is not None
