"""Per-key rate limits: a token bucket per caller (API key id, the shared admin key, or the client
address when the service is open). Past the limit a request gets 429 with ``Retry-After``.

In-process: each ``driftrec serve`` process counts its own requests, so N processes behind a load
balancer allow up to N times the rate (say so to whoever sizes the limit).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``per_minute`` requests a minute on average, up to ``burst`` at once; ``per_minute=0``: no limit."""

    def __init__(self, per_minute: int, burst: int, *, clock=time.monotonic, max_callers: int = 100_000):
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.per_minute = per_minute
        self.clock = clock
        self.max_callers = max_callers
        self._buckets: dict[str, _Bucket] = {}

    def take(self, caller: str) -> float:
        """Spend one request of ``caller``'s; 0.0 if allowed, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= self.max_callers:
                self._prune(now)
            bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget callers whose bucket has refilled (they would start full anyway)."""
        full = [c for c, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]
        for caller in full:
            del self._buckets[caller]

    @staticmethod
    def retry_after(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))
