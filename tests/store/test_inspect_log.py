"""Importing inspect_ai logs: what is stored, and what is refused (one line, exit 2)."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("inspect_ai", reason="inspect_ai is not installed")

from _cli import assert_user_error, run_cli
from _inspect_mock import StreamOutputs, logging_restored
from persona_collapse.core.instrument import mfq30
from persona_collapse.store.inspect_log import (
    LOG_FORMAT_VERSION,
    raw_format_version,
    split_inspect_logs,
)
from persona_collapse.store.sqlite import RunStore

SECRET = "sekrit-password-0123456789"


@pytest.fixture(autouse=True, scope="module")
def _inspect_logging() -> Iterator[None]:
    """inspect's eval reconfigures process-wide logging; later tests must not see it."""
    with logging_restored():
        yield


def _instrument(path: Path, n_items: int = 2) -> Path:
    data = mfq30().to_dict()
    data["name"] = f"mfq-first-{n_items}"
    data["items"] = data["items"][:n_items]
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A persona_collapse log (model URL with credentials in it) and another task's log."""
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import get_model
    from inspect_ai.solver import generate

    from persona_collapse.inspect_tasks import mfq_personas

    root = tmp_path_factory.mktemp("inspect-logs")
    model = get_model(
        "mockllm/model",
        custom_outputs=StreamOutputs(),
        base_url=f"http://user:{SECRET}@127.0.0.1:9/v1",
        memoize=False,
    )
    task = mfq_personas(instrument=str(_instrument(root / "i.yaml")), n_personas=2, repetitions=2)
    (ours,) = inspect_eval(task, model=model, log_dir=str(root / "ours"), display="none")
    other = Task(dataset=[Sample(input="Say 3.")], solver=generate(), name="other_task")
    (theirs,) = inspect_eval(
        other,
        model=get_model("mockllm/model", custom_outputs=StreamOutputs(), memoize=False),
        log_dir=str(root / "theirs"),
        display="none",
    )
    return {"ours": Path(ours.location), "other": Path(theirs.location)}


def _with_version(src: Path, dest: Path, version: int) -> Path:
    """A copy of an .eval log whose header says format ``version``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename in ("header.json", "_journal/start.json"):
                doc = json.loads(data)
                doc["version"] = version
                data = json.dumps(doc).encode()
            zout.writestr(item, data)
    return dest


def test_import_stores_the_run(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path = tmp_path / "s.db"
    code, out, err = run_cli(capsys, "import", logs["ours"], "--store", store_path)
    assert code == 0, err
    with RunStore.open(store_path, create=False) as store:
        (run,) = store.list_runs()
        frame = store.ratings_frame(run.run_id)
        attempts = store.attempts_frame(run.run_id)
        requests, usage = store.usage(run.run_id)
        personas = store.personas(run.run_id)
    assert run.name == logs["ours"].stem and run.kind == "persona" and run.is_imported
    assert run.model == "mockllm/model" and run.n_repetitions == 2
    assert len(personas) == 2 and run.instrument().name == "mfq-first-2"
    assert len(frame) == 2 * 2 * 2
    assert sorted(frame["repetition"].unique()) == [1, 2]
    assert frame["rating"].between(0, 5).all() and frame["response"].str.len().gt(0).all()
    assert requests == len(attempts) >= len(frame) and usage.prompt_tokens > 0
    inspect_meta = run.metadata["inspect"]
    assert inspect_meta["format_version"] == LOG_FORMAT_VERSION
    assert inspect_meta["task"] == "persona_collapse/mfq_personas"
    assert inspect_meta["task_args"]["n_personas"] == 2
    assert inspect_meta["model_base_url"] == "http://127.0.0.1:9/v1"
    # Secrets never reach the store (the log's model URL carried a password).
    assert SECRET.encode() not in store_path.read_bytes()

    # The same log again: nothing added.
    code, out, err = run_cli(capsys, "import", logs["ours"], "--store", store_path)
    assert code == 0 and "already imported" in out
    with RunStore.open(store_path, create=False) as store:
        assert len(store.list_runs()) == 1


def test_a_folder_of_logs(logs: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    shutil.copy(logs["ours"], folder / "a.eval")
    shutil.copy(logs["ours"], folder / "b.eval")
    found, others = split_inspect_logs([folder, tmp_path / "x.csv"])
    assert [p.name for p in found] == ["a.eval", "b.eval"]
    assert others == [tmp_path / "x.csv"]


def test_a_folder_of_logs_imports_each(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    shutil.copy(logs["ours"], folder / "a.eval")
    shutil.copy(logs["ours"], folder / "b.eval")
    code, _, err = run_cli(capsys, "import", folder, "--store", tmp_path / "s.db")
    assert code == 0, err
    with RunStore.open(tmp_path / "s.db", create=False) as store:
        assert [r.name for r in store.list_runs()] == ["a", "b"]


@pytest.mark.parametrize("version", [1, 3])
def test_another_format_version_is_refused(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], version: int
) -> None:
    old = _with_version(logs["ours"], tmp_path / "old.eval", version)
    assert raw_format_version(old) == version
    store_path = tmp_path / "s.db"
    code, _, err = run_cli(capsys, "import", old, "--store", store_path)
    assert_user_error(
        code, err, str(old), f"format version {version}", f"expected version {LOG_FORMAT_VERSION}"
    )
    assert not store_path.exists()


def test_an_old_json_log_is_refused(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from inspect_ai.log import read_eval_log, write_eval_log

    path = tmp_path / "old.json"
    write_eval_log(read_eval_log(str(logs["ours"])), str(path), format="json")
    doc = json.loads(path.read_text())
    doc["version"] = 1
    path.write_text(json.dumps(doc))
    code, _, err = run_cli(capsys, "import", path, "--store", tmp_path / "s.db")
    assert_user_error(code, err, str(path), "format version 1", "expected version 2")


def test_another_task_is_refused(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path = tmp_path / "s.db"
    code, _, err = run_cli(capsys, "import", logs["ours"], logs["other"], "--store", store_path)
    assert_user_error(
        code, err, str(logs["other"]), "task 'other_task'", "expected persona_collapse/mfq_personas"
    )
    # Refused before anything was written, even the log that was fine.
    assert not store_path.exists()


def test_a_file_that_is_not_a_log_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "notes.eval"
    bogus.write_text("not a zip\n")
    code, _, err = run_cli(capsys, "import", bogus, "--store", tmp_path / "s.db")
    assert_user_error(code, err, str(bogus), "not an inspect_ai log")


def test_import_in_a_fresh_process(logs: dict[str, Path], tmp_path: Path) -> None:
    """The CLI reads an .eval log (zstd-compressed) without inspect imported beforehand."""
    import os
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[2] / "src"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
    store_path = tmp_path / "s.db"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "persona_collapse.cli",
            "import",
            str(logs["ours"]),
            *("--store", str(store_path), "--name", "fresh"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with RunStore.open(store_path, create=False) as store:
        (run,) = store.list_runs()
        assert run.name == "fresh" and store.counts(run.run_id).slots == 8
