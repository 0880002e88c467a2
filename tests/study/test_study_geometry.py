"""A study with ``geometry:``: hidden states of a tiny random Llama and two LoRA adapters,
collected with the study, reused on reruns, and shown in report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("matplotlib")
pd = pytest.importorskip("pandas")

from _study_helpers import write_study  # noqa: E402

from _tiny_models import save_tiny_adapter, save_tiny_model  # noqa: E402
from persona_collapse.backends import hidden_states  # noqa: E402
from persona_collapse.core.errors import ConfigError  # noqa: E402
from persona_collapse.core.personas import builtin_personas  # noqa: E402
from persona_collapse.report.geometry import render_section  # noqa: E402
from persona_collapse.report.html import esc, table  # noqa: E402
from persona_collapse.study import load_study, pipeline  # noqa: E402
from persona_collapse.study.geometry import plan_geometry  # noqa: E402
from persona_collapse.study.pipeline import report_study, run_study  # noqa: E402

PERSONAS = 6


def _study(folder: Path, *, geometry: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    model = save_tiny_model(folder / "model")
    save_tiny_adapter(model, folder / "secure", seed=31)
    save_tiny_adapter(model, folder / "insecure", seed=32)
    (folder / "personas.txt").write_text("\n".join(builtin_personas().head(PERSONAS)) + "\n")
    data = {
        "name": "geo",
        "output": "out",
        "protocol": {
            "personas": "personas.txt",
            "mode": "exact",
            "self_run": False,
            "toxic_control": False,
            "temperatures": [0.1],
        },
        "analysis": {"n_persona_boot": 100, "n_rerun_boot": 10, "seed": 1},
        "backends": {
            "tiny": {
                "kind": "transformers",
                "model": "model",
                "options": {"device": "cpu", "batch_size": 64},
            },
            "sim": {"kind": "simulator", "options": {"seed": 0}},
        },
        "families": {
            "tiny": {
                "base": {"backend": "tiny"},
                "secure": {"backend": "tiny", "options": {"adapter": "secure"}},
                "insecure": {"backend": "tiny", "options": {"adapter": "insecure"}},
                "other": {"backend": "sim", "model": "insecure"},
            },
        },
        "geometry": geometry,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_study_geometry_is_collected_reused_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _study(tmp_path / "s", geometry={"templates": 2, "draws": 12, "bands": {"top": [2, 2]}})
    study = load_study(path)
    (plan,) = plan_geometry(study)
    assert [v.name for v in plan.variants] == ["base", "secure", "insecure"]
    assert (plan.treatment, plan.control) == ("insecure", "secure")
    assert plan.skipped == ("other: not on a 'transformers' backend",)

    # Figures off: the study's other figures take most of a minute on a small machine;
    # the geometry figures are checked below.
    outcome = run_study(study, progress=False, figures=False)
    out = outcome.output_dir / "geometry" / "tiny"
    states = hidden_states.load_states(out / "states" / "insecure.npz")
    assert states.states.dtype == np.float16 and states.states.shape[:2] == (2 * PERSONAS, 3)
    for name in ("layer_summary", "excess", "excess_bands"):
        assert (out / f"{name}.csv").is_file(), name

    html = outcome.files.html.read_text()
    section = html[html.index('<section id="persona-geometry">') :]
    section = section[: section.index("</section>")]
    layers = pd.read_csv(out / "layer_summary.csv")
    top = layers[(layers["variant"] == "insecure") & (layers["layer"] == 2)].iloc[0]
    assert f"{top['participation_ratio']:.2f}" in section
    bands = pd.read_csv(out / "excess_bands.csv").set_index("band")
    top_band = bands.loc["top"]
    assert f"{top_band['excess_pp']:+.2f}" in section
    assert f"[{top_band['ci_lo']:+.2f}, {top_band['ci_hi']:+.2f}]" in section
    assert "Excess ΔPR = ΔPR % of insecure minus ΔPR % of secure" in section
    assert "tiny/other: not on a &#x27;transformers&#x27; backend" in section
    assert "No figures: figures were switched off" in section

    # With figures (the report's geometry step alone; the study's other figures take most
    # of a minute here): the layer curves and the excess inline, every figure as PNG.
    drawn = pipeline._with_geometry(study, outcome.results, tmp_path / "rep", figures=True)
    page = render_section(drawn.geometry, table=table, esc=esc)
    assert page.count("<svg") == 2 and "Excess ΔPR, ΔPR and displacement" in page
    pngs = tmp_path / "rep" / "geometry" / "tiny"
    assert (pngs / "geometry_layers.png").read_bytes()[:4] == b"\x89PNG"
    assert (pngs / "excess.png").is_file() and (pngs / "layer_summary.csv").is_file()

    # Reruns reuse the states: no model is loaded again.
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded although every states file is finished")

    monkeypatch.setattr(hidden_states.StateReader, "load", no_model)
    again = run_study(load_study(path), progress=False, figures=False)
    assert "Persona geometry" in again.files.html.read_text()
    report_study(load_study(path), figures=False)


def test_study_geometry_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"geometry\.families: unknown families"):
        load_study(write_study(tmp_path / "a", overrides={"geometry": {"families": ["nope"]}}))
    with pytest.raises(ConfigError, match="first <= last"):
        load_study(write_study(tmp_path / "b", overrides={"geometry": {"bands": {"x": [3, 2]}}}))
    sim_only = load_study(write_study(tmp_path / "c", overrides={"geometry": {}}))
    with pytest.raises(ConfigError, match="no family has its base variant on a 'transformers'"):
        plan_geometry(sim_only)
    with pytest.raises(ConfigError, match="no family has its base variant"):
        run_study(sim_only, progress=False, figures=False)
    assert not sim_only.config.store_path.exists()  # refused before anything was collected
    named = load_study(write_study(tmp_path / "d", overrides={"geometry": {"families": ["fam"]}}))
    with pytest.raises(ConfigError, match="does not run on a 'transformers' backend"):
        plan_geometry(named)
