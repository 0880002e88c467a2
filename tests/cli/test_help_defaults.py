"""Help screens tell every default and keep option names whole at 80 columns (issue 10.13)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from rich.cells import cell_len
from typer.testing import CliRunner

from _cli import run_cli
from persona_collapse.cli import app
from persona_collapse.core.config import RunConfig, SamplingSettings, VerifySettings
from persona_collapse.variants.verify import VerifyConfig


def _help(monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERMINAL_WIDTH", "80")
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


def _flat(text: str) -> str:
    """Help text with the box drawing and line breaks removed."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def test_run_help_shows_the_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _flat(_help(monkeypatch, "run"))
    defaults = SamplingSettings()
    assert f"(default: {defaults.repetitions}, or the config's)" in text
    assert f"(default: {defaults.temperature:g}, or the config's)" in text
    assert f"(default: {defaults.mode}, or the config's)" in text


def test_verify_help_shows_the_default_answer_count(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _flat(_help(monkeypatch, "verify"))
    assert f"(default: {VerifySettings().n_samples}, or the config's)" in text


def test_run_option_names_are_not_truncated_at_80_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = _help(monkeypatch, "run")
    assert "…" not in raw
    assert all(len(line) <= 80 for line in raw.splitlines())
    for name in ("--repetitions", "--temperature", "--mode"):
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", raw, re.MULTILINE), name


def _commands() -> list[tuple[tuple[str, ...], Any]]:
    """Every registered command and group (path, click command), the root first."""
    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        found.append((path, command))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = _commands()


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "pcollapse" for p, _ in COMMANDS]
)
def test_every_help_screen_fits_80_columns_with_whole_option_names(
    path: tuple[str, ...],
    command: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_cli(capsys, *path, "--help")
    assert code == 0, err
    assert "…" not in out  # nothing cut: names whole, long words folded
    assert all(cell_len(line) <= 80 for line in out.splitlines())
    for param in command.params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("--"):
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", out), name


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "pcollapse" for p, _ in COMMANDS]
)
def test_every_set_default_is_shown(path: tuple[str, ...], command: Any) -> None:
    for param in command.params:
        if param.param_type_name != "option" or param.name == "help" or param.default is None:
            continue
        if getattr(param, "is_flag", False) and not param.secondary_opts and not param.default:
            continue  # an off switch: nothing to tell
        assert param.show_default is not False or "default" in (param.help or ""), (
            path,
            param.opts,
        )


def _shown(value: Any, flag: str | None = None) -> str:
    if isinstance(value, bool):
        assert flag is not None
        return flag if value else f"no-{flag}"
    return f"{value:g}" if isinstance(value, float) and value < 1 else str(value)


# Options left unset on the command line take the config's value, else the model's
# default: the help must tell that default, and tell it right.
CONFIG_DEFAULTS = [
    (("run",), "--backend", RunConfig, "backend", None),
    (("run",), "--personas", RunConfig, "personas", None),
    (("run",), "--instrument", RunConfig, "instrument", None),
    (("run",), "--seed", RunConfig, "seed", None),
    (("run",), "--concurrency", RunConfig, "max_concurrency", None),
    (("run",), "--store", RunConfig, "store", None),
    (("run",), "--self", RunConfig, "self_run", "self"),
    (("run",), "--persona", RunConfig, "persona_run", "persona"),
    (("run",), "--progress", RunConfig, "progress", "progress"),
    (("verify",), "--backend", VerifyConfig, "backend", None),
    (("verify",), "--judge-backend", VerifyConfig, "judge_backend", None),
    (("verify",), "--judge-mode", VerifySettings, "judge_mode", None),
    (("verify",), "--temperature", VerifySettings, "temperature", None),
    (("verify",), "--max-tokens", VerifySettings, "max_tokens", None),
    (("verify",), "--alignment-threshold", VerifySettings, "alignment_threshold", None),
    (("verify",), "--coherence-threshold", VerifySettings, "coherence_threshold", None),
    (("verify",), "--min-number-mass", VerifySettings, "min_number_mass", None),
    (("verify",), "--judge-retries", VerifySettings, "judge_retries", None),
    (("verify",), "--share-of", VerifySettings, "share_of", None),
    (("verify",), "--seed", VerifySettings, "seed", None),
    (("verify",), "--concurrency", VerifyConfig, "max_concurrency", None),
    (("verify",), "--store", VerifyConfig, "store", None),
    (("watch",), "--personas", RunConfig, "personas", None),
    (("watch",), "--repetitions", RunConfig, "repetitions", None),
    (("watch",), "--temperature", RunConfig, "temperature", None),
    (("watch",), "--seed", RunConfig, "seed", None),
    (("watch",), "--mode", RunConfig, "mode", None),
]


@pytest.mark.parametrize(("path", "option", "model", "field", "flag"), CONFIG_DEFAULTS)
def test_unset_options_tell_the_default_they_take(
    path: tuple[str, ...], option: str, model: Any, field: str, flag: str | None
) -> None:
    command = dict(COMMANDS)[path]
    (param,) = [p for p in command.params if option in p.opts]
    default = model.model_fields[field].default
    assert f"default: {_shown(default, flag)}" in (param.help or ""), (param.help, default)
