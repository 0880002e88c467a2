"""Geometry tables from hidden-states files built in the test (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from persona_collapse.backends.hidden_states import HiddenStates, load_states, save_states  # noqa: E402
from persona_collapse.core.errors import ConfigError  # noqa: E402
from persona_collapse.report.geometry import analyse_geometry, write_geometry_outputs  # noqa: E402
from persona_collapse.stats.geometry import participation_ratio  # noqa: E402

PERSONAS = tuple(f"persona {k}" for k in range(10))
TEMPLATES = ("A {persona}", "B {persona}")


def _states(name: str, seed: int, personas: tuple[str, ...] = PERSONAS) -> HiddenStates:
    rng = np.random.default_rng(seed)
    n_p, n_t = len(personas), len(TEMPLATES)
    centres = rng.normal(size=(n_p, 1, 3, 6))
    grid = centres + 0.1 * rng.normal(size=(n_p, n_t, 3, 6))
    states = grid.transpose(1, 0, 2, 3).reshape(n_t * n_p, 3, 6)  # template-major
    return HiddenStates(
        variant=name,
        base_model="m",
        adapter=None if name == "base" else f"/a/{name}",
        states=states.astype(np.float16),
        persona_ids=np.tile(np.arange(n_p), n_t),
        template_ids=np.repeat(np.arange(n_t), n_p),
        layer_indices=np.arange(3),
        personas=personas,
        templates=TEMPLATES,
        fingerprint=name,
    )


def test_analysis_without_excess_writes_tables(tmp_path: Path) -> None:
    saved = {
        v: save_states(tmp_path / f"{v}.npz", _states(v, s)) for v, s in (("base", 1), ("x", 2))
    }
    family = {v: load_states(p) for v, p in saved.items()}
    assert family["x"].adapter == "/a/x" and family["base"].adapter is None
    analysis = analyse_geometry(family, base="base")
    assert analysis.excess is None
    written = write_geometry_outputs(analysis, tmp_path / "out", figures=False)
    assert sorted(p.name for p in written) == [
        "layer_summary.csv",
        "pr_saturation.csv",
        "resolution_floor.csv",
    ]
    layers = pd.read_csv(tmp_path / "out" / "layer_summary.csv")
    row = layers[(layers["variant"] == "x") & (layers["layer"] == 1)].iloc[0]
    x = family["x"].by_template(0)[:, 1].astype(np.float64)
    assert row["participation_ratio"] == pytest.approx(participation_ratio(x))
    floor = pd.read_csv(tmp_path / "out" / "resolution_floor.csv")
    assert (floor["fisher"] > 5).all()  # persona centres far apart, templates close


def test_plot_functions_draw_on_given_or_new_axes() -> None:
    pytest.importorskip("matplotlib")
    from persona_collapse.report.figures import new_axes
    from persona_collapse.report.geometry import plot_excess, plot_layer_curve

    family = {v: _states(v, s) for v, s in (("base", 1), ("t", 2), ("c", 3))}
    analysis = analyse_geometry(family, base="base", treatment="t", control="c", draws=5)
    ax = plot_excess(analysis)  # a new figure's axes
    line = ax.get_lines()[0]
    np.testing.assert_array_equal(line.get_ydata(), analysis.excess.excess_pp)  # type: ignore[union-attr]
    given = new_axes()
    assert plot_layer_curve(analysis, "clumpiness", ax=given, linewidth=3) is given
    assert [ln.get_label() for ln in given.get_lines()] == ["base", "t", "c"]
    assert given.get_lines()[0].get_linewidth() == 3


def test_mismatched_family_is_refused() -> None:
    other = _states("x", 2, personas=PERSONAS[:8])
    with pytest.raises(ConfigError, match="other personas"):
        analyse_geometry({"base": _states("base", 1), "x": other}, base="base")
    with pytest.raises(ConfigError, match="both a treatment and a control"):
        analyse_geometry({"base": _states("base", 1)}, base="base", treatment="base")
    with pytest.raises(ConfigError, match="no hidden states"):
        analyse_geometry({"base": _states("base", 1)}, base="nope")
