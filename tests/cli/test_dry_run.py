"""``pcollapse run --dry-run`` and the pacing/price options of ``run``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persona_collapse.cli import main
from persona_collapse.core.config import RunConfig
from persona_collapse.engine.costs import ModelPrices


def test_dry_run_json_forecast_with_prices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("my-model: {input: 2.0, cached_input: 1.0, output: 8.0}\n")
    store = tmp_path / "runs.db"
    code = main(
        [
            "run",
            "--backend",
            "openai",
            "--model",
            "my-model",
            "--prices",
            str(prices),
            "--max-personas",
            "10",
            "--store",
            str(store),
            "--dry-run",
            "--format",
            "json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    persona, self_run = data["runs"]
    assert persona["requests"] == 300 and persona["requests_without_n"] == 3000
    assert self_run["requests"] == 30
    assert data["requests"] == 330
    expected = (data["prompt_tokens"] * 2.0 + data["completion_tokens"] * 8.0) / 1e6
    assert data["cost_usd"] == pytest.approx(expected)
    assert data["prices"] == {"input": 2.0, "output": 8.0, "cached_input": 1.0}
    assert not store.exists()


def test_dry_run_counts_only_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.db"
    common = ["--max-personas", "2", "--repetitions", "2", "--store", str(store), "--no-self"]
    assert main(["run", *common, "--no-progress", "--format", "json"]) == 0
    capsys.readouterr()
    assert main(["run", *common, "--dry-run", "--format", "json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["missing"] == 0 and run["requests"] == 0 and run["units"] == 120


def test_run_options_reach_the_config(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "backend: simulator\nrequests_per_minute: 600\ntokens_per_minute: 90000\n"
        "adaptive_concurrency: false\nprices: {input: 1, output: 2}\n"
    )
    cfg = RunConfig.from_yaml(config)
    assert cfg.requests_per_minute == 600 and cfg.tokens_per_minute == 90000
    assert cfg.prices == ModelPrices(input=1, output=2) and not cfg.adaptive_concurrency
    config.write_text("prices: {input: -1, output: 2}\n")
    with pytest.raises(Exception, match=r"prices\.input"):
        RunConfig.from_yaml(config)


def test_missing_price_entry_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("other: {input: 1, output: 1}\n")
    code = main(["run", "--model", "base", "--prices", str(prices), "--dry-run"])
    assert code == 2
    assert "no prices for model 'base'" in capsys.readouterr().err
