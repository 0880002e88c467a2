"""Tests of the SQLite run store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from persona_collapse.backends.base import Usage
from persona_collapse.core.errors import ConfigError, StoreError, UnknownNameError, UserError
from persona_collapse.core.frames import INVALID_RATING, SELF_PERSONA_ID
from persona_collapse.core.instrument import mfq30
from persona_collapse.store.reference_csv import read_ratings_csv
from persona_collapse.store.sqlite import (
    SCHEMA_VERSION,
    AcceptedSlot,
    AttemptRecord,
    DistributionRecord,
    RunSpec,
    RunStore,
    persona_set_hash,
)

PERSONAS = ("A retired sailor.", "A young nurse.", "A farmer from Iowa.")


def make_spec(**overrides: object) -> RunSpec:
    inst = mfq30()
    fields: dict[str, object] = {
        "kind": "persona",
        "model": "test-model",
        "backend": "fake",
        "backend_settings": {"backend": "fake", "preset": "x"},
        "instrument_name": inst.name,
        "instrument_hash": inst.content_hash,
        "instrument_json": json.dumps(inst.to_dict()),
        "persona_set_hash": persona_set_hash(PERSONAS),
        "template_hash": "t" * 16,
        "temperature": 0.1,
        "mode": "sampling",
        "n_repetitions": 10,
        "seed": 0,
        "name": "run-a",
    }
    fields.update(overrides)
    return RunSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    s = RunStore.open(tmp_path / "runs.db")
    yield s  # type: ignore[misc]
    s.close()


# --- opening and schema --------------------------------------------------------------------


def test_new_store_has_wal_schema_version_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "runs.db"
    with RunStore.open(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        conn = s._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "personas", "attempts", "ratings", "distributions", "usage"} <= tables
    # Reopening an existing store works and keeps the data.
    with RunStore.open(path, create=False) as s:
        assert s.list_runs() == []


def test_missing_store_without_create(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not found"):
        RunStore.open(tmp_path / "absent.db", create=False)


def test_corrupt_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(StoreError) as info:
        RunStore.open(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message


def test_text_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("persona_id,question_id\n1,2\n" * 100)
    with pytest.raises(StoreError, match=r"notes\.db"):
        RunStore.open(path)


def test_other_sqlite_database_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a persona-collapse run store"):
        RunStore.open(path)


def test_newer_schema_version_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    RunStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer") as info:
        RunStore.open(path)
    assert str(path) in str(info.value)


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory"):
        RunStore.open(tmp_path)


# --- runs ----------------------------------------------------------------------------------


def test_get_or_create_is_idempotent(store: RunStore) -> None:
    spec = make_spec()
    first = store.get_or_create_run(spec, personas=PERSONAS)
    second = store.get_or_create_run(spec, personas=PERSONAS)
    assert first.run_id == second.run_id
    assert len(store.list_runs()) == 1
    assert store.personas(first.run_id) == list(PERSONAS)
    assert first.name == "run-a"
    assert first.status == "pending"
    assert first.instrument().content_hash == mfq30().content_hash
    # Without a name, the same settings find the same run.
    unnamed = store.get_or_create_run(make_spec(name=None))
    assert unnamed.run_id == first.run_id


def test_a_record_composes_its_spec(store: RunStore) -> None:
    """Issue 11: RunRecord adds the store's fields to RunSpec's, declared once."""
    from dataclasses import fields

    from persona_collapse.store.sqlite import RunRecord

    spec = make_spec()
    record = store.get_or_create_run(spec, personas=PERSONAS)
    assert isinstance(record, RunSpec)
    spec_fields = {f.name for f in fields(RunSpec)}
    own = {f.name for f in fields(RunRecord)} - spec_fields
    assert own == {"run_id", "status", "source", "metadata", "created_at", "updated_at",
                   "stored_key"}  # fmt: skip
    assert record.key_fields() == spec.key_fields()
    assert record.run_key == spec.run_key


def test_unnamed_spec_gets_a_derived_name(store: RunStore) -> None:
    record = store.get_or_create_run(make_spec(name=None, kind="self", persona_set_hash=""))
    assert record.name.startswith("test-model/self-")


def test_name_clash_with_other_settings_is_a_user_error(store: RunStore) -> None:
    store.get_or_create_run(make_spec())
    with pytest.raises(UserError, match="temperature"):
        store.get_or_create_run(make_spec(temperature=0.7))
    with pytest.raises(UserError, match="already exists as 'run-a'"):
        store.get_or_create_run(make_spec(name="run-b"))
    other = store.get_or_create_run(make_spec(name="run-b", seed=1))
    assert other.name == "run-b"
    assert len(store.list_runs()) == 2


def test_spec_validation() -> None:
    with pytest.raises(ConfigError, match="kind"):
        make_spec(kind="robot")
    with pytest.raises(ConfigError, match="n_repetitions"):
        make_spec(n_repetitions=0)
    with pytest.raises(ConfigError, match="temperature"):
        make_spec(temperature=-1.0)
    with pytest.raises(ConfigError, match="self run"):
        make_spec(kind="self")


def test_secrets_are_not_stored(store: RunStore) -> None:
    spec = make_spec(backend_settings={"backend": "x", "api_key": "sk-123", "model": "m"})
    record = store.get_or_create_run(spec)
    assert dict(record.backend_settings) == {"backend": "x", "model": "m"}
    raw = store._conn.execute("SELECT backend_settings FROM runs").fetchone()[0]
    assert "sk-123" not in raw


def test_personas_must_match_hash(store: RunStore) -> None:
    with pytest.raises(ConfigError, match="persona"):
        store.get_or_create_run(make_spec(), personas=["someone else"])


def test_find_run_by_name_or_id_and_suggestions(store: RunStore) -> None:
    record = store.get_or_create_run(make_spec(name="gpt-4o"))
    assert store.find_run("gpt-4o").run_id == record.run_id
    assert store.find_run(str(record.run_id)).run_id == record.run_id
    assert store.find_run(record.run_id).name == "gpt-4o"
    with pytest.raises(UnknownNameError, match="did you mean 'gpt-4o'"):
        store.find_run("gpt-4")


def test_set_status_and_delete(store: RunStore) -> None:
    record = store.get_or_create_run(make_spec())
    store.set_status(record.run_id, "complete")
    assert store.get_run(record.run_id).status == "complete"
    with pytest.raises(ValueError, match="status"):
        store.set_status(record.run_id, "done")  # type: ignore[arg-type]
    store.record(record.run_id, accepted=[AcceptedSlot(0, 1, 1, 3)])
    store.delete_run(record.run_id)
    assert store.list_runs() == []
    assert store._conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 0


# --- recording -----------------------------------------------------------------------------


def test_record_writes_attempts_slots_usage(store: RunStore) -> None:
    run = store.get_or_create_run(make_spec()).run_id
    attempts = [
        AttemptRecord(0, 1, 1, 0, 1, 42, 1, False, "x", None, "no rating"),
        AttemptRecord(0, 1, 2, 0, 1, 42, 1, False, "4", 4),
    ]
    result = store.record(
        run,
        attempts=attempts,
        accepted=[AcceptedSlot(0, 1, 2, 4, 0, "4")],
        usage=Usage(10, 2, 1),
        requests=1,
    )
    assert (result.attempts, result.accepted, result.duplicates) == (2, 1, 0)
    assert store.completed_slots(run) == {(0, 1, 2)}
    assert store.usage(run) == (1, Usage(10, 2, 1))
    counts = store.counts(run)
    assert (counts.slots, counts.rows, counts.valid, counts.failed, counts.attempts) == (
        1,
        1,
        1,
        0,
        2,
    )
    progress = store.cell_progress(run)[(0, 1)]
    assert progress.next_round == 1
    assert dict(progress.short_attempts) == {1: 1, 2: 1}


def test_duplicate_accepted_slot_is_ignored_and_reported(
    store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    run = store.get_or_create_run(make_spec()).run_id
    store.record(run, accepted=[AcceptedSlot(0, 1, 1, 3, 0, "3")])
    result = store.record(
        run, accepted=[AcceptedSlot(0, 1, 1, 5, 0, "5"), AcceptedSlot(0, 1, 2, 2)]
    )
    assert result.accepted == 1
    assert result.duplicates == 1
    assert "already stored" in caplog.text
    frame = store.ratings_frame(run)
    assert len(frame) == 2
    assert frame.loc[frame["repetition"] == 1, "rating"].tolist() == [3]  # first one kept


def test_database_constraint_blocks_duplicate_slots(store: RunStore) -> None:
    run = store.get_or_create_run(make_spec()).run_id
    store.record(run, accepted=[AcceptedSlot(0, 1, 1, 3)])
    with pytest.raises(sqlite3.IntegrityError):
        store._conn.execute(
            "INSERT INTO ratings (run_id, persona_id, item_id, repetition, seq, rating) "
            "VALUES (?, 0, 1, 1, 0, 4)",
            (run,),
        )


def test_failed_record_rolls_back(store: RunStore) -> None:
    run = store.get_or_create_run(make_spec()).run_id
    good = AttemptRecord(0, 1, 1, 0, 1, None, 1, False, "4", 4)
    broken = AcceptedSlot(0, 1, 1, None)  # type: ignore[arg-type]  # NOT NULL violation
    with pytest.raises(sqlite3.IntegrityError):
        store.record(run, attempts=[good], accepted=[broken], usage=Usage(1, 1, 0), requests=1)
    # Nothing of the failed call is left: the attempt and the usage were rolled back.
    assert store.counts(run).attempts == 0
    assert store.usage(run) == (0, Usage())


def test_ratings_frame_layout(store: RunStore) -> None:
    run = store.get_or_create_run(make_spec()).run_id
    store.record(
        run,
        accepted=[
            AcceptedSlot(1, 2, 1, 4, 0, "4"),
            AcceptedSlot(0, 2, 2, INVALID_RATING, 11, "no idea"),
            AcceptedSlot(0, 2, 1, 0, 3, None),
        ],
    )
    frame = store.ratings_frame(run)
    assert list(frame.columns) == [
        "persona_id",
        "item_id",
        "repetition",
        "rating",
        "failures",
        "response",
        "collected_at",
    ]
    for col in ("persona_id", "item_id", "repetition", "rating", "failures"):
        assert frame[col].dtype == np.int64
    assert frame[["persona_id", "repetition"]].to_numpy().tolist() == [[0, 1], [0, 2], [1, 1]]
    assert frame["rating"].tolist() == [0, INVALID_RATING, 4]
    assert frame["response"].tolist() == ["", "no idea", "4"]
    assert frame.attrs["kind"] == "persona"
    assert frame.attrs["run"] == "run-a"


def test_empty_ratings_frame(store: RunStore) -> None:
    run = store.get_or_create_run(make_spec()).run_id
    frame = store.ratings_frame(run)
    assert len(frame) == 0
    assert frame["rating"].dtype == np.int64


def test_distributions_roundtrip(store: RunStore) -> None:
    run = store.get_or_create_run(make_spec(mode="exact")).run_id
    probs = (0.1, 0.2, 0.3, 0.2, 0.1, 0.1)
    dist = DistributionRecord(0, 3, (0, 1, 2, 3, 4, 5), probs, 0.93, {"top": [1, 2]})
    assert store.record(run, distributions=[dist]).distributions == 1
    again = store.record(run, distributions=[dist])
    assert again.distributions == 0
    assert again.duplicates == 1
    frame = store.distributions_frame(run)
    assert len(frame) == 1
    assert frame[[f"p{k}" for k in range(6)]].to_numpy()[0].tolist() == list(probs)
    assert frame["mass"].tolist() == [0.93]
    assert store.completed_cells(run) == {(0, 3)}
    empty = store.distributions_frame(store.get_or_create_run(make_spec(name="b", seed=9)).run_id)
    assert list(empty.columns) == ["persona_id", "item_id", *[f"p{k}" for k in range(6)], "mass"]


# --- import / export -----------------------------------------------------------------------


MESSY_CSV = (
    "persona_id,question_id,run_index,rating,failures,response,collected_at\n"
    "0,1,1,3,0,3,2025-01-01T00:00:00\n"
    '0,1,1,4,1,"I\'d say 4, because\nit matters",2025-01-01T00:00:01\n'
    '0,1,2,-1,11,"no idea, really",2025-01-01T00:00:02\n'
    "1,1,1,5,0,5,2025-01-01T00:00:03\n"
    "0,1,1,2,0,2,2025-01-01T00:00:04\n"
    "1,2,1,0,0,0,\n"
)


def test_import_messy_csv_keeps_every_row(store: RunStore, tmp_path: Path) -> None:
    path = tmp_path / "messy.csv"
    path.write_text(MESSY_CSV)
    record = store.import_csv(path, name="messy", personas=["p0", "p1"])
    assert record.kind == "persona"
    assert record.status == "complete"
    assert record.source.startswith("imported:")
    assert record.model == "messy"
    assert store.personas(record.run_id) == ["p0", "p1"]
    frame = store.ratings_frame(record.run_id)
    assert len(frame) == 6
    slot = frame[(frame["persona_id"] == 0) & (frame["item_id"] == 1) & (frame["repetition"] == 1)]
    assert slot["rating"].tolist() == [3, 4, 2]  # file order kept within a slot
    assert "it matters" in slot["response"].iloc[1]
    assert (frame["rating"] == INVALID_RATING).sum() == 1
    counts = store.counts(record.run_id)
    assert (counts.slots, counts.rows, counts.failed) == (4, 6, 1)


def test_import_same_file_twice_is_skipped(store: RunStore, tmp_path: Path) -> None:
    path = tmp_path / "messy.csv"
    path.write_text(MESSY_CSV)
    first = store.import_csv(path, name="messy")
    second = store.import_csv(path, name="messy")
    assert first.run_id == second.run_id
    assert store.counts(first.run_id).rows == 6
    # Same file under another name: a second run.
    third = store.import_csv(path, name="messy-2")
    assert third.run_id != first.run_id
    # Same name, other content: refused.
    other = tmp_path / "other.csv"
    other.write_text(MESSY_CSV.replace("1,2,1,0,0,0,", "1,2,1,1,0,1,"))
    with pytest.raises(UserError, match="already used"):
        store.import_csv(other, name="messy")


def test_import_checks_kind_and_personas(store: RunStore, tmp_path: Path) -> None:
    path = tmp_path / "messy.csv"
    path.write_text(MESSY_CSV)
    with pytest.raises(UserError, match="persona file"):
        store.import_csv(path, name="x", kind="self")
    with pytest.raises(UserError, match="persona id 1"):
        store.import_csv(path, name="x", personas=["only one"])
    assert store.list_runs() == []


def test_import_self_csv(store: RunStore, tmp_path: Path) -> None:
    path = tmp_path / "model_self.csv"
    path.write_text(
        "question_id,run_index,rating,failures,response,collected_at\n"
        "1,1,5,0,5,2025\n1,2,4,0,4,2025\n2,1,-1,11,x,2025\n"
    )
    record = store.import_csv(path, name="model/self", model="model")
    assert record.kind == "self"
    assert record.persona_set_hash == ""
    frame = store.ratings_frame(record.run_id)
    assert (frame["persona_id"] == SELF_PERSONA_ID).all()
    out = tmp_path / "out.csv"
    store.export(record.run_id, out)
    assert out.read_text().splitlines()[0].startswith("question_id,run_index,rating")


def test_export_roundtrip_csv_and_parquet(store: RunStore, tmp_path: Path) -> None:
    path = tmp_path / "messy.csv"
    path.write_text(MESSY_CSV)
    record = store.import_csv(path, name="messy")
    original = store.ratings_frame(record.run_id)

    csv_out = tmp_path / "export.csv"
    assert store.export(record.run_id, csv_out) == csv_out
    again = store.import_csv(csv_out, name="reimported")
    pd.testing.assert_frame_equal(
        store.ratings_frame(again.run_id), original, check_dtype=True, check_like=False
    )
    reread = read_ratings_csv(csv_out)
    assert len(reread) == len(original)

    pq_out = tmp_path / "export.parquet"
    store.export(record.run_id, pq_out)
    table = pd.read_parquet(pq_out)
    pd.testing.assert_frame_equal(
        table.reset_index(drop=True),
        original.reset_index(drop=True),
        check_dtype=False,
    )
    assert table["rating"].tolist() == original["rating"].tolist()
    # No temporary files left behind.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_export_rejects_unknown_format(store: RunStore, tmp_path: Path) -> None:
    record = store.get_or_create_run(make_spec())
    with pytest.raises(UserError, match="format"):
        store.export(record.run_id, tmp_path / "x.json", format="json")  # type: ignore[arg-type]


def test_import_reference_csv(store: RunStore, reference_dir: Path) -> None:
    path = reference_dir / "base" / "gpt-4o_temp01.csv"
    personas = json.loads((reference_dir / "personas.json").read_text())
    expected = read_ratings_csv(path)
    record = store.import_csv(path, name="gpt-4o", model="gpt-4o", personas=personas)
    frame = store.ratings_frame(record.run_id)
    assert len(frame) == len(expected) == 30_000
    key = ["persona_id", "item_id", "repetition"]
    a = frame.sort_values([*key, "collected_at"], kind="stable").reset_index(drop=True)
    b = expected.sort_values([*key, "collected_at"], kind="stable").reset_index(drop=True)
    assert a["rating"].tolist() == b["rating"].tolist()
    assert record.n_repetitions == 10
    assert store.personas(record.run_id) == personas


def test_import_reference_with_retries(store: RunStore, reference_dir: Path) -> None:
    # The qwen file holds slots with several rows; all of them are kept.
    path = reference_dir / "base" / "qwen3-235b_temp01.csv"
    expected = read_ratings_csv(path)
    record = store.import_csv(path, name="qwen")
    assert store.counts(record.run_id).rows == len(expected)
    frame = store.ratings_frame(record.run_id)
    sizes = frame.groupby(["persona_id", "item_id"]).size()
    expected_sizes = expected.groupby(["persona_id", "item_id"]).size()
    pd.testing.assert_series_equal(sizes, expected_sizes)


def test_locked_store_is_a_store_error(store: RunStore) -> None:
    run = store.get_or_create_run(make_spec()).run_id
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        store._conn.execute("PRAGMA busy_timeout = 50")
        with pytest.raises(StoreError, match="locked"):
            store.record(run, accepted=[AcceptedSlot(0, 1, 1, 3)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.record(run, accepted=[AcceptedSlot(0, 1, 1, 3)])
    assert store.counts(run).slots == 1
