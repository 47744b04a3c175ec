"""Being polite to servers: a pacer that spaces out work, and backoff delays for retries."""
from __future__ import annotations

import asyncio
import email.utils
import random
import time


class Pacer:
    """Lets `rate` units per second through, evenly spaced (no bursts), and can be paused.

    Waiters go through one at a time and the gap is measured from the moment each one is let
    through, so a busy event loop that wakes several late still sends them spaced out. A 429
    pauses everyone: a server that says "slow down" means all of us.
    """

    def __init__(self, rate: float | None):
        self.interval = 1 / rate if rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self, units: float = 1.0) -> None:
        if not self.interval and self._next <= time.monotonic():
            return  # unlimited and not paused
        async with self._lock:
            while (delay := self._next - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            self._next = time.monotonic() + units * self.interval

    def pause(self, seconds: float) -> None:
        self._next = max(self._next, time.monotonic() + seconds)


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): exponential with full jitter so
    that many clients do not retry in step, and never sooner than the server's Retry-After."""
    delay = random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
    return max(delay, retry_after or 0.0)


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), capped at 5 minutes."""
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return min(float(ms) / 1000, 300.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), 300.0)
