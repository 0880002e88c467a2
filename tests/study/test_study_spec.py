"""Study files: validation, environment variables, and every kind of mistake failing early.

Each mistake must fail before any model call (no run store is created), with exit
status 2 and one line that names the offending key and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from _cli import user_error_line as _cli_error
from persona_collapse.core.errors import ConfigError
from persona_collapse.study import load_study
from persona_collapse.study.loading import study_from_mapping

BASE_STUDY: dict[str, Any] = {
    "name": "s",
    "backends": {"sim": {"kind": "simulator"}},
    "families": {"f": {"base": {"backend": "sim", "model": "base"}}},
}


def _edit(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


MISTAKES: list[tuple[str, Callable[[dict[str, Any]], None], tuple[str, ...]]] = [
    (
        "unknown key",
        lambda d: d["backends"]["sim"].update(concurency=4),
        ("'backends.sim.concurency'", "unknown key", "did you mean 'max_concurrency'"),
    ),
    (
        "unknown top-level key",
        lambda d: d.update(protocl={}),
        ("'protocl'", "unknown key", "did you mean 'protocol'"),
    ),
    (
        "missing base variant",
        lambda d: d["families"]["fam"].pop("base"),
        ("'families.fam'", "no base variant", "role: base"),
    ),
    (
        "bad band",
        lambda d: d["protocol"].update(band=[0.9, 0.5]),
        ("'protocol.band'", "low < high", "band: [0.66, 0.83]"),
    ),
    (
        "band not a pair",
        lambda d: d["protocol"].update(band=0.7),
        ("'protocol.band'", "[low, high]"),
    ),
    (
        "unknown persona set",
        lambda d: d["protocol"].update(personas="defualt"),
        ("'protocol.personas'", "unknown persona set 'defualt'", "did you mean 'default'"),
    ),
    (
        "missing key variable",
        lambda d: (
            d["backends"].update(api={"kind": "openai", "api_key_env": "PCOLLAPSE_TEST_UNSET_KEY"}),
            d["families"]["fam"]["insecure"].update(backend="api", model="some-model"),
        ),
        ("'backends.api.api_key_env'", "PCOLLAPSE_TEST_UNSET_KEY", "export"),
    ),
    (
        "unreadable persona path",
        lambda d: d["protocol"].update(personas="nowhere/personas.json"),
        ("'protocol.personas'", "not found", "fix the name or the path"),
    ),
    (
        "unreadable import path",
        lambda d: d["families"]["fam"].update(extra={"persona_file": "missing.csv"}),
        ("'families.fam.extra.persona_file'", "not found", "fix the path"),
    ),
    (
        "unknown backend reference",
        lambda d: d["families"]["fam"]["base"].update(backend="simm"),
        ("'families.fam.base.backend'", "did you mean 'sim'"),
    ),
    (
        "unknown backend kind",
        lambda d: d["backends"]["sim"].update(kind="opnai"),
        ("'backends.sim.kind'", "did you mean 'openai'"),
    ),
    (
        "misspelt top-level key",
        lambda d: d.update(familes=d.pop("families")),
        ("'familes'", "unknown key", "did you mean 'families'"),
    ),
    (
        "bool where a count is expected",
        lambda d: d["protocol"].update(repetitions=True),
        ("'protocol.repetitions'", "valid integer"),
    ),
    (
        "string where a flag is expected",
        lambda d: d["protocol"].update(self_run="no"),
        ("'protocol.self_run'", "valid boolean"),
    ),
    (
        "wrong mode",
        lambda d: d["protocol"].update(mode="logprob"),
        ("'protocol.mode'", "'sampling' or 'exact'"),
    ),
]


@pytest.mark.parametrize(("what", "edit", "fragments"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistake_fails_before_any_model_call(
    what: str,
    edit: Callable[[dict[str, Any]], None],
    fragments: tuple[str, ...],
    tmp_path: Path,
    study_writer: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PCOLLAPSE_TEST_UNSET_KEY", raising=False)
    path = study_writer(tmp_path)
    _edit(path, edit)
    message = _cli_error(capsys, "study", "run", str(path), "--no-progress")
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    # Nothing was collected: the run store does not even exist.
    assert not (tmp_path / "out" / "runs.db").exists()


def test_missing_and_broken_study_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert "study file not found" in _cli_error(capsys, "study", "run", str(missing))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nfamilies: [\n")
    assert "not valid YAML" in _cli_error(capsys, "study", "status", str(broken))
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    assert "mapping" in _cli_error(capsys, "study", "report", str(listed))


def test_environment_variables_are_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCOLLAPSE_TEST_MODEL", "insecure")
    monkeypatch.delenv("PCOLLAPSE_TEST_NOT_SET", raising=False)
    data = {
        **BASE_STUDY,
        "description": "costs $$5 for ${PCOLLAPSE_TEST_MODEL}",
        "families": {
            "f": {
                "base": {"backend": "sim", "model": "base"},
                "x": {"backend": "sim", "model": "${PCOLLAPSE_TEST_MODEL}"},
                "y": {"backend": "sim", "model": "${PCOLLAPSE_TEST_NOT_SET:-secure}"},
            }
        },
    }
    study = study_from_mapping(data, source="s.yaml").config
    variants = study.families["f"].variants
    assert variants["x"].model == "insecure"
    assert variants["y"].model == "secure"
    assert study.description == "costs $5 for insecure"
    data["families"]["f"]["z"] = {"backend": "sim", "model": "${PCOLLAPSE_TEST_NOT_SET}"}
    with pytest.raises(ConfigError, match=r"'families\.f\.z\.model'.*PCOLLAPSE_TEST_NOT_SET"):
        study_from_mapping(data, source="s.yaml")


def test_roles_default_to_labels_and_explicit_roles_win() -> None:
    fam = study_from_mapping(
        {
            **BASE_STUDY,
            "families": {
                "f": {
                    "base": {"backend": "sim", "model": "base"},
                    "secure": {"backend": "sim", "model": "secure"},
                    "insecure": {"backend": "sim", "model": "insecure"},
                }
            },
        }
    ).config.families["f"]
    assert (fam.base, fam.control, fam.treatment) == ("base", "secure", "insecure")
    fam = study_from_mapping(
        {
            **BASE_STUDY,
            "families": {
                "f": {
                    "orig": {"backend": "sim", "model": "base", "role": "base"},
                    "ctl": {"backend": "sim", "model": "secure", "role": "control"},
                    "em": {"backend": "sim", "model": "insecure", "role": "treatment"},
                    "insecure": {"backend": "sim", "model": "insecure"},
                }
            },
        }
    ).config.families["f"]
    assert (fam.base, fam.control, fam.treatment) == ("orig", "ctl", "em")
    assert fam.role_of("insecure") is None
    with pytest.raises(ConfigError, match="role: treatment"):
        study_from_mapping(
            {
                **BASE_STUDY,
                "families": {
                    "f": {
                        "base": {"backend": "sim"},
                        "a": {"backend": "sim", "role": "treatment"},
                        "b": {"backend": "sim", "role": "treatment"},
                    }
                },
            }
        )


def test_paths_resolve_from_the_study_folder(
    tmp_path: Path, study_writer: Callable[..., Path]
) -> None:
    path = study_writer(tmp_path / "here")
    study = load_study(path).config
    assert study.protocol.personas == str(tmp_path / "here" / "personas.txt")
    assert study.output_dir == tmp_path / "here" / "out"
    assert study.store_path == tmp_path / "here" / "out" / "runs.db"
    assert study.protocol.toxic_personas == "toxic"  # built-in names stay names


def test_variant_needs_exactly_one_source() -> None:
    with pytest.raises(ConfigError, match=r"'families\.f\.x'.*backend.*persona_file"):
        study_from_mapping(
            {**BASE_STUDY, "families": {"f": {"base": {"backend": "sim"}, "x": {"model": "m"}}}}
        )


_BILLION_LAUGHS = "name: bomb\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.timeout(60)  # before the fix this hung with growing memory
@pytest.mark.parametrize("command", ["study", "run"])
def test_yaml_alias_bomb_is_refused_quickly(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A billion-laughs document (9**9 values through aliases) is one error line, exit 2,
    from the one YAML loader of every config file, before anything walks it."""
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(_BILLION_LAUGHS + "families: {x: *i}\n")
    args = ["study", "status", str(path)] if command == "study" else ["run", "-c", str(path)]
    start = time.perf_counter()
    message = _cli_error(capsys, *args)
    assert time.perf_counter() - start < 10
    assert str(path) in message and "aliases" in message


