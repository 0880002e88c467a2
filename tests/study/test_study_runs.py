"""Running studies: resuming without model calls, status, logprobs curves, imported variants."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _study_helpers import PERSONAS, CallCounter

from persona_collapse.stats.metrics import analyze_ratings
from persona_collapse.store.reference_csv import write_ratings_csv
from persona_collapse.store.sqlite import RunStore
from persona_collapse.study import collect_study, load_study, run_study, study_status

ITEMS = 30
TOXIC = 8


def test_study_runs_every_run_and_rerun_makes_no_model_call(
    tmp_path: Path, study_writer: Callable[..., Path], call_counter: CallCounter
) -> None:
    study = load_study(study_writer(tmp_path))
    before = study_status(study)
    assert [r.status for r in before] == ["missing"] * len(before)
    assert [r.run.name for r in before] == [
        "fam/base", "fam/base/self", "fam/base/toxic",
        "fam/secure", "fam/secure/self",
        "fam/insecure", "fam/insecure/self",
    ]  # fmt: skip

    first = run_study(study, backend_builder=call_counter, progress=False, figures=False)
    assert call_counter.calls > 0
    assert first.collection is not None and first.collection.requests == call_counter.calls
    after = study_status(study)
    assert all(r.complete for r in after)
    planned = {r.run.name: r.run.planned for r in after}
    assert planned["fam/base"] == PERSONAS * ITEMS * 2
    assert planned["fam/base/self"] == ITEMS * 2
    assert planned["fam/base/toxic"] == TOXIC * ITEMS * 2
    with RunStore.open(study.config.store_path, create=False) as store:
        for record in store.list_runs():
            counts = store.counts(record.run_id)
            assert counts.slots == counts.rows == planned[record.name], record.name

    results = first.results
    fam = results.families["fam"]
    assert (fam.base, fam.control, fam.treatment) == ("base", "secure", "insecure")
    assert fam.comparison is not None and fam.comparison.excess is not None
    assert fam.variants["base"].toxic_profile is not None
    assert fam.variants["secure"].toxic_profile is None
    assert all(v.self_profile is not None for v in fam.variants.values())
    metrics_csv = (study.config.output_dir / "metrics.csv").read_text()

    call_counter.calls = 0
    again = run_study(study, backend_builder=call_counter, progress=False, figures=False)
    assert call_counter.calls == 0
    assert again.collection is not None and again.collection.requests == 0
    # Same data, same seeds: the outputs are the same.
    assert (study.config.output_dir / "metrics.csv").read_text() == metrics_csv


def test_interrupted_collection_resumes(
    tmp_path: Path, study_writer: Callable[..., Path], call_counter: CallCounter
) -> None:
    study = load_study(study_writer(tmp_path, overrides={"analysis": {"n_persona_boot": 20}}))

    class Stop(Exception):
        pass

    def failing_builder(kind: str, options: dict[str, object]) -> object:
        backend = call_counter(kind, options)
        generate = backend.generate

        async def flaky(*args: object, **kwargs: object) -> object:
            if call_counter.calls > 300:
                raise Stop("simulated crash")
            return await generate(*args, **kwargs)

        backend.generate = flaky  # type: ignore[method-assign]
        return backend

    with pytest.raises(Stop):
        collect_study(study, backend_builder=failing_builder, progress=False)  # type: ignore[arg-type]
    partial = {r.run.name: r.stored for r in study_status(study)}
    assert 0 < sum(partial.values()) < sum(r.run.planned or 0 for r in study_status(study))

    fresh = CallCounter()
    collect_study(study, backend_builder=fresh, progress=False)
    assert all(r.complete for r in study_status(study))
    with RunStore.open(study.config.store_path, create=False) as store:
        rows = store._conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT run_id || ':' || persona_id || ':' || item_id || "
            "':' || repetition) FROM ratings"
        ).fetchone()
    assert rows[0] == rows[1]  # no slot stored twice


def test_logprobs_study_draws_temperature_curves(
    tmp_path: Path, study_writer: Callable[..., Path]
) -> None:
    path = study_writer(tmp_path, mode="logprobs", personas=5)
    outcome = run_study(load_study(path), progress=False, figures=False)
    out = outcome.output_dir
    curves = pd.read_csv(out / "temperature_curves.csv")
    assert sorted(curves["temperature"].unique()) == [0.1, 0.5, 1.0]
    for (_, _), group in curves.groupby(["family", "variant"]):
        r = group.sort_values("temperature")["R"].to_numpy()
        assert np.all(np.diff(r) < 0), "hotter sampling must spread answers (R falls)"
    base = outcome.results.families["fam"].variants["base"]
    assert base.metrics is not None and base.metrics.method == "exact"
    # At the collection temperature the curve equals the metrics.
    assert pytest.approx(base.metrics.S, rel=1e-12) == base.temperature_curve[0].S
    assert base.counts.slots == 5 * ITEMS + ITEMS + TOXIC * ITEMS  # one cell per unit


def _persona_csv(path: Path, rng: np.random.Generator, personas: int = 5) -> pd.DataFrame:
    rows = [
        (p, q, r, int(rng.integers(-1, 6)))
        for p in range(personas)
        for q in range(1, 31)
        for r in range(1, 4)
    ]
    frame = pd.DataFrame(rows, columns=["persona_id", "item_id", "repetition", "rating"])
    frame.loc[frame["repetition"] == 1, "rating"] = frame["item_id"] % 6  # no empty cell
    write_ratings_csv(frame, path)
    return frame


def test_imported_variants_match_direct_analysis(
    tmp_path: Path, study_writer: Callable[..., Path]
) -> None:
    rng = np.random.default_rng(5)
    data = tmp_path / "data"
    data.mkdir()
    frames = {name: _persona_csv(data / f"{name}.csv", rng) for name in ("base", "ft")}
    families = {
        "pub": {
            "base": {"persona_file": "data/base.csv", "model": "m0"},
            "ft": {"persona_file": "data/ft.csv", "role": "treatment"},
        }
    }
    path = study_writer(tmp_path, families=families)
    outcome = run_study(load_study(path), progress=False, figures=False)
    assert outcome.collection is not None and outcome.collection.requests == 0
    assert set(outcome.collection.imported) == {"pub/base", "pub/ft"}
    fam = outcome.results.families["pub"]
    assert fam.treatment == "ft" and fam.control is None
    for name, frame in frames.items():
        direct = analyze_ratings(
            frame["persona_id"], frame["item_id"], frame["rating"],
            n_persona_boot=200, n_rerun_boot=50, rng=1,
        )  # fmt: skip
        got = fam.variants[name].metrics
        assert got is not None
        assert (got.S, got.R, got.sigma_bar) == pytest.approx(
            (direct.S, direct.R, direct.sigma_bar), rel=1e-12
        )
        assert got.S_se == pytest.approx(direct.S_se, rel=1e-12)
        parse = fam.variants[name].parse
        assert parse is not None
        assert parse.rate == pytest.approx(float((frame["rating"] == -1).mean()))
    # Importing again is a no-op.
    again = run_study(load_study(path), progress=False, figures=False)
    assert again.results.families["pub"].variants["ft"].metrics == fam.variants["ft"].metrics


def test_constant_answers_leave_changes_undefined_with_a_note(
    tmp_path: Path, study_writer: Callable[..., Path]
) -> None:
    # One repetition: every cell has one answer, so sigma_bar = 0 and ΔR is undefined.
    path = study_writer(tmp_path, personas=3, repetitions=1, overrides={"protocol": {
        "personas": "personas.txt", "repetitions": 1, "toxic_control": False}})  # fmt: skip
    outcome = run_study(load_study(path), progress=False, figures=False)
    fam = outcome.results.families["fam"]
    assert fam.variants["base"].metrics is not None
    assert fam.variants["base"].metrics.sigma_bar == 0.0
    assert fam.comparison is None
    assert any("no relative changes against 'base'" in n for n in outcome.results.notes)
    assert "no relative changes" in outcome.files.html.read_text()


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    from persona_collapse.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out + err


def test_output_folder_of_other_files_is_refused_and_reruns_replace_only_their_own(
    tmp_path: Path, study_writer: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Never overwrite what the tool did not write: a folder holding other files is an
    error unless --force; the manifest lets a rerun replace its own files."""
    import json

    path = study_writer(tmp_path, personas=3, repetitions=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "report.html").write_text("my own report")
    code, text = _cli(capsys, "study", "run", path, "--no-progress", "--no-figures")
    assert code == 2 and "did not write (notes.txt, report.html)" in text and "--force" in text
    assert (out / "report.html").read_text() == "my own report"
    assert not (out / "runs.db").exists()  # refused before collecting anything

    (out / "report.html").unlink()
    code, text = _cli(capsys, "study", "run", path, "--no-progress", "--no-figures", "--force")
    assert code == 0, text
    assert (out / "notes.txt").read_text() == "mine"
    manifest = json.loads((out / ".pcollapse-manifest.json").read_text())["entries"]
    assert {"report.html", "metrics.csv", "tables"} <= set(manifest)
    assert "notes.txt" not in manifest and "runs.db" not in manifest

    (out / "notes.txt").unlink()  # only the tool's files left: a rerun needs no --force
    code, text = _cli(capsys, "study", "report", path, "--no-figures")
    assert code == 0, text
    (out / "extra.csv").write_text("x")
    code, text = _cli(capsys, "study", "report", path, "--no-figures")
    assert code == 2 and "extra.csv" in text


def test_output_path_that_is_a_file_is_one_line(
    tmp_path: Path, study_writer: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = study_writer(tmp_path, personas=3, repetitions=1)
    (tmp_path / "out").write_text("a file where the output folder goes")
    code, text = _cli(capsys, "study", "run", path, "--no-progress")
    assert code == 2 and "out: is a file" in text
    code, text = _cli(capsys, "study", "report", path, "--output", tmp_path / "out")
    assert code == 2 and "out: is a file" in text
    assert (tmp_path / "out").read_text() == "a file where the output folder goes"
