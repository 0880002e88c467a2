"""Request pacing, defined once for every feature that calls a model.

A :class:`Pacer` owns the concurrency limit (adaptive: halved per rate-limited
request, raised by one per successful request while in use), the requests- and
tokens-per-minute caps (token buckets, corrected after the fact with the tokens a
reply really used) and the retry policy (exponential backoff with jitter, honouring
a server's ``retry_after``). The collection engine and the verification pipeline
both send every request through :meth:`Pacer.call`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from persona_collapse.core.config import PacingSettings
from persona_collapse.core.errors import ConfigError, TransientBackendError
from persona_collapse.core.types import Usage

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_REQUEST_TOKENS = 100_000_000
"""Most tokens one request may report per usage field; more is a server's nonsense."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a request after a :class:`TransientBackendError`.

    The wait before retry ``k`` (1-based) is ``min(max_wait, initial_wait * 2**(k-1))``
    plus a uniform jitter in ``[0, jitter]`` seconds, or the server's ``retry_after``
    if that is longer.

    Attributes:
        max_retries: Retries after the first try (0 disables retrying).
        initial_wait: First backoff, seconds.
        max_wait: Backoff cap, seconds (``retry_after`` may exceed it).
        jitter: Maximum random extra wait, seconds.
    """

    max_retries: int = 6
    initial_wait: float = 1.0
    max_wait: float = 60.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        for name in ("initial_wait", "max_wait", "jitter"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def is_rate_limited(exc: BaseException) -> bool:
    """Whether a backend error means "slow down": rate limited, or a server-requested wait."""
    return isinstance(exc, TransientBackendError) and (
        exc.rate_limited or exc.retry_after is not None
    )


class AdaptiveLimit:
    """Concurrency limit: halves per rate-limited request, +1 per successful one (AIMD).

    Growth only counts requests sent while at least half the limit was in use,
    so an idle limit does not creep up to values never tried.
    """

    def __init__(self, maximum: int, *, adaptive: bool) -> None:
        self.maximum = maximum
        self.adaptive = adaptive
        self.limit = float(maximum)
        self.in_flight = 0
        self.decreases = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def current(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> bool:
        """Wait for a free slot; returns whether the limit is in use (half or more)."""
        while self.in_flight >= self.current:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.in_flight += 1
        return 2 * self.in_flight >= self.current

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        free = self.current - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def succeeded(self, utilised: bool) -> None:
        if self.adaptive and utilised and self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0)
            self._wake()

    def rate_limited(self) -> None:
        if self.adaptive and self.limit > 1.0:
            self.decreases += 1
            self.limit = max(1.0, self.limit / 2.0)
            logger.debug("rate limited: requests in flight lowered to %d", self.current)


class RateCap:
    """Token bucket: ``per_minute`` units a minute, holding at most one second's worth.

    ``acquire(amount)`` waits until the bucket holds ``min(amount, capacity)`` and
    then takes ``amount`` (the level may go negative, delaying later requests).
    """

    def __init__(self, per_minute: float) -> None:
        if not (math.isfinite(per_minute) and per_minute > 0):
            raise ConfigError(f"rate caps must be finite numbers > 0, got {per_minute!r}")
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate, 1.0)
        self.level = self.capacity
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float) -> None:
        need = min(float(amount), self.capacity)
        while True:
            self._refill()
            if self.level >= need:
                self.level -= float(amount)
                return
            await asyncio.sleep((need - self.level) / self.rate)

    def adjust(self, amount: float) -> None:
        """Take ``amount`` more (or give back a negative amount) after the fact."""
        self._refill()
        self.level = min(self.capacity, self.level - float(amount))


def log_retry(exc: BaseException, wait: float) -> None:
    # Rate limiting is expected and paced for: INFO, not a warning per refused request.
    level = logging.INFO if is_rate_limited(exc) else logging.WARNING
    logger.log(level, "transient backend error (%s); retrying in %.1f s", exc, wait)


def result_usage(result: Any) -> Usage:
    total = Usage()
    for item in result if isinstance(result, list) else ():
        usage = getattr(item, "usage", None)
        if isinstance(usage, Usage):
            total = total + usage
    return total.clamped(MAX_REQUEST_TOKENS)


@dataclass
class Pacer:
    """Paces the requests of one session: concurrency slots, rate caps and retries.

    Every request of a collection or a verification goes through :meth:`call`, so
    concurrency (adaptive or fixed), the requests- and tokens-per-minute caps and
    the retry policy are defined once for all of them.

    Attributes:
        retry: Retry policy of transient backend errors.
        limit: Concurrency limit (adaptive AIMD or fixed).
        request_cap: Requests-per-minute bucket, or None.
        token_cap: Tokens-per-minute bucket, or None.
        rate_limited: Requests refused as rate limited so far.
    """

    retry: RetryPolicy
    limit: AdaptiveLimit
    request_cap: RateCap | None = None
    token_cap: RateCap | None = None
    rate_limited: int = 0
    jitter_rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def create(
        cls,
        *,
        max_concurrency: int,
        adaptive: bool = True,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Pacer:
        """A pacer with ``max_concurrency`` slots and the given caps (None: no cap).

        Raises:
            ConfigError: ``max_concurrency`` below 1.
        """
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        return cls(
            retry=retry or RetryPolicy(),
            limit=AdaptiveLimit(max_concurrency, adaptive=adaptive),
            request_cap=None if requests_per_minute is None else RateCap(requests_per_minute),
            token_cap=None if tokens_per_minute is None else RateCap(tokens_per_minute),
        )

    @classmethod
    def from_settings(
        cls, settings: PacingSettings | None = None, *, retry: RetryPolicy | None = None
    ) -> Pacer:
        """The pacer of ``settings`` (default settings when None).

        ``retry`` sets the backoff timing; its ``max_retries`` is replaced by the
        settings' own.
        """
        settings = settings or PacingSettings()
        policy = replace(retry or RetryPolicy(), max_retries=settings.max_retries)
        return cls.create(
            max_concurrency=settings.max_concurrency,
            adaptive=settings.adaptive_concurrency,
            requests_per_minute=settings.requests_per_minute,
            tokens_per_minute=settings.tokens_per_minute,
            retry=policy,
        )

    def _wait(self, state: RetryCallState) -> float:
        policy = self.retry
        exponent = max(state.attempt_number - 1, 0)
        backoff = min(policy.max_wait, policy.initial_wait * 2.0**exponent)
        # Jitter only spreads retries of concurrent requests; it never touches results,
        # so an unseeded generator owned by the session is fine here.
        backoff += self.jitter_rng.uniform(0.0, policy.jitter) if policy.jitter else 0.0
        exc = state.outcome.exception() if state.outcome is not None else None
        after = getattr(exc, "retry_after", None)
        return max(backoff, float(after)) if after else backoff

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[BaseException, float], None] = log_retry,
        tokens: int = 0,
    ) -> T:
        """Await ``fn()``, retrying transient backend errors with backoff.

        Each attempt waits for a concurrency slot and the rate caps (``tokens`` is
        the attempt's estimated token cost); slots are not held while backing off.
        """

        async def attempt() -> T:
            utilised = await self.limit.acquire()
            try:
                if self.request_cap is not None:
                    await self.request_cap.acquire(1)
                if self.token_cap is not None:
                    await self.token_cap.acquire(tokens)
                try:
                    result = await fn()
                except TransientBackendError as exc:
                    if is_rate_limited(exc):
                        self.rate_limited += 1
                        self.limit.rate_limited()
                    raise
            finally:
                self.limit.release()
            self.limit.succeeded(utilised)
            if self.token_cap is not None:
                used = result_usage(result)
                actual = used.prompt_tokens + used.completion_tokens
                if actual:
                    self.token_cap.adjust(actual - tokens)
            return result

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            if exc is not None:
                on_retry(exc, wait)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(TransientBackendError),
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(attempt)


__all__ = [
    "MAX_REQUEST_TOKENS",
    "AdaptiveLimit",
    "Pacer",
    "RateCap",
    "RetryPolicy",
    "is_rate_limited",
    "log_retry",
    "result_usage",
]
