"""``pcollapse watch``: LoRA checkpoints measured as they appear, resumably."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from _cli import run_ok, user_error_line
from _tiny_models import save_tiny_adapter, save_tiny_model
from persona_collapse.store.sqlite import RunStore
from persona_collapse.study.watch import find_checkpoints

SMALL = ("--max-personas", "2", "--mode", "exact", "--once")


def _answers(store: Path) -> dict[str, int]:
    with RunStore.open(store, create=False) as s:
        return {r.name: len(s.distributions_frame(r.run_id)) for r in s.list_runs()}


def test_watch_measures_new_checkpoints_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = save_tiny_model(tmp_path / "base")
    train = tmp_path / "train"
    save_tiny_adapter(base, train / "checkpoints" / "checkpoint-100", seed=1)
    (train / "checkpoints" / "checkpoint-200").mkdir()  # still being written: no weights yet
    (train / "checkpoints" / "checkpoint-200" / "adapter_config.json").write_text("{}")
    assert list(find_checkpoints(train)) == [100]
    store = tmp_path / "runs.db"
    args = ("watch", train, "--model", base, "--store", store, "--prefix", "ft", *SMALL)
    out = run_ok(capsys, *args)
    assert "step 100" in out and "ft/step0100: S " in out
    first = _answers(store)
    assert list(first) == ["ft/step0100"] and first["ft/step0100"] == 2 * 30

    shutil.rmtree(train / "checkpoints" / "checkpoint-200")
    save_tiny_adapter(base, train / "checkpoints" / "checkpoint-200", seed=2)
    run_ok(capsys, *args)
    again = _answers(store)
    # The finished checkpoint is not asked again; the new one is measured.
    assert again == {"ft/step0100": 60, "ft/step0200": 60}


def test_watch_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = user_error_line(
        capsys, "watch", tmp_path / "none", "--model", "m", "--store", tmp_path / "s.db"
    )
    assert "none" in line and "not a folder" in line
    line = user_error_line(
        capsys, "watch", tmp_path, "--model", "m", "--store", tmp_path / "s.db",
        "--option", "adapter=x", "--once",
    )  # fmt: skip
    assert "adapter" in line
