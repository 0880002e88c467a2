"""One on-scale mass definition, warned about and recorded by the engine (issue 15.3, 9.20)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from persona_collapse.backends.base import MIN_SCALE_MASS, SCALE_MASS_TEMPERATURE, Message, Prompt
from persona_collapse.core.config import SamplingSettings
from persona_collapse.core.instrument import instrument_from_dict, mfq30
from persona_collapse.engine.collect import run_collection
from persona_collapse.engine.protocol import ProtocolCheck, check_exact, scale_mass_summary
from persona_collapse.serve import SimServerSettings, serve_in_thread
from persona_collapse.store.sqlite import RunStore

pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from persona_collapse.backends.openai_compat import OpenAIBackend

PERSONAS = ("A retired sailor.", "A young nurse.", "A chess teacher.")


def _instrument(n_items: int = 3) -> object:
    data = mfq30().to_dict()
    data["name"] = f"mfq-{n_items}"
    data["items"] = data["items"][:n_items]
    return instrument_from_dict(data)


def test_summary_and_exact_verdict() -> None:
    summary = scale_mass_summary([0.9, 0.2, 0.005, 0.6])
    assert summary["temperature"] == SCALE_MASS_TEMPERATURE == 1.0
    assert summary["threshold"] == MIN_SCALE_MASS
    assert summary["low_mass_cells"] == 2 and summary["cells"] == 4
    assert check_exact([0.9, 0.8, 0.01]).follows
    low = check_exact([0.01, 0.02, 0.9])
    assert low is not None and not low.follows and "T = 1" in low.reasons[0]
    assert ProtocolCheck.from_dict(low.to_dict()) == low


def test_openai_exact_run_warns_counts_and_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 70 % of the simulated first-token probability is off the scale in every cell.
    settings = SimServerSettings(sim_params={"unparseable_rate": 0.7})
    with serve_in_thread(settings) as srv, RunStore.open(tmp_path / "runs.db") as store:
        backend = OpenAIBackend("simulator", base_url=srv.url, api_key_env=None)
        with caplog.at_level(logging.WARNING, logger="persona_collapse.engine.collect"):
            summary = run_collection(
                store,
                None,
                backend,
                PERSONAS,
                _instrument(),
                progress=False,
                protocol=SamplingSettings(mode="exact", temperature=1.0),
            )
        meta = store.get_run(summary.run.run_id).metadata
        masses = store.distributions_frame(summary.run.run_id)["mass"]
    assert masses.between(0.25, 0.35).all()  # stored per cell
    assert meta["scale_mass"]["low_mass_cells"] == 9 and meta["scale_mass"]["temperature"] == 1.0
    assert meta["protocol_check"]["follows"] is False
    warnings = [r.getMessage() for r in caplog.records]
    assert sum(w.startswith("item ") and "on scale values" in w for w in warnings) == 9
    assert any("does not follow the protocol" in w for w in warnings)


def test_bare_distribution_calls_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    # The judge asks for distributions over 0..100 with most mass elsewhere: no MFQ warning.
    settings = SimServerSettings(sim_params={"unparseable_rate": 0.9})
    prompt = Prompt(
        (Message("user", "Whether or not someone was cruel. Reply 0-5."),),
        persona="A baker.",
        item_id=11,
    )

    async def ask(url: str) -> float:
        backend = OpenAIBackend("simulator", base_url=url, api_key_env=None, min_scale_mass=0.9)
        try:
            dist = await backend.distributions([prompt], scale=range(6), temperature=1.0)
        finally:
            await backend.aclose()
        return dist[0].mass

    with serve_in_thread(settings) as srv, caplog.at_level(logging.WARNING):
        mass = asyncio.run(ask(srv.url))
    assert mass < 0.9
    assert not any("scale values" in r.getMessage() for r in caplog.records)
