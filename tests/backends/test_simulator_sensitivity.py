"""The simulator's template and item-order knobs (for the sensitivity suite)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from persona_collapse.backends.simulator import PRESETS, SimulatorBackend
from persona_collapse.core.errors import ConfigError
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import BUILTIN_TEMPLATES, render_prompt
from persona_collapse.study.sensitivity import shuffled

PERSONAS = list(builtin_personas().head(20))


def _s(template: str, **options: object) -> float:
    backend = SimulatorBackend("base", template=BUILTIN_TEMPLATES[template], **options)
    return backend.true_metrics(PERSONAS, temperature=0.1).S


def test_a_template_shift_acts_under_its_template_only() -> None:
    shift = {"plain": -0.6}
    plain, formal = _s("plain", template_shift=shift), _s("formal", template_shift=shift)
    assert formal == _s("formal") == _s("default")  # the wording alone changes nothing
    assert plain < 0.5 * formal
    # The truth is the shifted differentiation's: the same as the preset moved by hand.
    by_hand = _s("default", differentiation=PRESETS["base"].differentiation - 0.6)
    assert plain == pytest.approx(by_hand, rel=1e-12)


def test_prompts_of_every_built_in_template_reach_the_right_cell() -> None:
    instrument = mfq30()
    item = instrument.active_items[3].id
    for name, template in BUILTIN_TEMPLATES.items():
        backend = SimulatorBackend("base", template=template, template_shift={"plain": -0.6})
        prompt = render_prompt(template, instrument, item, PERSONAS[2])
        # Raw text only (no persona field), as an HTTP client would send it.
        raw = type(prompt)(prompt.messages)
        (dist,) = asyncio.run(backend.distributions([raw], scale=instrument.scale, temperature=0.1))
        want = backend.cell_distributions([PERSONAS[2]], temperature=0.1, items=[item])[0, 0]
        assert np.allclose(dist.probs, want), name


def test_the_position_effect_follows_the_item_order() -> None:
    instrument = mfq30()
    order = shuffled(instrument, seed=0, index=1)
    assert [i.id for i in order.items] != [i.id for i in instrument.items]
    assert sorted(i.id for i in order.items) == sorted(i.id for i in instrument.items)
    plain = SimulatorBackend("base", instrument=instrument)
    scored = [i.id for i in instrument.items if not i.is_catch]
    first, last = scored[0], scored[-1]
    faded = SimulatorBackend("base", instrument=instrument, position_effect=0.8)
    reordered = SimulatorBackend("base", instrument=order, position_effect=0.8)

    def spread(backend: SimulatorBackend, item: int) -> float:
        dist = backend.cell_distributions(PERSONAS, temperature=0.1, items=[item])[:, 0, :]
        means = dist @ np.arange(instrument.scale_min, instrument.scale_max + 1)
        return float(np.std(means, ddof=1))

    # The first item keeps its spread, the last loses 80 % of its differentiation.
    assert spread(faded, first) == pytest.approx(spread(plain, first), rel=1e-9)
    assert spread(faded, last) < 0.5 * spread(plain, last)
    # Shuffled, other items are asked late: the per-item truth moves with the order.
    moved = [
        i.id for i in instrument.active_items if spread(reordered, i.id) != spread(faded, i.id)
    ]
    assert len(moved) > 20
    # Deterministic: a second backend gives the same truth.
    again = SimulatorBackend("base", instrument=order, position_effect=0.8)
    assert again.true_metrics(PERSONAS, temperature=0.1) == reordered.true_metrics(
        PERSONAS, temperature=0.1
    )


def test_knobs_off_leave_the_run_key_alone_and_bad_names_are_refused() -> None:
    assert "template_shift" not in SimulatorBackend("base").describe()["params"]
    described = SimulatorBackend("base", template_shift={"plain": 0.5}).describe()
    assert described["params"]["template_shift"] == {"plain": 0.5}
    with pytest.raises(ConfigError, match="plian"):
        SimulatorBackend("base", template_shift={"plian": 0.5})
    with pytest.raises(ConfigError, match="position_effect"):
        SimulatorBackend("base", position_effect=1.5)