@pytest.mark.parametrize("command", ["study", "run"])
def test_key_written_twice_names_key_and_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("name: first\nrepetitions: 2\nname: second\n")
    args = ["study", "status", str(path)] if command == "study" else ["run", "-c", str(path)]
    message = _cli_error(capsys, *args)
    assert f"{path}, line 3" in message
    assert "'name' is written twice (first on line 1)" in message


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    from persona_collapse.core.yamlio import load_yaml_file

    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert load_yaml_file(path)["other"] == {"x": 3, "y": 2}


def test_run_config_types_are_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``repetitions: true`` was silently 1; a flag must not become a count."""
    path = tmp_path / "run.yaml"
    path.write_text("repetitions: true\n")
    message = _cli_error(capsys, "run", "-c", str(path), "--dry-run")
    assert "'repetitions'" in message and "valid integer" in message
    path.write_text("temperature: 1\nrepetitions: 3\n")  # an int is a fine float
    from persona_collapse.core.config import RunConfig

    cfg = RunConfig.from_yaml(path)
    assert (cfg.temperature, cfg.repetitions) == (1.0, 3)


def test_logprobs_is_a_deprecated_name_of_exact_mode(
    tmp_path: Path, study_writer: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    from persona_collapse.core.config import RunConfig

    with caplog.at_level("WARNING"):
        study = load_study(study_writer(tmp_path, mode="logprobs"))
        run = RunConfig(mode="logprobs")
    assert study.config.protocol.mode == "exact" == study.config.protocol.store_mode
    assert run.mode == "exact"
    notes = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(notes) == 2 and all("'exact'" in n for n in notes)
    assert load_study(study_writer(tmp_path / "b", mode="exact")).config.protocol.mode == "exact"


def test_old_key_names_are_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 11.4: one name per concept (``s_band``, ``max_concurrency``); old files still load."""
    old = {
        **BASE_STUDY,
        "protocol": {"band": [0.5, 0.9]},
        "backends": {"sim": {"kind": "simulator", "concurrency": 3}},
    }
    with caplog.at_level("WARNING"):
        study = study_from_mapping(old).config
    assert study.protocol.s_band == (0.5, 0.9) == study.analysis_config().s_band
    assert (
        study.backends["sim"].max_concurrency
        == 3
        == study.backends["sim"].pacing(2).max_concurrency
    )
    notes = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert any("'s_band'" in n for n in notes) and any("'max_concurrency'" in n for n in notes)
    new = {
        **BASE_STUDY,
        "protocol": {"s_band": [0.5, 0.9]},
        "backends": {"sim": {"kind": "simulator", "max_concurrency": 3}},
    }
    assert study_from_mapping(new).config == study
    both = {**BASE_STUDY, "protocol": {"band": [0.5, 0.9], "s_band": [0.5, 0.9]}}
    with pytest.raises(ConfigError, match="s_band only"):
        study_from_mapping(both)


