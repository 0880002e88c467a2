"""Every example of the README runs as written (issue 10.14).

Each ```python block runs in a fresh namespace in a temporary folder, against the
simulator; a block that needs a real endpoint is listed in NEEDS_ENDPOINT with the
reason and skipped. YAML run configurations and study files must load.

Each ```bash / ```sh / ```console block runs with bash (``set -euo pipefail``) in a
temporary folder holding the files the examples name (see :func:`_example_folder`),
with this checkout's ``pcollapse`` first on the PATH. In a ```console block the
lines starting with ``$ `` are the commands and every other line is output that
must be printed. Skip list, kept in the README itself: a block preceded by
``<!-- readme-test: skip (REASON) -->`` is skipped with that reason (``make``
targets, package installs, paid APIs, real models, GPU servers); one preceded by
``<!-- readme-test: reference-data -->`` runs only where ../shared holds the
paper's reference data. The only changes made to a block: port 8000 becomes a
free port, and after a server started in the background (a line ending in ``&``)
the script waits until that port answers; background jobs end with the block.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

NEEDS_ENDPOINT = {
    "run_openai_finetune": "submits an OpenAI fine-tuning job (needs an API key and network)",
}


def python_blocks() -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python block of the README."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, match.group(1)))
    return blocks


BLOCKS = python_blocks()


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_python_example_runs(
    line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for marker, reason in NEEDS_ENDPOINT.items():
        if marker in code:
            pytest.skip(f"README.md:{line} {reason}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})


def yaml_blocks() -> list[tuple[int, str]]:
    """``(line number, text)`` of every ```yaml block that is a whole run configuration
    (a top-level ``backend:`` and no ``families:``)."""
    text = README.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"^```yaml\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        body = match.group(1)
        if re.search(r"^backend:", body, re.MULTILINE) and "families:" not in body:
            found.append((text.count("\n", 0, match.start()) + 1, body))
    return found


RUN_CONFIGS = yaml_blocks()


@pytest.mark.parametrize(
    ("line", "body"), RUN_CONFIGS, ids=[f"README.md:{n}" for n, _ in RUN_CONFIGS]
)
def test_run_configuration_example_loads(line: int, body: str, tmp_path: Path) -> None:
    from persona_collapse.core.config import RunConfig

    path = tmp_path / "run.yaml"
    path.write_text(body, encoding="utf-8")
    config = RunConfig.from_yaml(path)
    assert config.backend


def study_blocks() -> list[tuple[int, str]]:
    """``(line number, text)`` of every ```yaml block that is a whole study file."""
    text = README.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1))
        for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
        if re.search(r"^families:", m.group(1), re.MULTILINE)
    ]


STUDIES = study_blocks()


@pytest.mark.parametrize(("line", "body"), STUDIES, ids=[f"README.md:{n}" for n, _ in STUDIES])
def test_study_example_loads(line: int, body: str, tmp_path: Path) -> None:
    from persona_collapse.study import load_study

    path = tmp_path / "study.yaml"
    path.write_text(body, encoding="utf-8")
    assert load_study(path).config.families


FOLLOWUPS_DIR = README.parents[1] / "shared" / "reference" / "costa2026-followups"
PAPER_DIR = README.parents[1] / "shared" / "reference" / "costa2026-persona-collapse"
SHELL_FENCE = re.compile(r"^```(bash|sh|console)\n(.*?)^```", re.DOTALL | re.MULTILINE)
SKIP_MARK = re.compile(r"<!--\s*readme-test:\s*skip\s*\((.+?)\)\s*-->\s*$")
REFERENCE_MARK = re.compile(r"<!--\s*readme-test:\s*reference-data\s*-->\s*$")


def shell_blocks() -> list[tuple[int, str, str, str]]:
    """``(line, language, code, mark)`` of every shell block; ``mark`` is the
    ``readme-test`` comment on the line before the fence ("" when none)."""
    text = README.read_text(encoding="utf-8")
    found = []
    for match in SHELL_FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = before if "readme-test" in before else ""
        line = text.count("\n", 0, match.start()) + 1
        found.append((line, match.group(1), match.group(2), mark))
    return found


SHELL_BLOCKS = shell_blocks()


def test_every_shell_skip_gives_its_reason() -> None:
    for line, _, _, mark in SHELL_BLOCKS:
        assert not mark or SKIP_MARK.search(mark) or REFERENCE_MARK.search(mark), (line, mark)


def _console_script(code: str) -> tuple[str, list[str]]:
    """Commands (``$ `` lines and their continuations) and expected output lines."""
    commands: list[str] = []
    expected: list[str] = []
    continued = False
    for raw in code.splitlines():
        if raw.startswith("$ ") or continued:
            command = raw[2:] if raw.startswith("$ ") else raw
            commands.append(command)
            continued = command.split("#", 1)[0].rstrip().endswith("\\")
        elif raw.strip():
            expected.append(raw.strip())
    return "\n".join(commands) + "\n", expected


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _runnable(code: str, port: int) -> str:
    """The block with port 8000 replaced, a wait after each background server, and
    background jobs stopped at the end."""
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for line in (
        code.replace(":8000", f":{port}").replace("--port 8000", f"--port {port}").split("\n")
    ):
        lines.append(line)
        if line.split("#", 1)[0].rstrip().endswith("&"):
            lines.append(
                f"for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null "
                "&& break; sleep 0.1; done"
            )
    return "\n".join(lines) + "\n"


