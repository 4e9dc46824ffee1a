"""Per-route-bucket rate limits with Discord's headers, and test-controlled 429/error injection."""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass

from .util import ApiError

# Community-observed per-route limits (discord-api-docs#182, #395): messages 5 per 5 s per
# channel, edits share a similar per-channel bucket, reactions 1 per 0.25 s.
DEFAULT_LIMITS: dict[str, tuple[int, float]] = {
    "message-create": (5, 5.0),
    "message-edit": (5, 5.0),
    "reaction": (1, 0.25),
}


def rate_limited(retry_after: float, *, is_global: bool = False, bucket: str | None = None) -> ApiError:
    """A 429 exactly as Discord sends it: ``Via`` header, JSON ``retry_after`` and X-RateLimit-*."""
    headers = {
        "Via": "1.1 google",
        "Retry-After": str(max(1, math.ceil(retry_after))),
        "X-RateLimit-Limit": "1",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
        "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Scope": "global" if is_global else "user",
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    if bucket is not None:
        headers["X-RateLimit-Bucket"] = bucket
    error = ApiError(429, 0, "You are being rate limited.", headers=headers)
    error.extra_body = {"retry_after": retry_after, "global": is_global}
    return error


@dataclass
class _Window:
    reset_at: float
    count: int


@dataclass
class Injection:
    """A scripted failure: the next ``times`` requests matching method and path get ``error``."""

    method: str
    pattern: re.Pattern[str]
    times: int
    retry_after: float = 0.0
    is_global: bool = False
    status: int = 0
    code: int = 0
    message: str = ""
    # Answer with the error only after the request was carried out (a 5xx from the edge after the
    # backend made the message): the client cannot tell whether it happened.
    after: bool = False

    def build(self) -> ApiError:
        """The error to answer with."""
        if self.status == 429:
            return rate_limited(self.retry_after, is_global=self.is_global)
        return ApiError(self.status, self.code, self.message)


class RateLimiter:
    """Fixed-window buckets keyed by (bucket name, major parameter), on real monotonic time
    (discord.py sleeps in real time, so the advanceable simulator clock must not drive these)."""

    def __init__(self, limits: dict[str, tuple[int, float]] | None = None) -> None:
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self._windows: dict[tuple[str, str], _Window] = {}
        self.injections: list[Injection] = []

    def hit(self, bucket: str, major: str) -> dict[str, str]:
        """Count one request; return the X-RateLimit-* headers or raise the 429."""
        limit_per = self.limits.get(bucket)
        if limit_per is None:
            return {}
        limit, per = limit_per
        now = time.monotonic()
        key = (bucket, major)
        window = self._windows.get(key)
        if window is None or now >= window.reset_at:
            window = _Window(reset_at=now + per, count=0)
            self._windows[key] = window
        bucket_hash = hashlib.sha1(bucket.encode()).hexdigest()[:16]
        reset_after = max(0.0, window.reset_at - now)
        if window.count >= limit:
            error = rate_limited(reset_after, bucket=bucket_hash)
            error.headers["X-RateLimit-Limit"] = str(limit)
            raise error
        window.count += 1
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit - window.count),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket_hash,
        }

    def take_injection(self, method: str, path: str, *, after: bool = False) -> ApiError | None:
        """The scripted error for this request, if one is pending (and count it down); ``after``
        selects the errors answered once the request was carried out."""
        for injection in self.injections:
            if injection.after != after:
                continue
            if injection.times <= 0:
                continue
            if injection.method not in ("*", method.upper()):
                continue
            if not injection.pattern.search(path):
                continue
            injection.times -= 1
            return injection.build()
        return None