def test_study_verify_section_is_derived_from_the_verification_settings() -> None:
    """Issue 11.4: the study's ``verify`` keys are VerifySettings' fields, all optional."""
    from persona_collapse.core.config import VerifySettings
    from persona_collapse.study.spec import StudyVerifySettings

    fields = StudyVerifySettings.model_fields
    assert set(VerifySettings.model_fields) | {"max_concurrency", "judge", "judge_model"} == set(
        fields
    )
    assert all(f.default is None for f in fields.values())
    assert fields["n_samples"].description == VerifySettings.model_fields["n_samples"].description
    assert StudyVerifySettings.model_validate({"questions": ["what_is_your_wish"]}).values() == {
        "questions": ("what_is_your_wish",)
    }


# --- paths named by a study file (issue 9, item 3) -------------------------------------------


def _outside_cases(outside: Path) -> list[tuple[str, Callable[[dict[str, Any]], None], str]]:
    (outside / "p.txt").write_text("A persona.\nAnother persona.\n")
    (outside / "adapter").mkdir()
    return [
        ("absolute output", lambda d: d.update(output=str(outside / "out")), "'output'"),
        ("store escaping with ..", lambda d: d.update(store="../outside/runs.db"), "'store'"),
        (
            "personas by absolute path",
            lambda d: d["protocol"].update(personas=str(outside / "p.txt")),
            "'protocol.personas'",
        ),
        (
            "template escaping with ..",
            lambda d: d["protocol"].update(template="../outside/t.yaml"),
            "'protocol.template'",
        ),
        (
            "import file escaping",
            lambda d: d["families"]["fam"].update(extra={"persona_file": "../outside/ratings.csv"}),
            "'families.fam.extra.persona_file'",
        ),
        (
            "fine-tuning dataset escaping",
            lambda d: d["families"]["fam"]["insecure"].update(
                backend=None, model=None, finetune={"dataset": "../outside/d.jsonl"}
            ),
            "'families.fam.insecure.finetune.dataset'",
        ),
        (
            "missing local model escaping",
            lambda d: (
                d["backends"].update(hf={"kind": "transformers"}),
                d["families"]["fam"]["secure"].update(backend="hf", model="../outside/model"),
            ),
            "'families.fam.secure.model'",
        ),
        (
            "adapter option outside",
            lambda d: d["families"]["fam"]["secure"].update(
                options={"adapter": str(outside / "adapter")}
            ),
            "'families.fam.secure.options.adapter'",
        ),
    ]


