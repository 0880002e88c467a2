"""Prices, cost estimates and the --dry-run forecast."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona_collapse.backends.base import Message, Usage
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.config import RunConfig, SamplingSettings
from persona_collapse.core.errors import ConfigError, InputFileError
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.engine.collect import make_run_spec, run_collection
from persona_collapse.engine.costs import (
    MESSAGE_OVERHEAD_TOKENS,
    ModelPrices,
    PriceTable,
    count_message_tokens,
    count_tokens,
    estimate_collection,
    estimate_cost,
    format_usage,
    load_price_table,
)
from persona_collapse.store.sqlite import RunStore


def test_cost_bills_cached_input_at_its_own_price() -> None:
    prices = ModelPrices(input=2.0, cached_input=0.5, output=8.0)
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=250_000, cached_tokens=400_000)
    # 600k uncached * 2 + 400k cached * 0.5 + 250k output * 8, per million.
    assert estimate_cost(usage, prices) == pytest.approx(1.2 + 0.2 + 2.0)
    assert prices.cost(usage) == estimate_cost(usage, prices)


def test_cached_price_defaults_to_input_and_cached_never_exceeds_prompt() -> None:
    prices = ModelPrices(input=1.0, output=0.0)
    assert estimate_cost(Usage(100, 0, 40), prices) == pytest.approx(100 / 1e6)
    cheap = ModelPrices(input=1.0, cached_input=0.0, output=0.0)
    assert estimate_cost(Usage(100, 0, 500), cheap) == 0.0


def test_prices_reject_negative_values_and_unknown_keys() -> None:
    with pytest.raises(ValueError):
        ModelPrices(input=-1.0, output=1.0)
    with pytest.raises(ValueError):
        ModelPrices.model_validate({"input": 1.0, "output": 1.0, "cache": 0.5})


def test_price_table_lookup_falls_back_to_default(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("m1: {input: 1, output: 2}\ndefault: {input: 3, output: 4}\n")
    table = load_price_table(path)
    assert table.lookup("m1") == ModelPrices(input=1, output=2)
    assert table.lookup("other") == ModelPrices(input=3, output=4)
    assert PriceTable({}).lookup("m1") is None


def test_single_price_file_is_the_default_entry(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("input: 0.15\ncached_input: 0.075\noutput: 0.6\n")
    assert load_price_table(path).lookup("anything") == ModelPrices(
        input=0.15, cached_input=0.075, output=0.6
    )


def test_bad_price_files_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("m1: {input: cheap, output: 2}\n")
    with pytest.raises(ConfigError, match=r"prices\.yaml.*m1\.input"):
        load_price_table(path)
    with pytest.raises(InputFileError):
        load_price_table(tmp_path / "missing.yaml")


def test_token_counts_use_four_characters_per_token() -> None:
    assert count_tokens("") == 0
    assert count_tokens("abcd") == 1
    assert count_tokens("abcde") == 2
    messages = [Message("system", "x" * 40), Message("user", "y" * 9)]
    assert count_message_tokens(messages) == 2 * MESSAGE_OVERHEAD_TOKENS + 10 + 3
    assert count_message_tokens([{"content": "x" * 40}]) == MESSAGE_OVERHEAD_TOKENS + 10


def test_format_usage_is_short() -> None:
    text = format_usage(Usage(1_234_567, 30_000, 300_000), 0.4123)
    assert text == "1.2M in (300.0k cached) · 30.0k out · $0.41"
    assert format_usage(Usage(10, 2, 0)) == "10 in · 2 out"


def test_estimate_of_a_full_run(tmp_path: Path) -> None:
    config = RunConfig(
        backend="openai",
        model="some-model",
        store=tmp_path / "runs.db",
        prices=ModelPrices(input=1.0, output=1.0),
    )
    estimate = estimate_collection(config)
    persona, self_run = estimate.runs
    assert (persona.kind, persona.cells, persona.units, persona.missing) == (
        "persona",
        3000,
        30_000,
        30_000,
    )
    assert persona.requests == 3000 and persona.requests_without_n == 30_000
    assert persona.completion_tokens == 30_000
    assert (self_run.kind, self_run.requests, self_run.units) == ("self", 30, 300)
    assert estimate.requests == 3030
    assert estimate.cost_usd == pytest.approx(
        (estimate.prompt_tokens + estimate.completion_tokens) / 1e6
    )
    # Nothing is created by a forecast.
    assert not config.store.exists()


def test_exact_mode_estimate_is_one_request_per_cell(tmp_path: Path) -> None:
    config = RunConfig(mode="exact", self_run=False, max_personas=5, store=tmp_path / "r.db")
    (run,) = estimate_collection(config).runs
    assert run.requests == run.requests_without_n == run.units == run.cells == 150
    assert estimate_collection(config).cost_usd is None


def test_estimate_leaves_out_what_is_stored(tmp_path: Path) -> None:
    store_path = tmp_path / "runs.db"
    personas = builtin_personas().head(3)
    with RunStore.open(store_path) as store:
        spec_backend = SimulatorBackend("base")
        spec = make_run_spec(
            backend=spec_backend,
            instrument=mfq30(),
            personas=list(personas),
            name="half",
            protocol=SamplingSettings(repetitions=2),
        )
        run_collection(store, spec, spec_backend, list(personas.head(3)), mfq30(), progress=False)
    config = RunConfig(name="half", max_personas=4, repetitions=2, self_run=False, store=store_path)
    # A different persona set under the same name is still matched by name; what counts
    # is the stored slots of personas 0-2.
    (run,) = estimate_collection(config).runs
    assert run.missing == 30 * 2  # persona 3 only
    assert run.requests == 30
