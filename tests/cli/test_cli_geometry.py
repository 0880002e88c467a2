"""``pcollapse geometry`` end to end on a tiny random Llama with two LoRA adapters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("matplotlib")
pd = pytest.importorskip("pandas")

from _cli import assert_user_error, run_cli  # noqa: E402
from _tiny_models import save_tiny_adapter, save_tiny_model  # noqa: E402
from persona_collapse.backends.hidden_states import StateReader, load_states  # noqa: E402
from persona_collapse.stats.geometry import excess_pr, participation_ratio  # noqa: E402

PERSONAS = 12


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("family")
    model = save_tiny_model(root / "base")
    return (
        model,
        save_tiny_adapter(model, root / "risky", seed=21),
        save_tiny_adapter(model, root / "medical", seed=22),
    )


def _args(family: tuple[Path, Path, Path], out: Path, *extra: object) -> list[object]:
    model, risky, medical = family
    return [
        "geometry",
        "--model", model,
        "--adapter", f"risky={risky}",
        "--adapter", f"medical={medical}",
        "--treatment", "risky",
        "--control", "medical",
        "--limit", PERSONAS,
        "--templates", 2,
        "--draws", 12,
        "--device", "cpu",
        "--output", out,
        *extra,
    ]  # fmt: skip


def test_two_adapters_geometry_excess_and_outputs(
    family: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "geo"
    code, stdout, err = run_cli(capsys, *_args(family, out, "--band", "2-2"))
    assert code == 0, err
    assert "Persona geometry" in stdout and "excess all" in stdout
    for name in ("layer_summary", "pr_saturation", "resolution_floor", "excess", "excess_bands"):
        assert (out / f"{name}.csv").is_file(), name
    for name in ("geometry_layers", "excess", "resolution_floor", "pr_saturation"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    states = {v: load_states(out / "states" / f"{v}.npz") for v in ("base", "risky", "medical")}
    assert states["risky"].states.dtype == np.float16
    assert states["risky"].states.shape[:2] == (2 * PERSONAS, 3)

    layers = pd.read_csv(out / "layer_summary.csv")
    assert sorted(set(layers["variant"])) == ["base", "medical", "risky"]
    assert len(layers) == 3 * 3
    top = layers[(layers["variant"] == "risky") & (layers["layer"] == 2)].iloc[0]
    x = states["risky"].by_template(0)[:, 2].astype(np.float64)
    assert top["participation_ratio"] == pytest.approx(participation_ratio(x), rel=1e-9)
    assert layers[layers["variant"] == "base"]["gain_over_base"].isna().all()

    excess = pd.read_csv(out / "excess.csv")
    primary = [states[v].by_template(0).astype(np.float64) for v in ("risky", "medical", "base")]
    expected = excess_pr(*primary, draws=12, rng=0)
    np.testing.assert_allclose(excess["excess_pp"], expected.excess_pp, rtol=1e-9)
    np.testing.assert_allclose(excess["excess_ci_lo"], expected.ci_lo, rtol=1e-9)
    # Slot 0 holds the embedding of each prompt's last token, the same "." for every
    # persona: a point cloud, whose PR is undefined (NaN), as in real models.
    assert excess.loc[0, ["pr_base", "excess_pp"]].isna().all()
    blocks = excess.loc[1:]
    assert (blocks["excess_ci_lo"] <= blocks["excess_ci_hi"]).all()
    assert (blocks["excess_pp"] != 0).all()  # the two adapters differ
    bands = pd.read_csv(out / "excess_bands.csv")
    assert bands["band"].tolist() == ["all", "early", "late", "2-2"]
    assert bands["excess_pp"].iloc[3] == pytest.approx(excess.loc[2, "excess_pp"])
    floor = pd.read_csv(out / "resolution_floor.csv")
    assert floor.loc[floor["layer"] > 0, "eta_squared"].between(0, 1).all()

    # Running again reuses the saved states (without loading the model) and gives the
    # same tables.
    stamp = (out / "states" / "risky.npz").stat().st_mtime_ns

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded although every variant is saved")

    monkeypatch.setattr(StateReader, "load", no_load)
    code, stdout, err = run_cli(capsys, *_args(family, out, "--no-figures", "--format", "json"))
    assert code == 0, err
    assert (out / "states" / "risky.npz").stat().st_mtime_ns == stamp
    data = json.loads(stdout)
    assert data["excess"][0]["excess_pp"] is None  # NaN is null in JSON
    shown = [row["excess_pp"] for row in data["excess"][1:]]
    assert shown == pytest.approx(list(blocks["excess_pp"]))
    assert [b["band"] for b in data["bands"]] == ["all", "early", "late"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--adapter", "nameonly"], "NAME=PATH"),
        (["--treatment", "nobody", "--control", "base"], "unknown variant 'nobody'"),
        (["--treatment", "base"], "go together"),
        (["--templates", "9"], "--templates"),
        (["--fraction", "1.5"], "--fraction"),
        (["--band", "3-2"], "LO-HI"),
        (["--band", "0-2"], "embeddings"),
    ],
)
def test_bad_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    args = ["geometry", "--model", tmp_path / "m", "--output", tmp_path / "o", *extra]
    code, _, err = run_cli(capsys, *args)
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "o").exists()


def test_missing_model_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["geometry", "--model", tmp_path / "none", "--output", tmp_path / "o"]
    code, _, err = run_cli(capsys, *args, "--local-files-only", "--limit", 3)
    assert_user_error(code, err, "cannot load model")
    assert not (tmp_path / "o").exists()


def test_band_beyond_the_last_layer(
    family: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, *_args(family, tmp_path / "o", "--band", "1-7", "--no-figures"))
    assert_user_error(code, err, "band '1-7'", "layers 1-2")