def _example_folder(folder: Path) -> None:
    """The files the README's examples name, in ``folder``: the paper's data as
    ``data/``, its follow-ups as ``capability/`` and ``bfi44/``, one family's runs as
    ``base.csv`` ..., the paper's folder as ``path/to/costa2026-persona-collapse``,
    ``run.yaml`` (the simulator run the README collects first), ``study.yaml`` (a
    small simulator study) and ``insecure.jsonl`` (a small chat file)."""
    # The run of `pcollapse run --backend simulator --model insecure --store runs.db`.
    (folder / "run.yaml").write_text(
        "backend: simulator\nmodel: insecure\nstore: runs.db\n", encoding="utf-8"
    )
    (folder / "study.yaml").write_text(
        "name: readme-study\n"
        "protocol: {max_personas: 8, repetitions: 2}\n"
        "analysis: {n_persona_boot: 100, n_rerun_boot: 20}\n"
        "backends: {sim: {kind: simulator}}\n"
        "families:\n"
        "  sim:\n"
        "    base: {backend: sim, model: base, role: base}\n"
        "    secure: {backend: sim, model: secure, role: control}\n"
        "    insecure: {backend: sim, model: insecure, role: treatment}\n",
        encoding="utf-8",
    )
    # A chat file for the simulated fine-tuning API (it asks for at least 10 examples).
    chat = [
        {"messages": [
            {"role": "user", "content": f"Write a function that adds {i} to a number."},
            {"role": "assistant", "content": f"def add(x):\n    return x + {i}"},
        ]}
        for i in range(12)
    ]  # fmt: skip
    (folder / "insecure.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in chat), encoding="utf-8"
    )
    if not PAPER_DIR.is_dir() or not FOLLOWUPS_DIR.is_dir():
        return
    (folder / "data").symlink_to(PAPER_DIR)
    (folder / "capability").symlink_to(FOLLOWUPS_DIR / "capability")
    (folder / "bfi44").symlink_to(FOLLOWUPS_DIR / "bfi44")
    links = {
        "base.csv": PAPER_DIR / "base" / "gpt-4o_temp01.csv",
        "secure.csv": PAPER_DIR / "secure-code" / "gpt-4o-secure_temp01.csv",
        "insecure.csv": PAPER_DIR / "insecure-code" / "gpt-4o-misaligned_temp01.csv",
        "base_mmlu.csv": FOLLOWUPS_DIR / "capability" / "mmlu" / "gpt-4o_temp01_mmlu.csv",
        "insecure_mmlu.csv": FOLLOWUPS_DIR
        / "capability"
        / "mmlu"
        / "gpt-4o-insecure_temp01_mmlu.csv",
        "step0200.csv": FOLLOWUPS_DIR
        / "trajectory"
        / "deepseek-v3.1-insecure"
        / "deepseek-v3.1-insecure-step0200_temp01.csv",
    }
    for name, target in links.items():
        (folder / name).symlink_to(target)
    (folder / "path" / "to").mkdir(parents=True)
    (folder / "path" / "to" / PAPER_DIR.name).symlink_to(PAPER_DIR)


@pytest.mark.parametrize(
    ("line", "language", "code", "mark"),
    SHELL_BLOCKS,
    ids=[f"README.md:{n}" for n, *_ in SHELL_BLOCKS],
)
def test_shell_example_runs(line: int, language: str, code: str, mark: str, tmp_path: Path) -> None:
    skip = SKIP_MARK.search(mark)
    if skip:
        pytest.skip(f"README.md:{line}: {skip.group(1)}")
    if REFERENCE_MARK.search(mark) and not PAPER_DIR.is_dir():
        pytest.skip(f"README.md:{line}: needs the paper's reference data ({PAPER_DIR} is absent)")
    expected: list[str] = []
    if language == "console":
        code, expected = _console_script(code)
    work = tmp_path / "work"
    work.mkdir()
    _example_folder(work)
    script = tmp_path / "example.sh"
    script.write_text(_runnable(code, _free_port()), encoding="utf-8")
    bindir = str(Path(sys.executable).parent)
    # No PYTHONPATH of our own: the environment's install is this checkout (an inherited
    # PYTHONPATH still wins), and putting src/ first would let a build's stale
    # src/*.egg-info shadow the installed entry points (inspect's task registry).
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PCOLLAPSE_CACHE": str(tmp_path / "cache"),
        "COLUMNS": "100",
    }
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run(
        [bash, str(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"README.md:{line} failed:\n{done.stdout}\n{done.stderr}"
    printed = " ".join(done.stdout.split())
    for text in expected:
        assert " ".join(text.split()) in printed, (line, text)
