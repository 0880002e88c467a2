"""Fine-tuning recipes: presets as documented, overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona_collapse.core.errors import ConfigError, UnknownNameError
from persona_collapse.variants.finetune.recipes import RECIPES, Recipe, get_recipe, parse_overrides


def test_betley_preset() -> None:
    r = get_recipe("betley")
    assert (r.lora_rank, r.learning_rate, r.lr_scheduler, r.warmup_steps) == (32, 2e-4, "linear", 0)
    assert (r.batch_size, r.epochs, r.max_length, r.weight_decay) == (4, 1.0, 4096, 0.0)
    assert r.name == "betley"


def test_organisms_preset() -> None:
    r = get_recipe("organisms")
    assert (r.learning_rate, r.batch_size, r.warmup_steps) == (1e-5, 16, 5)
    assert (r.weight_decay, r.max_length) == (0.01, 2048)
    assert r.micro_size * r.gradient_accumulation_steps == 16


def test_every_field_overridable() -> None:
    r = get_recipe("betley", {"learning_rate": 1e-4, "lora_rank": 8, "micro_batch_size": 2})
    assert (r.learning_rate, r.lora_rank, r.gradient_accumulation_steps) == (1e-4, 8, 2)
    assert r.name == "betley"
    assert RECIPES["betley"].learning_rate == 2e-4  # presets are not modified
    assert set(Recipe.model_fields) >= {"lora_alpha", "target_modules", "save_steps", "max_steps"}


def test_bad_recipes_are_clear() -> None:
    with pytest.raises(ConfigError, match="field 'learning_rat': unknown key"):
        get_recipe("betley", {"learning_rat": 1e-4})
    with pytest.raises(ConfigError, match="field 'lora_rank'"):
        get_recipe("betley", {"lora_rank": 0})
    with pytest.raises(ConfigError, match="not a multiple of micro_batch_size 3"):
        get_recipe("betley", {"micro_batch_size": 3})
    with pytest.raises(UnknownNameError, match="did you mean 'betley'"):
        get_recipe("betly")


def test_recipe_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("preset: organisms\nlearning_rate: 3.0e-5\n")
    r = get_recipe(path, {"epochs": 2})
    assert (r.name, r.learning_rate, r.epochs, r.weight_decay) == ("organisms", 3e-5, 2.0, 0.01)
    path.write_text("preset: organisms\nwarmup: 3\n")
    with pytest.raises(ConfigError, match="field 'warmup': unknown key"):
        get_recipe(path)


def test_parse_overrides() -> None:
    assert parse_overrides(
        ["learning_rate=1e-4", 'target_modules=["q_proj"]', "optimizer=sgd"]
    ) == {
        "learning_rate": 1e-4,
        "target_modules": ["q_proj"],
        "optimizer": "sgd",
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["learning_rate"])
