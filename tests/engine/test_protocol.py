"""A model that does not follow the answer protocol gets that verdict, not a traceback (15.4)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from _fakes import PERSONAS
from persona_collapse.backends.base import Backend, Generation, Prompt
from persona_collapse.cli import main
from persona_collapse.core.config import SamplingSettings
from persona_collapse.core.instrument import instrument_from_dict, mfq30
from persona_collapse.core.prompts import SHORT_MAX_TOKENS
from persona_collapse.engine.collect import run_collection
from persona_collapse.store.sqlite import RunStore


class ChattyBackend(Backend):
    """A weak model: one-token replies are words; long replies echo the scale, and
    with ``explicit`` they then state an answer ("I would rate it N")."""

    name = "chatty"

    def __init__(self, *, explicit: bool) -> None:
        self.explicit = explicit

    async def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> list[Generation]:
        rng = random.Random(seed)
        if max_tokens == SHORT_MAX_TOKENS:
            return [Generation(tuple("Item" for _ in range(n)))]
        texts = []
        for _ in range(n):
            text = "Item: 0 = not at all relevant, 5 = extremely relevant."
            if self.explicit:
                text += f" I would rate it {rng.randint(0, 5)}."
            texts.append(text)
        return [Generation(tuple(texts))]


def _store_run(path: Path, *, explicit: bool) -> str:
    data = mfq30().to_dict()
    data["name"] = "mfq-4"
    data["items"] = data["items"][:4]
    with RunStore.open(path) as store:
        summary = run_collection(
            store,
            None,
            ChattyBackend(explicit=explicit),
            PERSONAS,
            instrument_from_dict(data),
            progress=False,
            protocol=SamplingSettings(repetitions=2, temperature=1.0),
        )
        return summary.run.name


def test_metrics_marks_a_run_that_does_not_follow_the_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    name = _store_run(db, explicit=True)
    capsys.readouterr()
    assert main(["metrics", str(db), "--format", "json", "--persona-boot", "20"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == name and row["interpretable"] is False
    assert row["protocol"]["measures"]["first_reply_rating_share"] == 0.0
    assert row["S"] == row["S"]  # the numbers are still there
    assert main(["metrics", str(db), "--persona-boot", "20"]) == 0
    table = " ".join(capsys.readouterr().out.split())
    assert "not interpretable" in table and "does not follow the protocol" in table


def test_metrics_without_any_rating_says_why_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    _store_run(db, explicit=False)  # every long reply is an echo: nothing is stored
    capsys.readouterr()
    code = main(["metrics", str(db), "--persona-boot", "20"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    joined = " ".join(err.split())
    assert "does not follow the protocol" in joined and "no S/R can be computed" in joined