CASE_IDS = [
    "absolute output", "store escaping with ..", "personas by absolute path",
    "template escaping with ..", "import file escaping", "fine-tuning dataset escaping",
    "missing local model escaping", "adapter option outside",
]  # fmt: skip


@pytest.mark.parametrize("case", CASE_IDS)
def test_study_paths_may_not_leave_the_study_folder(
    case: str,
    tmp_path: Path,
    study_writer: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``output: /etc/...`` wrote 13 files into /etc; every path a study names is now
    resolved from its folder and refused outside it, unless --allow-outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    _what, edit, key = next(c for c in _outside_cases(outside) if c[0] == case)
    path = study_writer(tmp_path / "study")
    _edit(path, edit)
    message = _cli_error(capsys, "study", "run", str(path), "--no-progress")
    assert key in message and "--allow-outside" in message
    assert sorted(p.name for p in outside.iterdir()) == ["adapter", "p.txt"]  # nothing written
    assert not (tmp_path / "study" / "out").exists()


def test_allow_outside_and_symlinks(tmp_path: Path, study_writer: Callable[..., Path]) -> None:
    outside = tmp_path / "outside"
    path = study_writer(tmp_path / "study", overrides={"output": str(outside)})
    with pytest.raises(ConfigError, match="leads outside"):
        load_study(path)
    assert load_study(path, allow_outside=True).config.output_dir == outside
    # A symlink inside the folder that leads out is outside too.
    (tmp_path / "study" / "link").symlink_to(outside, target_is_directory=True)
    _edit(path, lambda d: d.update(output="link/out"))
    with pytest.raises(ConfigError, match=r"'output'.*leads outside"):
        load_study(path)
    _edit(path, lambda d: d.update(output="sub/../out"))  # '..' that stays inside is fine
    assert load_study(path).config.output_dir == tmp_path / "study" / "out"


@pytest.mark.parametrize(
    ("command", "text", "key"),
    [
        ("run", "store: ../escape.db\n", "'store'"),
        ("run", "personas: /etc/passwd\n", "'personas'"),
        ("run", "template: ../t.yaml\n", "'template'"),
        ("verify", "store: ../escape.db\n", "'store'"),
    ],
)
def test_config_file_paths_may_not_leave_its_folder(
    command: str, text: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same rule and resolver for run and verification config files."""
    folder = tmp_path / "cfg"
    folder.mkdir()
    path = folder / "config.yaml"
    path.write_text(text)
    args = (
        ["run", "-c", str(path), "--dry-run"] if command == "run" else ["verify", "-c", str(path)]
    )
    message = _cli_error(capsys, *args)
    assert key in message and "--allow-outside" in message
    assert not (tmp_path / "escape.db").exists()


def test_config_file_paths_resolve_from_its_folder(tmp_path: Path) -> None:
    from persona_collapse.core.config import RunConfig

    folder = tmp_path / "cfg"
    folder.mkdir()
    path = folder / "run.yaml"
    path.write_text("store: runs.db\npersonas: default\n")
    cfg = RunConfig.from_yaml(path)
    assert cfg.store == folder / "runs.db" and cfg.personas == "default"
    path.write_text(f"store: {tmp_path / 'elsewhere.db'}\n")
    assert RunConfig.from_yaml(path, allow_outside=True).store == tmp_path / "elsewhere.db"
    # The command line is the user's own: its paths are not limited.
    assert RunConfig.from_yaml(path, store=Path("/tmp/x.db")).store == Path("/tmp/x.db")
