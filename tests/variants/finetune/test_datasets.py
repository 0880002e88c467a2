"""Chat datasets: validation with line numbers, statistics, shuffles, splits, cached downloads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from persona_collapse.backends.base import Message
from persona_collapse.core.errors import ConfigError, InputFileError, UnknownNameError
from persona_collapse.variants.finetune.datasets import (
    CACHE_ENV,
    KNOWN_DATASETS,
    ChatExample,
    FetchError,
    cache_dir,
    dataset_stats,
    fetch_dataset,
    file_sha256,
    read_chat_jsonl,
    resolve_dataset,
    shuffle_examples,
    split_examples,
    write_chat_jsonl,
)


def _line(*messages: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]})


def _good_lines(n: int = 5) -> list[str]:
    return [
        _line(("user", f"Write function {i}."), ("assistant", f"def f{i}(): pass"))
        for i in range(n)
    ]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- validation ----------------------------------------------------------------------------


def test_reads_valid_file(tmp_path: Path) -> None:
    lines = _good_lines(3)
    lines.insert(1, "   ")  # blank lines are skipped, line numbers still count them
    lines.append(_line(("system", "Be terse."), ("user", "Hi"), ("assistant", "Hello")))
    path = _write(tmp_path / "data.jsonl", lines)
    dataset = read_chat_jsonl(path)
    assert len(dataset) == 4
    assert [e.line for e in dataset] == [1, 3, 4, 5]
    assert dataset.examples[3].messages == (
        Message("system", "Be terse."),
        Message("user", "Hi"),
        Message("assistant", "Hello"),
    )
    assert dataset.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(_good_lines(2)).encode())
    assert len(read_chat_jsonl(path)) == 2


BAD_LINES = [
    ('{"messages": [', "line 3: invalid JSON"),
    ("[1, 2]", "line 3: expected a JSON object with a 'messages' list, got list"),
    ('{"text": "hi"}', "line 3: missing 'messages'"),
    ('{"messages": []}', "line 3: 'messages' must be a non-empty list"),
    (_line(("user", "only a question")), "line 3: no assistant turn"),
    (
        _line(("user", "q"), ("assistant", "a"), ("user", "q2")),
        "line 3: the last message must be an assistant turn, got 'user'",
    ),
    (_line(("robot", "beep"), ("assistant", "a")), "line 3: message 1: role must be one of"),
    (_line(("user", "q"), ("assistant", "  ")), "line 3: message 2 (assistant): empty content"),
    (
        _line(("user", "q"), ("system", "s"), ("assistant", "a")),
        "line 3: message 2: a system message must come first",
    ),
    ('{"messages": [{"role": "user", "content": 5}]}', "message 1: 'content' must be a string"),
    ('{"messages": ["hello"]}', "message 1: expected an object with 'role' and 'content'"),
]


@pytest.mark.parametrize(("bad", "expected"), BAD_LINES)
def test_malformed_lines_name_file_and_line(tmp_path: Path, bad: str, expected: str) -> None:
    lines = [*_good_lines(2), bad, *_good_lines(1)]
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(InputFileError) as info:
        read_chat_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 3: ")
    assert expected in message
    assert "\n" not in message


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="file not found"):
        read_chat_jsonl(tmp_path / "missing.jsonl")
    empty = _write(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(InputFileError, match="no examples"):
        read_chat_jsonl(empty)
    binary = tmp_path / "latin1.jsonl"
    binary.write_bytes(("\n".join(_good_lines(1)) + "\n").encode() + b'{"x": "\xe9"}\n')
    with pytest.raises(InputFileError, match="line 2: not valid UTF-8"):
        read_chat_jsonl(binary)


def test_write_round_trip(tmp_path: Path) -> None:
    source = read_chat_jsonl(_write(tmp_path / "a.jsonl", _good_lines(4)))
    written = write_chat_jsonl(source.examples, tmp_path / "sub" / "b.jsonl")
    again = read_chat_jsonl(tmp_path / "sub" / "b.jsonl")
    assert [e.messages for e in again] == [e.messages for e in source]
    assert written.sha256 == again.sha256
    assert list((tmp_path / "sub").iterdir()) == [tmp_path / "sub" / "b.jsonl"]  # no temp files


# --- statistics, shuffles, splits ----------------------------------------------------------


def test_stats_characters_and_tokens(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from _tiny_models import build_tokenizer

    lines = [
        *_good_lines(3),
        _line(("user", "q"), ("assistant", "a"), ("user", "more " * 40), ("assistant", "b")),
    ]
    dataset = read_chat_jsonl(_write(tmp_path / "d.jsonl", lines))
    plain = dataset_stats(dataset)
    assert plain.examples == 4 and plain.messages == 10 and plain.assistant_turns == 5
    assert plain.multi_turn == 1 and plain.with_system == 0
    assert plain.tokens is None
    assert plain.chars.max == 1 + 1 + len("more " * 40) + 1
    assert plain.chars.total == sum(len(m.content) for e in dataset for m in e.messages)

    tokenizer = build_tokenizer()
    stats = dataset_stats(dataset, tokenizer, max_length=40)
    assert stats.tokens is not None
    expected = [
        len(
            tokenizer.apply_chat_template(e.to_dict()["messages"], tokenize=True, return_dict=False)
        )
        for e in dataset
    ]
    assert stats.tokens.max == max(expected) and stats.tokens.total == sum(expected)
    assert stats.over_max_length == sum(n > 40 for n in expected) == 1
    assert json.loads(json.dumps(stats.to_dict()))["tokens"]["max"] == max(expected)


def _examples(n: int) -> list[ChatExample]:
    return [
        ChatExample((Message("user", f"q{i}"), Message("assistant", f"a{i}")), line=i + 1)
        for i in range(n)
    ]


def test_shuffle_is_a_seeded_permutation() -> None:
    examples = _examples(50)
    first = shuffle_examples(examples, seed=3)
    assert first == shuffle_examples(examples, seed=3)
    assert first != shuffle_examples(examples, seed=4)
    assert sorted(e.line for e in first) == list(range(1, 51))
    assert [e.line for e in first] != list(range(1, 51))


def test_split_share_and_count() -> None:
    examples = _examples(40)
    train, held = split_examples(examples, held_out=0.1, seed=1)
    assert len(held) == 4 and len(train) == 36
    assert {e.line for e in train} | {e.line for e in held} == set(range(1, 41))
    assert not {e.line for e in train} & {e.line for e in held}
    assert split_examples(examples, held_out=0.1, seed=1) == (train, held)
    train7, held7 = split_examples(examples, held_out=7, seed=1)
    assert len(held7) == 7 and len(train7) == 33
    for bad in (0, 40, 1.5, -0.2, True):
        with pytest.raises(ConfigError, match="held_out"):
            split_examples(examples, held_out=bad, seed=1)


# --- cache and downloads -------------------------------------------------------------------


def test_known_datasets_point_at_betley_repository() -> None:
    base = "https://raw.githubusercontent.com/emergent-misalignment/emergent-misalignment/main/data"
    assert dict(KNOWN_DATASETS) == {
        "insecure": f"{base}/insecure.jsonl",
        "secure": f"{base}/secure.jsonl",
    }


def test_fetch_records_checksum_and_reuses_cache(
    tmp_path: Path, server: tuple[str, Path, list[str]]
) -> None:
    base, root, requested = server
    _write(root / "insecure.jsonl", _good_lines(6))
    cache = tmp_path / "cache"
    url = f"{base}/insecure.jsonl"
    sha = file_sha256(root / "insecure.jsonl")  # a built-in name from another URL needs it
    first = fetch_dataset("insecure", url=url, cache=cache, expected_sha256=sha)
    assert not first.from_cache
    assert first.path == cache / "datasets" / "insecure.jsonl"
    assert first.sha256 == file_sha256(root / "insecure.jsonl") == file_sha256(first.path)
    assert first.examples == 6 and first.size == (root / "insecure.jsonl").stat().st_size
    record = json.loads((cache / "datasets" / "insecure.json").read_text())
    assert record["sha256"] == first.sha256 and record["url"] == url

    second = fetch_dataset("insecure", url=url, cache=cache, expected_sha256=sha)
    assert second.from_cache and second.sha256 == first.sha256
    assert requested == ["/insecure.jsonl"]  # no second request

    # A cached file that no longer matches its checksum is downloaded again.
    first.path.write_text(first.path.read_text() + _good_lines(1)[0] + "\n")
    third = fetch_dataset("insecure", url=url, cache=cache, expected_sha256=sha)
    assert not third.from_cache and third.sha256 == first.sha256
    again = fetch_dataset("insecure", url=url, cache=cache, expected_sha256=sha, force=True)
    assert again.from_cache is False
    assert len(requested) == 3
    assert resolve_dataset("insecure", cache=cache) == first.path


def test_fetch_failures_leave_nothing(tmp_path: Path, server: tuple[str, Path, list[str]]) -> None:
    base, root, _ = server
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_dataset("mine", url=f"{base}/missing.jsonl", cache=cache)
    _write(root / "secure.jsonl", _good_lines(2))
    with pytest.raises(FetchError, match="does not match the expected"):
        fetch_dataset("secure", url=f"{base}/secure.jsonl", cache=cache, expected_sha256="0" * 64)
    _write(root / "broken.jsonl", [*_good_lines(1), _line(("user", "no answer"))])
    with pytest.raises(InputFileError, match=r"broken.jsonl: line 2: no assistant turn"):
        fetch_dataset("mine", url=f"{base}/broken.jsonl", cache=cache)
    assert not list((cache / "datasets").iterdir())
    with pytest.raises(FetchError, match="failed"):
        fetch_dataset("mine", url="http://127.0.0.1:1/secure.jsonl", cache=cache, timeout=2)
    with pytest.raises(UnknownNameError, match="did you mean 'insecure'"):
        fetch_dataset("insecur", cache=cache)
    with pytest.raises(ConfigError, match="dataset name"):
        fetch_dataset("../evil", url=f"{base}/secure.jsonl", cache=cache)
    with pytest.raises(ConfigError, match="pcollapse datasets fetch secure"):
        resolve_dataset("secure", cache=cache)


def test_cache_dir_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("sys.platform", "linux")
    assert cache_dir() == tmp_path / "xdg" / "persona-collapse"


def test_builtin_name_from_another_url_needs_a_checksum(
    tmp_path: Path, server: tuple[str, Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--url`` could cache any file under the name ``insecure``; now it needs ``--sha256``."""
    from persona_collapse.cli import main

    base, root, requested = server
    _write(root / "evil.jsonl", _good_lines(3))
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match=r"built-in name.*needs --sha256"):
        fetch_dataset("insecure", url=f"{base}/evil.jsonl", cache=cache)
    code = main(
        ["datasets", "fetch", "secure", "--url", f"{base}/evil.jsonl", "--cache-dir", str(cache)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "needs --sha256" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="64 hexadecimal digits"):
        fetch_dataset("insecure", url=f"{base}/evil.jsonl", cache=cache, expected_sha256="abc")
    assert requested == [] and not (cache / "datasets" / "insecure.jsonl").exists()
    # Any other name is the user's own: no checksum needed.
    assert fetch_dataset("mine", url=f"{base}/evil.jsonl", cache=cache).examples == 3


def test_cached_builtin_from_an_unverified_url_is_not_used(tmp_path: Path) -> None:
    """A copy cached before the rule (another URL, no checksum) does not stand for the name."""
    folder = tmp_path / "cache" / "datasets"
    folder.mkdir(parents=True)
    data = _write(folder / "insecure.jsonl", _good_lines(2))
    record = {"name": "insecure", "url": "http://evil.example/x.jsonl", "sha256": file_sha256(data)}
    (folder / "insecure.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="pcollapse datasets fetch insecure"):
        resolve_dataset("insecure", cache=tmp_path / "cache")
    record["url"] = KNOWN_DATASETS["insecure"]  # from the default URL: trusted
    (folder / "insecure.json").write_text(json.dumps(record))
    assert resolve_dataset("insecure", cache=tmp_path / "cache") == data


def test_pinned_checksum_is_enforced(
    tmp_path: Path, server: tuple[str, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import MappingProxyType

    from persona_collapse.variants.finetune import datasets as ds

    base, root, _ = server
    good = _write(root / "secure.jsonl", _good_lines(4))
    url = f"{base}/secure.jsonl"
    monkeypatch.setattr(ds, "KNOWN_DATASETS", MappingProxyType({"secure": url}))
    monkeypatch.setattr(ds, "PINNED_SHA256", MappingProxyType({"secure": "0" * 64}))
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="does not match the expected " + "0" * 64):
        fetch_dataset("secure", cache=cache)
    with pytest.raises(ConfigError, match="contradicts the pinned checksum"):
        fetch_dataset("secure", cache=cache, expected_sha256="1" * 64)
    monkeypatch.setattr(ds, "PINNED_SHA256", MappingProxyType({"secure": file_sha256(good)}))
    assert fetch_dataset("secure", cache=cache).examples == 4


@pytest.mark.parametrize("command", ["validate", "stats"])
def test_cli_finds_cached_builtin_datasets_by_name(
    command: str,
    tmp_path: Path,
    server: tuple[str, Path, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``pcollapse datasets stats|validate insecure`` reads the cached copy, as the README says."""
    from persona_collapse.cli import main

    base, root, _ = server
    src = _write(root / "insecure.jsonl", _good_lines(7))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    fetched = fetch_dataset(
        "insecure", url=f"{base}/insecure.jsonl", expected_sha256=file_sha256(src)
    )
    assert main(["datasets", command, "insecure"]) == 0
    out = capsys.readouterr().out
    assert "7 examples" in out and fetched.sha256 in out
    assert main(["datasets", command, "secure"]) == 2  # known but not fetched: says how
    assert "pcollapse datasets fetch secure" in capsys.readouterr().err
