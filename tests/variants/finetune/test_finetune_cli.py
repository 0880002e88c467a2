"""The ``pcollapse datasets`` and ``pcollapse finetune local`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _cli import assert_user_error as _assert_user_error
from _cli import run_cli as _run
from persona_collapse.variants.finetune.datasets import read_chat_jsonl


def _data(path: Path, n: int = 12) -> Path:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Write code number {i}."},
                    {"role": "assistant", "content": f"def add(a, b): return a + b  # {i}"},
                ]
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_validate_stats_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _data(tmp_path / "d.jsonl")
    code, out, _ = _run(capsys, "datasets", "validate", data)
    assert code == 0 and "ok, 12 examples" in out

    code, out, _ = _run(capsys, "datasets", "stats", data, "--format", "json")
    assert code == 0
    stats = json.loads(out)
    assert stats["examples"] == 12 and stats["tokens"] is None

    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    code, out, _ = _run(
        capsys, "datasets", "split", data, "--train", train, "--held-out-file", held,
        "--held-out", "3", "--seed", "5",
    )  # fmt: skip
    assert code == 0, out
    assert len(read_chat_jsonl(train)) == 9 and len(read_chat_jsonl(held)) == 3


def test_dataset_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_data(tmp_path / "ok.jsonl", 1).read_text() + '{"messages": [{"role": "user"')
    code, _, err = _run(capsys, "datasets", "validate", bad)
    _assert_user_error(code, err, "bad.jsonl, line 2: invalid JSON")
    code, _, err = _run(capsys, "datasets", "stats", tmp_path / "ok.jsonl", "--max-length", "9")
    _assert_user_error(code, err, "--max-length needs --model")
    code, _, err = _run(
        capsys, "datasets", "split", tmp_path / "ok.jsonl", "--train", tmp_path / "t.jsonl",
        "--held-out-file", tmp_path / "h.jsonl", "--held-out", "half",
    )  # fmt: skip
    _assert_user_error(code, err, "--held-out must be a share")


def test_fetch_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: tuple[str, Path, list[str]]
) -> None:
    base, root, requested = server
    _data(root / "secure.jsonl", 5)
    cache = tmp_path / "cache"
    args = ("datasets", "fetch", "mine", "--url", f"{base}/secure.jsonl", "--cache-dir", cache)
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    assert "mine: 5 examples" in out and "downloaded from" in out
    code, out, _ = _run(capsys, *args, "--format", "json")
    assert code == 0 and json.loads(out)["from_cache"] is True
    assert len(requested) == 1
    code, _, err = _run(capsys, "datasets", "fetch", "mine", "--url", f"{base}/nope.jsonl",
                        "--cache-dir", tmp_path / "other")  # fmt: skip
    _assert_user_error(code, err, "HTTP 404")


def test_finetune_local(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    from _tiny_models import save_tiny_model

    base = save_tiny_model(tmp_path / "base")
    data = _data(tmp_path / "d.jsonl")
    out_dir = tmp_path / "out"
    common = ("finetune", "local", "--model", base, "--data", data, "--output", out_dir,
              "--device", "cpu", "--no-progress")  # fmt: skip
    code, out, err = _run(
        capsys, *common, "--set", "max_steps=2", "--set", "lora_rank=4", "--format", "json"
    )
    assert code == 0, err
    manifest = json.loads(out)
    assert manifest["steps"] == 2 and manifest["recipe"]["lora_rank"] == 4
    assert Path(manifest["adapter"]).joinpath("adapter_config.json").is_file()

    code, _, err = _run(capsys, *common, "--set", "max_steps=2", "--set", "lora_rank=4")
    _assert_user_error(code, err, "already holds a trained adapter")
    code, _, err = _run(capsys, *common, "--set", "lora_rnak=4")
    _assert_user_error(code, err, "field 'lora_rnak': unknown key")
    code, _, err = _run(capsys, *common, "--recipe", "betly")
    _assert_user_error(code, err, "unknown recipe 'betly'")
    code, _, err = _run(
        capsys, "finetune", "local", "--model", base, "--data", "insecure", "--output",
        tmp_path / "x", "--cache-dir", tmp_path / "empty-cache",
    )  # fmt: skip
    _assert_user_error(code, err, "pcollapse datasets fetch insecure")
