"""Hostile and damaged data files (issue 9): CSV injection, corrupt stores, odd CSV contents."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from test_core import HEADER, _assert_user_error, _persona_csv, _run

from persona_collapse.core.csvio import (
    neutralise_text,
    records_csv_text,
    unneutralise_text,
    write_csv_atomic,
)
from persona_collapse.store.reference_csv import read_ratings_csv
from persona_collapse.store.sqlite import RunStore

FORMULAS = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\r=x", "'=already"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --- item 5: CSV formula injection ---------------------------------------------------------


def _hostile_csv(path: Path) -> Path:
    """Two personas, every item once; replies that a spreadsheet would run as formulas."""
    lines = [HEADER]
    for p in range(2):
        for q in range(1, 31):
            reply = FORMULAS[(p + q) % len(FORMULAS)]
            rating = -1 if q == 5 else (p + q) % 6
            quoted = '"' + reply.replace('"', '""') + '"'
            lines.append(f"{p},{q},1,{rating},0,{quoted},2026-01-01T00:00:00\n")
    path.write_text("".join(lines), newline="")
    return path


def test_export_neutralises_formulas_and_raw_csv_opts_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _hostile_csv(tmp_path / "hostile.csv")
    store = tmp_path / "s.db"
    code, _, err = _run(capsys, "import", src, "--store", store, "--name", "=evil")
    assert code == 0, err
    safe = tmp_path / "safe.csv"
    code, _, err = _run(capsys, "export", store, "--run", "=evil", "-o", safe)
    assert code == 0, err
    rows = _rows(safe)
    for row in rows:
        assert row["response"][:1] not in ("=", "+", "-", "@", "\t", "\r"), row
    # numbers stay numbers: the failed parse keeps its -1
    assert {r["rating"] for r in rows if r["question_id"] == "5"} == {"-1"}
    # the escape reverses: reading our own export gives back the replies exactly
    original = read_ratings_csv(src)
    again = read_ratings_csv(safe)
    assert again["response"].tolist() == original["response"].tolist()

    raw = tmp_path / "raw.csv"
    code, _, err = _run(capsys, "export", store, "--run", "=evil", "-o", raw, "--raw-csv")
    assert code == 0, err
    assert [r["response"] for r in _rows(raw)] == original["response"].tolist()


def test_csv_writer_leaves_numbers_alone(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "variant": ["=HYPERLINK(1)", "@x", "plain", "-0.5"],
            "family": ["+f", "-g", "h", "i"],
            "S": [-0.5, 1.0, -2.0, 0.0],
            "n": [-1, 2, 3, 4],
        }
    )
    path = write_csv_atomic(frame, tmp_path / "t.csv")
    back = pd.read_csv(path)
    assert back["S"].tolist() == [-0.5, 1.0, -2.0, 0.0]
    assert back["n"].tolist() == [-1, 2, 3, 4]
    assert back["variant"].tolist() == ["'=HYPERLINK(1)", "'@x", "plain", "-0.5"]
    assert back["family"].tolist() == ["'+f", "'-g", "h", "i"]
    for value in [*FORMULAS, "", "x", "'", "''=a", "-1", "1e-3"]:
        assert unneutralise_text(neutralise_text(value)) == value


def test_records_csv_is_neutralised_like_every_csv() -> None:
    # The trajectory and sensitivity tables carry family and variant names.
    text = records_csv_text(
        [
            {"family": "=HYPERLINK(1)", "S": -0.5, "per_domain": {"a": 1}},
            {"family": "plain\rline", "S": 1.0, "extra": "-g"},
        ]
    )
    rows = list(csv.DictReader(text.splitlines(keepends=True)))
    assert list(rows[0]) == ["family", "S", "extra"]  # first-seen order, no nested values
    assert rows[0]["family"] == "'=HYPERLINK(1)" and rows[0]["S"] == "-0.5"
    assert rows[1]["family"] == "plain\rline" and rows[1]["extra"] == "'-g"
    assert records_csv_text([], fieldnames=["a", "b"]) == "a,b\n"


STUDY = """\
name: inj
output: out
protocol: {personas: default, max_personas: 2, repetitions: 2, seed: 1}
analysis: {n_persona_boot: 10, n_rerun_boot: 2}
backends: {sim: {kind: simulator, options: {seed: 2}}}
families:
  "=HYPERLINK(1)":
    base: {backend: sim, model: base}
    "@insecure": {backend: sim, model: insecure}
