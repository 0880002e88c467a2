"""The backend protocol: one required async method, optional hooks with defaults.

A backend only turns prompts into completions (and, optionally, exact rating
distributions). Concurrency limits, retries, attempt bookkeeping and storage
live once, in :mod:`persona_collapse.engine.collect`, never in a backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from persona_collapse.core.types import (
    Generation,
    Message,
    Prompt,
    Role,
    ScaleDistribution,
    Usage,
)


class Backend(ABC):
    """A model that answers prompts.

    Subclasses implement :meth:`generate`; everything else has a default.
    Register a subclass with :func:`persona_collapse.backends.register_backend`.
    """

    name: ClassVar[str] = "backend"
    #: How many prompts the engine may pass to one :meth:`generate` call.
    max_batch_size: ClassVar[int] = 1

    @abstractmethod
    async def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> list[Generation]:
        """Sample ``n`` completions for each prompt.

        Args:
            prompts: Batch of prompts (at most ``max_batch_size``).
            n: Completions wanted per prompt (``>= 1``).
            temperature: Sampling temperature (``>= 0``).
            max_tokens: Completion length limit in tokens.
            seed: Request seed derived by the engine from the run seed and the
                slot; backends that can honour it should, so resumed runs repeat.

        Returns:
            One :class:`Generation` per prompt, in order.

        Raises:
            TransientBackendError: A failure worth retrying.
            BackendError: A failure that retrying will not fix.
        """

    @property
    def supports_distributions(self) -> bool:
        """Whether :meth:`distributions` is implemented."""
        return type(self).distributions is not Backend.distributions

    async def distributions(
        self,
        prompts: Sequence[Prompt],
        *,
        scale: Sequence[int],
        temperature: float,
    ) -> list[ScaleDistribution]:
        """Exact probability of each scale value as the first answer token.

        Optional hook; the default raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"backend {self.name!r} cannot return rating distributions")

    def run_metadata(self) -> dict[str, Any]:
        """What the backend learned while serving a run, stored with the run.

        For example the request protocols it used (``"protocols"``: a list) or which
        endpoints support ``n``. Default: nothing. Must never contain secrets.
        """
        return {}

    def describe(self) -> dict[str, Any]:
        """Settings that identify this backend in a run key. Must never contain secrets."""
        return {"backend": self.name}

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release connections or models. Default: nothing to release."""


__all__ = [
    "Backend",
    "Generation",
    "Message",
    "Prompt",
    "Role",
    "ScaleDistribution",
    "Usage",
]
