"""A study variant may name inspect logs of the persona_collapse tasks instead of CSV files."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("inspect_ai", reason="inspect_ai is not installed")

from _inspect_mock import StreamOutputs, logging_restored
from persona_collapse.core.errors import InputFileError
from persona_collapse.core.instrument import mfq30
from persona_collapse.stats.sources import load_runs, run_metrics
from persona_collapse.study import load_study, run_study

REPS = 2


@pytest.fixture(autouse=True, scope="module")
def _inspect_logging() -> Iterator[None]:
    """inspect's eval reconfigures process-wide logging; later tests must not see it."""
    with logging_restored():
        yield


def _instrument(path: Path, n_items: int = 3) -> Path:
    data = mfq30().to_dict()
    data["name"] = f"mfq-first-{n_items}"
    data["items"] = data["items"][:n_items]
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _log(dest: Path, instrument: Path, personas: Path, salt: str, n_personas: int | None) -> Path:
    from inspect_ai import eval as inspect_eval
    from inspect_ai.model import get_model

    from persona_collapse.inspect_tasks import mfq_personas

    model = get_model("mockllm/model", custom_outputs=StreamOutputs(salt), memoize=False)
    task = mfq_personas(
        instrument=str(instrument), personas=str(personas), n_personas=n_personas, repetitions=REPS
    )
    (log,) = inspect_eval(task, model=model, log_dir=str(dest.parent / "raw"), display="none")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(log.location, dest)
    return dest


def _study(tmp_path: Path, study_writer: Callable[..., Path]) -> Path:
    families = {
        "pub": {
            "base": {"persona_file": "logs/base.eval"},
            "ft": {"persona_file": "logs/ft.eval", "role": "treatment"},
        }
    }
    protocol = {
        "personas": "personas.txt",
        "instrument": "mfq3.yaml",
        "repetitions": REPS,
        "toxic_control": False,
    }
    path = study_writer(tmp_path, families=families, overrides={"protocol": protocol})
    _instrument(tmp_path / "mfq3.yaml")
    return path


def test_a_variant_may_name_inspect_logs(tmp_path: Path, study_writer: Callable[..., Path]) -> None:
    path = _study(tmp_path, study_writer)
    for name in ("base", "ft"):
        _log(tmp_path / "logs" / f"{name}.eval", tmp_path / "mfq3.yaml",
             tmp_path / "personas.txt", name, None)  # fmt: skip
    outcome = run_study(load_study(path), progress=False, figures=False)
    assert outcome.collection is not None and outcome.collection.requests == 0
    assert set(outcome.collection.imported) == {"pub/base", "pub/ft"}
    fam = outcome.results.families["pub"]
    runs = {r.name: r for r in load_runs([outcome.collection.store])}
    for label in ("base", "ft"):
        got = fam.variants[label].metrics
        assert got is not None
        direct = run_metrics(runs[f"pub/{label}"]).estimates
        assert pytest.approx(direct["S"].value, rel=1e-12) == got.S
    # Running the study again imports nothing twice.
    run_study(load_study(path), progress=False, figures=False)
    assert len(load_runs([outcome.collection.store])) == 2


def test_a_log_of_other_personas_is_refused_before_anything_is_written(
    tmp_path: Path, study_writer: Callable[..., Path]
) -> None:
    path = _study(tmp_path, study_writer)
    _log(tmp_path / "logs" / "base.eval", tmp_path / "mfq3.yaml",
         tmp_path / "personas.txt", "base", None)  # fmt: skip
    _log(tmp_path / "logs" / "ft.eval", tmp_path / "mfq3.yaml",
         tmp_path / "personas.txt", "ft", 3)  # fmt: skip
    with pytest.raises(InputFileError, match=r"ft\.eval.*expected the study's 6 personas"):
        run_study(load_study(path), progress=False, figures=False)
    assert not load_study(path).config.store_path.exists()
