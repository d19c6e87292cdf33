"""Retry policy: how many attempts, how long to wait between them, and which errors earn one."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from .exceptions import FatalError, RetryableError, ScheduleError


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how a failed attempt is tried again.

    Attributes:
        max_attempts: total tries, 1 means no retry.
        retry_delay: seconds before the first retry.
        backoff: multiplier applied to the delay after each retry (1 = constant delay).
        max_delay: upper bound of any delay (jitter included), ``None`` for none.
        jitter: up to this many seconds are added at random to each delay.
        retry_on: exception class names that earn a retry (matched against the whole MRO,
            so ``"OSError"`` covers ``ConnectionError``). ``RetryableError`` is always
            retried and ``FatalError`` never, whatever this says.
    """

    max_attempts: int = 1
    retry_delay: float = 0.0
    backoff: float = 1.0
    max_delay: float | None = None
    jitter: float = 0.0
    retry_on: tuple[str, ...] = ("Exception",)

    def __post_init__(self) -> None:
        checks = (
            ("max_attempts", self.max_attempts >= 1, "must be at least 1"),
            ("retry_delay", self.retry_delay >= 0, "must not be negative"),
            ("backoff", self.backoff >= 1, "must be at least 1"),
            ("max_delay", self.max_delay is None or self.max_delay >= 0, "must not be negative"),
            ("jitter", self.jitter >= 0, "must not be negative"),
        )
        for field, ok, reason in checks:
            if not ok:
                raise ScheduleError(f"{reason} (got {getattr(self, field)!r})", field=field)
        if isinstance(self.retry_on, str) or not all(isinstance(n, str) for n in self.retry_on):
            raise ScheduleError("must be a list of exception class names", field="retry_on")

    @classmethod
    def of(cls, retry_on: Sequence[str] | None = None, **kwargs: object) -> RetryPolicy:
        """Build a policy, accepting any sequence for ``retry_on``."""
        if retry_on is not None:
            kwargs["retry_on"] = tuple(retry_on)
        return cls(**kwargs)  # type: ignore[arg-type]

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether a failure of ``attempt`` (1-based) is followed by another attempt."""
        if attempt >= self.max_attempts or isinstance(exc, FatalError):
            return False
        if isinstance(exc, RetryableError):
            return True
        names = {klass.__name__ for klass in type(exc).__mro__}
        return any(name in names for name in self.retry_on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed ``attempt`` (1-based) before the next one.

        ``retry_delay * backoff ** (attempt - 1)``, plus up to ``jitter`` at random, and
        never more than ``max_delay`` (the cap applies last, so it is a hard bound).
        """
        try:
            delay = float(self.retry_delay) * float(self.backoff) ** (attempt - 1)
        except OverflowError:  # a large backoff after many attempts: "forever", until capped
            delay = math.inf
        if self.jitter:
            delay += random.uniform(0, self.jitter)
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        return delay


NO_RETRY = RetryPolicy()
