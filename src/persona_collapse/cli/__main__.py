"""``python -m persona_collapse.cli``."""

from persona_collapse.cli import entry_point

entry_point()
