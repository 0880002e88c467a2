"""Producing model variants: chat datasets, recipes and local LoRA fine-tuning.

Submodules import their heavy dependencies (torch, transformers, peft, trl,
datasets) only when a function needs them.
"""

from __future__ import annotations

from persona_collapse.variants.finetune.datasets import (
    KNOWN_DATASETS,
    ChatDataset,
    ChatExample,
    DatasetStats,
    FetchedDataset,
    LengthStats,
    cache_dir,
    dataset_stats,
    fetch_dataset,
    file_sha256,
    read_chat_jsonl,
    resolve_dataset,
    shuffle_examples,
    split_examples,
    write_chat_jsonl,
)
from persona_collapse.variants.finetune.recipes import RECIPES, Recipe, get_recipe, parse_overrides

__all__ = [
    "KNOWN_DATASETS",
    "RECIPES",
    "ChatDataset",
    "ChatExample",
    "DatasetStats",
    "FetchedDataset",
    "LengthStats",
    "Recipe",
    "cache_dir",
    "dataset_stats",
    "fetch_dataset",
    "file_sha256",
    "get_recipe",
    "parse_overrides",
    "read_chat_jsonl",
    "resolve_dataset",
    "shuffle_examples",
    "split_examples",
    "write_chat_jsonl",
]
