"""Package version (kept apart so light modules can import it)."""

__version__ = "0.1.0"
