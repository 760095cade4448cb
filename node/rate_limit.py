"""Token buckets: how often a client (an API caller, a peer) may ask for something.

State owned here: each bucket's tokens and when it last filled, one bucket per client key in
`RateLimiter`, which forgets the least recently seen first."""

from __future__ import annotations

from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.protocol.errors import RateLimited

__all__ = ["MAX_TRACKED_CLIENTS", "RateLimiter", "TokenBucket"]

MAX_TRACKED_CLIENTS: Final = 4096


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up; time comes from a Clock."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        self._rate_per_ms = rate_per_s / 1000
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last_ms = clock.now_ms()

    def take(self) -> bool:
        """Spend one token; False when none is left (the caller refuses the request)."""
        now = self._clock.now_ms()
        elapsed = max(0, now - self._last_ms)
        self._last_ms = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate_per_ms)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class RateLimiter:
    """One bucket per client (an address, a peer id), bounded: the least recently seen is
    forgotten (a stranger's new ids push out idle buckets, not one in use)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, client: str) -> bool:
        bucket = self._buckets.pop(client, None)  # re-inserted last: the order is recency
        if bucket is not None:
            self._buckets[client] = bucket
        else:
            if len(self._buckets) >= MAX_TRACKED_CLIENTS:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[client] = TokenBucket(self._rate, self._burst, self._clock)
        return bucket.take()

    def require(self, client: str, what: str) -> None:
        """`take`, for a peer's request: over the limit raises.

        Raises:
            RateLimited: `client` asked for `what` more often than the limit allows.
        """
        if not self.take(client):
            raise RateLimited(f"more than {self._rate} {what} a second")
