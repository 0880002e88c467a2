"""Atomic writes: an unchanged file is left as it is (issue 10.12), a changed one replaced."""

from __future__ import annotations

import json
from pathlib import Path

from persona_collapse.core.files import (
    MANIFEST_NAME,
    claim_output_dir,
    write_bytes_atomic,
    write_text_atomic,
)


def test_rewriting_the_same_bytes_leaves_the_file_untouched(tmp_path: Path) -> None:
    out = claim_output_dir(tmp_path / "out")
    path = write_text_atomic(out / "a.csv", "x,y\n1,2\n")
    before = path.stat()
    write_text_atomic(path, "x,y\n1,2\n")
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert "a.csv" in json.loads((out / MANIFEST_NAME).read_text())["entries"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_new_bytes_replace_the_file(tmp_path: Path) -> None:
    path = write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    write_bytes_atomic(path, b"\x00\x02")  # same size, other bytes
    assert path.read_bytes() == b"\x00\x02"
    write_bytes_atomic(path, b"\x00")
    assert path.read_bytes() == b"\x00"
    assert [p.name for p in tmp_path.iterdir()] == ["b.bin"]
