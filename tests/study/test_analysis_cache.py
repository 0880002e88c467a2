"""The analysis cache of study reports (issue 10.12): reused only while nothing it read
changed, never changing an output byte, and ignored when damaged or foreign."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from _study_helpers import CallCounter

import persona_collapse.study.pipeline as pipeline
from persona_collapse.core.files import CACHE_ENV
from persona_collapse.study import load_study, report_study, run_study
from persona_collapse.study.cache import ANALYSIS_CACHE, analysis_key


class _Counted:
    """Wraps ``analyse_study`` in the pipeline, counting the analyses run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = pipeline.analyse_study

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(pipeline, "analyse_study", counted)


def _outputs(folder: Path) -> dict[str, bytes]:
    """Every output file's bytes (the stores and the caches aside)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and ".db" not in p.name
    }


@pytest.fixture
def ran(
    tmp_path: Path,
    study_writer: Callable[..., Path],
    call_counter: CallCounter,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Path, _Counted]:
    """A small study, collected and reported once (its analysis cached)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "user-cache"))
    counted = _Counted(monkeypatch)
    path = study_writer(tmp_path / "study", personas=4)
    run_study(load_study(path), backend_builder=call_counter, progress=False, figures=False)
    assert counted.calls == 1
    assert (load_study(path).config.output_dir / ANALYSIS_CACHE).is_file()
    return path, counted


def test_unchanged_study_reuses_the_analysis_and_writes_the_same_bytes(
    ran: tuple[Path, _Counted], call_counter: CallCounter
) -> None:
    path, counted = ran
    study = load_study(path)
    out = study.config.output_dir
    fresh = _outputs(out)  # written from an analysis just run
    assert "report.html" in fresh and "metrics.csv" in fresh

    report_study(study, figures=False)
    assert counted.calls == 1  # reused
    assert _outputs(out) == fresh

    # A no-op collection leaves the stores' bytes (the key) as they were.
    key = analysis_key(study)
    run_study(study, backend_builder=call_counter, progress=False, figures=False)
    assert analysis_key(study) == key
    assert counted.calls == 1

    (out / ANALYSIS_CACHE).unlink()
    for name in fresh:
        (out / name).unlink()
    report_study(study, figures=False)
    assert counted.calls == 2
    assert _outputs(out) == fresh


def test_one_more_response_is_a_miss(ran: tuple[Path, _Counted], call_counter: CallCounter) -> None:
    path, counted = ran
    study = load_study(path)
    out = study.config.output_dir
    before = (out / "metrics.csv").read_bytes()
    with sqlite3.connect(study.config.store_path) as conn:  # drop one stored answer
        (run_id,) = conn.execute("SELECT run_id FROM runs WHERE name = 'fam/base'").fetchone()
        conn.execute(
            "DELETE FROM ratings WHERE rowid = (SELECT max(rowid) FROM ratings WHERE run_id = ?)",
            (run_id,),
        )
    conn.close()
    report_study(study, figures=False)
    assert counted.calls == 2
    assert (out / "metrics.csv").read_bytes() != before

    call_counter.calls = 0
    run_study(study, backend_builder=call_counter, progress=False, figures=False)
    assert call_counter.calls >= 1  # the missing answer, collected again
    assert counted.calls == 3
    assert (out / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("analysis", "n_rerun_boot", 60),
        ("analysis", "alpha", 0.01),
        ("protocol", "s_band", [0.5, 0.9]),
    ],
)
def test_a_changed_setting_is_a_miss(
    ran: tuple[Path, _Counted], section: str, key: str, value: Any
) -> None:
    path, counted = ran
    data = yaml.safe_load(path.read_text())
    data[section][key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    report_study(load_study(path), figures=False)
    assert counted.calls == 2
    report_study(load_study(path), figures=False)
    assert counted.calls == 2  # the new settings' analysis is the one cached now


def test_a_changed_persona_file_is_a_miss(ran: tuple[Path, _Counted]) -> None:
    path, counted = ran
    personas = path.parent / "personas.txt"
    personas.write_text(personas.read_text() + "An extra persona.\n")
    report_study(load_study(path), figures=False)
    assert counted.calls == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"",
        lambda b: b"not a cache at all",
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # one bit of the pickle flipped
        lambda b: b.replace(b"pcollapse-analysis-cache", b"pcollapse-analysis-cachX"),
    ],
    ids=["empty", "garbage", "truncated", "bit-flip", "bad-magic"],
)
def test_a_damaged_cache_is_recomputed_without_error(
    ran: tuple[Path, _Counted], damage: Callable[[bytes], bytes]
) -> None:
    path, counted = ran
    study = load_study(path)
    cache = study.config.output_dir / ANALYSIS_CACHE
    expected = _outputs(study.config.output_dir)
    cache.write_bytes(damage(cache.read_bytes()))
    report_study(study, figures=False)
    assert counted.calls == 2
    assert _outputs(study.config.output_dir) == expected
    report_study(study, figures=False)  # rewritten valid
    assert counted.calls == 2


def test_a_cache_signed_by_another_user_is_never_loaded(
    ran: tuple[Path, _Counted], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, counted = ran
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "another-user"))
    report_study(load_study(path), figures=False)
    assert counted.calls == 2


def test_an_unwritable_user_cache_only_turns_the_cache_off(
    ran: tuple[Path, _Counted], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, counted = ran
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    report_study(load_study(path), figures=False)
    report_study(load_study(path), figures=False)
    assert counted.calls == 3


def test_the_study_named_by_another_path_reuses_the_analysis(
    ran: tuple[Path, _Counted], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, counted = ran
    monkeypatch.chdir(path.parent.parent)
    relative = Path(path.parent.name) / path.name
    study = load_study(relative)
    outcome = report_study(study, figures=False)
    assert counted.calls == 1  # reused, though the study file is named differently
    assert outcome.results.source == str(relative)
    reused = _outputs(study.config.output_dir)
    assert str(relative).encode() in reused["metrics.json"]

    (study.config.output_dir / ANALYSIS_CACHE).unlink()
    report_study(load_study(relative), figures=False)
    assert counted.calls == 2
    assert _outputs(study.config.output_dir) == reused  # as a fresh analysis writes them