"""


def test_study_csv_tables_are_neutralised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "study.yaml").write_text(STUDY)
    # The CSV tables are what is checked; figures are drawn elsewhere (test_study.py).
    code, _, err = _run(
        capsys, "study", "run", tmp_path / "study.yaml", "--no-progress", "--no-figures"
    )
    assert code == 0, err
    out = tmp_path / "out"
    for name in ("metrics.csv", "comparison.csv", "counts.csv", "significance.csv"):
        cells = [c for row in csv.reader((out / name).open(newline="")) for c in row]
        assert "'=HYPERLINK(1)" in cells, name
        assert not [c for c in cells if c[:1] in ("=", "@")], name
    comparison = pd.read_csv(out / "comparison.csv")
    assert comparison["dR_pct"].dtype.kind == "f"  # negative changes stay numbers
    assert (comparison["dR_pct"] < 0).any()


# --- item 8: fewer than two complete personas ------------------------------------------------


def test_metrics_with_one_persona_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _persona_csv(tmp_path / "one.csv", personas=1)
    code, _, err = _run(capsys, "metrics", path)
    _assert_user_error(code, err, "one.csv", "only 1 of 1 personas are complete")


def test_metrics_with_junk_replies_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # what a server answering junk leaves: every rating a failed parse
    lines = [HEADER] + [
        f"{p},{q},1,-1,0,junk,2026-01-01T00:00:00\n" for p in range(3) for q in range(1, 31)
    ]
    path = tmp_path / "junk.csv"
    path.write_text("".join(lines))
    code, _, err = _run(capsys, "metrics", path)
    _assert_user_error(code, err, "junk.csv", "only 0 of 3 personas are complete")


def test_run_with_one_persona_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "one.db"
    code, _, err = _run(
        capsys,
        "run",
        "--backend",
        "simulator",
        "--model",
        "base",
        "--max-personas",
        "1",
        "--repetitions",
        "1",
        "--no-self",
        "--no-progress",
        "--store",
        store,
    )
    # Issue 11.4: max_personas >= 2 for runs as for studies (S needs two personas), so
    # the mistake is caught before any request and nothing is written.
    _assert_user_error(code, err, "max_personas", "greater than or equal to 2")
    assert not store.exists()


# --- item 15: a file that is not a CSV at all ------------------------------------------------

NOT_CSV: list[tuple[str, bytes, str]] = [
    ("study.yaml", STUDY.encode(), "a YAML file"),
    ("config.yaml", b"# a run\nbackend: simulator\nmodel: base, insecure\n", "a YAML file"),
    ("runs.csv", b'[{"persona_id": 0, "rating": 3}]\n', "a JSON file"),
    ("runs.json", b'{\n  "S": 1.0,\n  "a": [1, 2]\n}\n', "a JSON file"),
    ("runs.csv.gz", b"\x1f\x8b\x08\x00" + bytes(range(40)), "gzip"),
    ("book.csv", b"PK\x03\x04" + bytes(40), "ZIP"),
    ("noise.csv", bytes(range(256)), "binary content"),
]


@pytest.mark.parametrize(("name", "content", "fragment"), NOT_CSV, ids=[n for n, _, _ in NOT_CSV])
def test_metrics_names_what_a_non_csv_file_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, fragment: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, _, err = _run(capsys, "metrics", path)
    _assert_user_error(code, err, name, fragment, "expected a ratings CSV file")
    assert "fields as in the header" not in err


def test_import_of_an_sqlite_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.db"
    with RunStore.open(other):
        pass
    code, _, err = _run(capsys, "import", other, "--store", tmp_path / "s.db")
    _assert_user_error(code, err, "other.db", "SQLite database")


def test_metrics_on_an_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "e.csv").write_bytes(b"")
    code, _, err = _run(capsys, "metrics", tmp_path / "e.csv")
    _assert_user_error(code, err, "e.csv", "empty")


def _metrics_json(capsys: pytest.CaptureFixture[str], *args: object) -> list[dict[str, object]]:
    code, out, err = _run(
        capsys, "metrics", *args, "--format", "json", "--persona-boot", "20", "--rerun-boot", "5"
    )
    assert code == 0, err
    rows: list[dict[str, object]] = json.loads(out)
    return rows


# --- item 11: catch items (outside the scored set) -------------------------------------------


@pytest.mark.parametrize("with_catch", [1, 2])
def test_catch_item_rows_are_ignored_with_a_count(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    with_catch: int,
) -> None:
    plain = _persona_csv(tmp_path / "plain.csv")
    text = plain.read_text()
    # catch item 31 answered by the first personas only (as when it was asked of a few)
    catch = "".join(f"{p},31,1,0,0,0,2026-01-01T00:00:00\n" for p in range(with_catch))
    (tmp_path / "catch.csv").write_text(text + catch)
    [base] = _metrics_json(capsys, plain)
    with caplog.at_level(logging.WARNING):
        [mixed] = _metrics_json(capsys, tmp_path / "catch.csv")
    for key in ("S", "sigma_bar", "personas", "questions", "excluded_personas"):
        assert mixed[key] == base[key], key
    warned = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert any(f"ignored {with_catch} row(s) of item(s) 31" in m for m in warned), warned


# --- item 12: exact duplicate rows -----------------------------------------------------------


def test_exact_duplicate_rows_count_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    plain = _persona_csv(tmp_path / "plain.csv")
    body = plain.read_text().split("\n", 1)[1]
    doubled = tmp_path / "doubled.csv"
    doubled.write_text(plain.read_text() + body)
    [base] = _metrics_json(capsys, plain)
    with caplog.at_level(logging.WARNING):
        [twice] = _metrics_json(capsys, doubled)
    assert twice["sigma_bar"] == base["sigma_bar"]
    assert twice["S"] == base["S"]
    assert twice["valid_ratings"] == base["valid_ratings"]
    lines = len(body.splitlines())
    assert any(
        f"ignored {lines} row(s) that repeat an earlier row exactly (first at line {lines + 2})"
        in r.getMessage()
        for r in caplog.records
    )
    # importing keeps one copy too
    store = tmp_path / "s.db"
    code, out, err = _run(capsys, "import", doubled, "--store", store)
    assert code == 0, err
    assert f"({lines} slots)" in out


def test_retries_of_one_slot_are_not_duplicates(tmp_path: Path) -> None:
    # same slot, same rating, different timestamps: a retry, kept
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "0,1,1,3,0,3,2026-01-01T00:00:00\n0,1,1,3,0,3,2026-01-01T00:00:01\n")
    assert len(read_ratings_csv(path)) == 2


# --- item 13: incomplete runs ----------------------------------------------------------------


def test_metrics_reports_an_incomplete_csv_and_require_complete_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = _persona_csv(tmp_path / "full.csv", personas=4, reps=3)
    [row] = _metrics_json(capsys, full)
    assert row["complete"] is True and row["slots"] == "360/360"
    lines = full.read_text().splitlines(keepends=True)
    kept = [
        ln
        for ln in lines
        # persona 3 lost repetition 3 everywhere; persona 2's item 7 failed to parse
        if not ln.startswith("3,") or ln.split(",")[2] != "3"
    ]
    kept = [
        ",".join([*ln.split(",")[:3], "-1", *ln.split(",")[4:]]) if ln.startswith("2,7,") else ln
        for ln in kept
    ]
    part = tmp_path / "part.csv"
    part.write_text("".join(kept))
    [row] = _metrics_json(capsys, part)
    assert row["complete"] is False
    assert row["slots"] == "330/360"
    assert row["slots_collected"] == 330 and row["slots_planned"] == 360
    assert row["dropped_personas"] == [2]
    code, out, _ = _run(capsys, "metrics", part, "--persona-boot", "20", "--rerun-boot", "5")
    assert code == 0
    assert "330/360" in out and "incomplete run 'part'" in out and "persona(s) 2 dropped" in out
    code, _, err = _run(capsys, "metrics", part, "--require-complete")
    _assert_user_error(code, err, "'part'", "330/360 slots", "persona(s) 2 dropped")
    code, _, err = _run(capsys, "metrics", full, "--require-complete", "--persona-boot", "20")
    assert code == 0, err


def test_metrics_reports_missing_personas_of_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s.db"
    code, _, err = _run(
        capsys,
        "run",
        *("--backend", "simulator", "--model", "base", "--max-personas", "4"),
        *("--repetitions", "2", "--no-self", "--no-progress", "--store", store),
    )
    assert code == 0, err
    with sqlite3.connect(store) as conn:
        conn.execute("DELETE FROM ratings WHERE persona_id = 3")
        conn.execute("DELETE FROM ratings WHERE persona_id = 2 AND repetition = 2")
    [row] = _metrics_json(capsys, store)
    assert row["complete"] is False
    assert row["slots"] == f"{2 * 30 * 2 + 30}/{4 * 30 * 2}"
    assert row["missing_personas"] == [3]
    code, _, err = _run(capsys, "metrics", store, "--require-complete")
    _assert_user_error(code, err, "slots", "no answers from persona(s) 3")


# --- item 7: a store with damaged pages ------------------------------------------------------


def _sim_store(path: Path, capsys: pytest.CaptureFixture[str], personas: int = 6) -> Path:
    code, _, err = _run(
        capsys,
        "run",
        *("--backend", "simulator", "--model", "base", "--max-personas", str(personas)),
        *("--repetitions", "3", "--no-self", "--no-progress", "--store", path),
    )
    assert code == 0, err
    return path


def _damage_rating_pages(store: Path, how_many: int = 2) -> None:
    """Overwrite leaf pages in the middle of the ratings table with garbage, as a bad disk would."""
    with sqlite3.connect(store) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            pages = [
                int(r[0])
                for r in conn.execute(
                    "SELECT pageno FROM dbstat WHERE name = 'ratings' AND pagetype = 'leaf' "
                    "ORDER BY pageno"
                )
            ]
        except sqlite3.OperationalError:
            pytest.skip("this SQLite lacks the dbstat table used to find the pages to damage")
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.close()
    assert len(pages) >= how_many + 2, pages
    middle = len(pages) // 2
    with store.open("r+b") as handle:
        for page in pages[middle : middle + how_many]:
            handle.seek((page - 1) * size)
            handle.write(b"\x0d" + b"\xff" * 300)  # a leaf-page type byte, then nonsense


@pytest.fixture
def damaged_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """A damaged store and an export of its run taken before the damage."""
    store = _sim_store(tmp_path / "runs.db", capsys)
    before = tmp_path / "before.csv"
    code, _, err = _run(capsys, "export", store, "--run", "base", "-o", before)
    assert code == 0, err
    _damage_rating_pages(store)
    return store, before


@pytest.mark.parametrize(
    "command",
    [
        ["metrics", "{store}"],
        ["runs", "{store}"],
        ["export", "{store}", "--run", "base", "-o", "{out}"],
        ["compare", "{store}", "{store}", "--base", "base"],
        [
            "run",
            *("--backend", "simulator", "--model", "base", "--max-personas", "6"),
            *("--repetitions", "3", "--no-self", "--no-progress", "--store", "{store}"),
        ],
    ],
    ids=["metrics", "runs", "export", "compare", "run"],
)
def test_damaged_store_is_one_line_naming_the_file(
    damaged_store: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    store, _ = damaged_store
    args = [a.format(store=store, out=tmp_path / "out.csv") for a in command]
    code, _, err = _run(capsys, *args)
    _assert_user_error(
        code, err, str(store), "damaged", "pcollapse store check", "pcollapse store salvage"
    )
    assert not (tmp_path / "out.csv").exists()


def test_store_check_and_salvage(
    damaged_store: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, before = damaged_store
    code, out, err = _run(capsys, "store", "check", store)
    _assert_user_error(code, err, str(store), "integrity_check", "store salvage")

    saved = tmp_path / "saved.csv"
    code, out, err = _run(capsys, "store", "salvage", store, saved, "--run", "base")
    assert code == 0, err
    assert "unreadable row ids" in out
    original = read_ratings_csv(before)
    rescued = read_ratings_csv(saved)
    assert 0 < len(rescued) < len(original)
    # every saved row is an original row, unchanged
    key = ["persona_id", "item_id", "repetition", "rating", "response", "collected_at"]
    merged = rescued.merge(original, on=key, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()
    # the salvaged file is a normal ratings file again
    code, _, err = _run(capsys, "import", saved, "--store", tmp_path / "new.db")
    assert code == 0, err

    everything = tmp_path / "all.csv"
    code, out, err = _run(capsys, "store", "salvage", store, everything)
    assert code == 0, err
    assert set(pd.read_csv(everything)["run"]) == {"base"}
    code, _, err = _run(capsys, "store", "salvage", store, everything)
    _assert_user_error(code, err, "all.csv", "already exists")


def test_store_check_on_a_sound_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _sim_store(tmp_path / "ok.db", capsys, personas=2)
    code, out, err = _run(capsys, "store", "check", store)
    assert code == 0, err
    assert "ok" in out


# --- item 14: oversized template and persona files -------------------------------------------


def _sparse(path: Path, size: int, head: bytes) -> Path:
    """A file of ``size`` bytes that takes no disk space beyond its first bytes."""
    with path.open("wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return path


@pytest.mark.parametrize(
    ("option", "name", "head", "size"),
    [
        ("--template", "template.yaml", b"persona_system: x\n#", 50 << 20),
        ("--personas", "personas.txt", b"A nurse.\nA judge.\n", 200 << 20),
    ],
    ids=["template", "personas"],
)
def test_oversized_input_files_are_refused_before_reading(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    name: str,
    head: bytes,
    size: int,
) -> None:
    path = _sparse(tmp_path / name, size, head)
    code, _, err = _run(
        capsys,
        "run",
        *("--backend", "simulator", "--model", "base", option, path),
        *("--repetitions", "1", "--no-self", "--no-progress", "--store", tmp_path / "s.db"),
    )
    _assert_user_error(code, err, name, "MiB", "larger than")
    assert not (tmp_path / "s.db").exists()


# --- item 14: memory of metrics on a large CSV file ------------------------------------------

_CHILD = """
import resource, sys
import pandas, pyarrow.csv
from persona_collapse.cli import main
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
code = main(sys.argv[1:])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"RSS {before} {after}", file=sys.stderr)
sys.exit(code)
"""


def _bench_module() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "memory_bench.py"
    spec = importlib.util.spec_from_file_location("memory_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metrics_memory_stays_within_three_times_the_file(tmp_path: Path) -> None:
    path = tmp_path / "large_temp01.csv"
    size = _bench_module().generate(path, 30.0, seed=1)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "metrics", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    before, after = (int(v) * 1024 for v in done.stderr.split("RSS ")[1].split())
    # What reading and analysing the file added on top of the imported program:
    # at most 3x the file plus a fixed allowance for the bootstrap's work arrays
    # (6f24845 needed 13x the file here; bench/memory_bench.py measures 200 MB).
    assert after - before <= 3 * size + (96 << 20), (after - before) / size
    [row] = json.loads(done.stdout)
    assert row["complete"] is True


def test_reading_without_text_keeps_only_numbers(tmp_path: Path) -> None:
    src = _hostile_csv(tmp_path / "h.csv")
    full = read_ratings_csv(src)
    lean = read_ratings_csv(src, text=False)
    assert list(lean.columns) == list(full.columns)
    for column in ("persona_id", "item_id", "repetition", "rating", "failures"):
        assert lean[column].tolist() == full[column].tolist()
    assert set(lean["response"]) == {""}
