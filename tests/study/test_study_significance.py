"""Difference tests in the study outputs, on the reference data (arXiv 2605.12850).

``pcollapse reproduce`` must write ``significance.csv`` whose tests equal those of
:func:`persona_collapse.stats.significance.study_significance` computed directly on the
same files with the same draws, and the report must state, per family, whether
the insecure ΔS and ΔR are significant after Holm correction. Skips when
../shared is absent.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from persona_collapse.cli import main
from persona_collapse.stats.significance import cells_from_ratings, study_significance
from persona_collapse.store.reference_csv import read_ratings_csv

SEED = 7

# family -> (insecure ΔS significant after Holm, insecure ΔR significant after Holm)
EXPECTED = {
    "deepseek-v3.1": (False, True),
    "gpt-4.1": (True, True),
    "gpt-4o": (True, True),
    "qwen3-235b": (True, True),
}


@pytest.fixture(scope="module")
def reproduced(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("reproduce")
    code = main(
        [
            "reproduce",
            str(reference_dir),
            "--output",
            str(out),
            "--seed",
            str(SEED),
            "--no-figures",
        ]
    )
    assert code == 0
    return out, (out / "report.html").read_text()


def test_reproduced_tests_equal_the_direct_computation(
    reproduced: tuple[Path, str], reference_dir: Path, reference_expected: dict[str, Any]
) -> None:
    out, _ = reproduced
    table = pd.read_csv(out / "significance.csv")
    families = {}
    for family, variants in reference_expected["families"].items():
        families[family] = {}
        for label in ("base", "secure", "insecure"):
            frame = read_ratings_csv(reference_dir / variants[label]["persona_file"])
            families[family][label] = cells_from_ratings(
                frame["persona_id"], frame["item_id"], frame["rating"]
            )
    direct = study_significance(families, rng=SEED, n_boot=2000, n_rerun_boot=400)
    assert sorted(table["family"].unique()) == sorted(EXPECTED)
    assert set(table["contrast"]) == {"secure", "insecure", "excess"}
    assert (table["n_boot"] == 2000).all() and table["paired"].all()
    indexed = table.set_index(["family", "contrast", "metric", "scope"])
    for family, fam in direct.families.items():
        for contrast, tests in fam.contrasts.items():
            for metric, by_scope in tests.tests.items():
                for scope, t in by_scope.items():
                    row = indexed.loc[(family, contrast, metric, scope)]
                    assert row["estimate"] == pytest.approx(t.estimate, rel=1e-12)
                    assert row["p_value"] == pytest.approx(t.p_value, rel=1e-9, abs=1e-300)
                    assert row["p_holm"] == pytest.approx(t.p_holm, rel=1e-9, abs=1e-300)
                    assert bool(row["significant"]) is t.significant(0.05)
        assert int(indexed.loc[(family, "insecure", "S", "overall"), "seed"]) == fam.seed


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_report_states_insecure_significance_after_holm(
    family: str, reproduced: tuple[Path, str]
) -> None:
    out, page = reproduced
    table = pd.read_csv(out / "significance.csv")
    overall = table[
        (table["family"] == family)
        & (table["contrast"] == "insecure")
        & (table["scope"] == "overall")
    ].set_index("metric")
    sig_s, sig_r = EXPECTED[family]
    assert bool(overall.loc["S", "significant"]) is sig_s
    assert bool(overall.loc["R", "significant"]) is sig_r
    # R and σ̄ share one test.
    assert overall.loc["R", "p_holm"] == overall.loc["sigma_bar", "p_holm"]
    # Issue 10.1/10.5: the headline's words follow the tests; a ceiling-limited S is withheld.
    # Issue 16: the tests of the bias-corrected estimators, with the paper's estimate beside.
    # (the count statistics have one estimator, the paper's definition)
    assert (overall.loc[["S", "R", "sigma_bar"], "verdict_estimator"] == "corrected").all()
    assert (overall.drop(index=["S", "R", "sigma_bar"])["verdict_estimator"] == "reference").all()
    sig_s, sig_r = (
        bool(overall.loc["S", "significant_corrected"]),
        bool(overall.loc["R", "significant_corrected"]),
    )
    headline = html.unescape(page.split('<section id="headline">')[1].split("</section>")[0])
    divs = headline.split('<div class="verdict')[1:]
    sentence = next(d for d in divs if d.split(">", 1)[1].startswith(f"{family}:"))
    diagnostics = pd.read_csv(out / "metrics.csv")
    top = diagnostics[
        (diagnostics["family"] == family) & (diagnostics["scope"] == "overall")
    ].set_index("variant")
    limited = any(
        top.loc[label, "top1_share"] >= 0.7 or top.loc[label, "entropy_bits"] < 1.5
        for label in ("base", "insecure")
    )
    if limited:
        assert "S is ceiling-limited" in sentence and "the verdict on S is withheld" in sentence
        assert "S rises" not in sentence and "no significant change in S" not in sentence.lower()
    else:
        shown = (
            f"(ΔS {_pct(overall.loc['S', 'estimate_corrected'])} bias-corrected "
            f"(paper's estimate {_pct(overall.loc['S', 'estimate'])})"
        )
        words = "S rises significantly" if sig_s else "No significant change in S"
        assert f"{words} {shown}" in sentence
    r_word = "drops" if overall.loc["R", "estimate_corrected"] < 0 else "rises"
    if sig_r:
        r_shown = _pct(overall.loc["R", "estimate_corrected"])
        assert f"R {r_word} significantly (ΔR {r_shown} bias-corrected" in sentence
    base_s = top.loc["base", "S_corrected"]
    if not 0.66 <= base_s <= 0.83:
        assert "already lies outside the frontier S band" in sentence and "leaves" not in sentence
    excess = table[
        (table["family"] == family)
        & (table["contrast"] == "excess")
        & (table["metric"] == "R")
        & (table["scope"] == "overall")
    ].iloc[0]
    covers = bool(excess["ci_low_corrected"] <= 0 <= excess["ci_high_corrected"])
    assert ("Misalignment-specific share of ΔR: none detectable" in sentence) is covers


def _pct(value: float) -> str:
    return f"{100 * value:+.1f} %".replace("-", "−")


def test_deepseek_s_change_is_not_significant_after_holm(reproduced: tuple[Path, str]) -> None:
    out, page = reproduced
    table = pd.read_csv(out / "significance.csv")
    row = table[
        (table["family"] == "deepseek-v3.1")
        & (table["contrast"] == "insecure")
        & (table["metric"] == "S")
        & (table["scope"] == "overall")
    ].iloc[0]
    assert row["p_value"] < 0.1 and row["p_holm"] > 0.05
    assert "(not significant after Holm, p = " in page
