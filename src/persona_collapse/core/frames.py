"""The long "ratings frame" that connects stores, CSV files and metrics.

One row per collected answer:

========================  =======  ==========================================
column                    dtype    meaning
========================  =======  ==========================================
``persona_id``            int64    persona index; ``SELF_PERSONA_ID`` in self runs
``item_id``               int64    instrument item id
``repetition``            int64    repetition index of the slot (1-based)
``rating``                int64    parsed rating, ``INVALID_RATING`` if none
========================  =======  ==========================================

Optional columns: ``failures`` (int), ``response`` (str), ``collected_at`` (str).
Several rows may share a slot (imported retries); metrics use every valid row.
"""

from __future__ import annotations

SELF_PERSONA_ID = -1
"""``persona_id`` of the answers of a self run (no persona)."""

INVALID_RATING = -1
"""``rating`` of an answer with no valid rating (the reference files' convention)."""

RATING_COLUMNS: tuple[str, ...] = ("persona_id", "item_id", "repetition", "rating")
"""Required columns of a ratings frame."""

DISTRIBUTION_PREFIX = "p"
"""Distribution frames hold ``persona_id, item_id`` and one column ``p<k>`` per scale value."""
