"""Recorder of every REST request and gateway frame, with condition-based waits (no sleeps)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .util import SimClock


@dataclass
class RecordedRequest:
    """One REST (or CDN) request and the status the simulator answered with.

    ``path`` is relative to ``/api/v10`` for API routes (``/channels/1/messages``) and the raw
    path for CDN requests (``/attachments/...``). ``json`` is the JSON body, or the parsed
    ``payload_json`` of a multipart body; ``files`` are the uploaded ``(filename, bytes)``.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[tuple[str, bytes]]
    status: int
    authorized: bool
    response: Any = None
    index: int = 0
    at: float = 0.0


@dataclass
class GatewayFrame:
    """One gateway frame: ``direction`` is "send" (simulator → bot) or "recv" (bot → simulator)."""

    direction: str
    op: int | None
    t: str | None
    s: int | None
    d: Any
    session_id: str | None = None
    index: int = 0
    at: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """Keeps every request and frame; ``wait_for_*`` wake on an ``asyncio.Condition``."""

    def __init__(self, clock: SimClock) -> None:
        self.requests: list[RecordedRequest] = []
        self.frames: list[GatewayFrame] = []
        self._clock = clock
        self._cond: asyncio.Condition | None = None

    @property
    def condition(self) -> asyncio.Condition:
        """The condition notified on every record and every state change (created lazily in the loop)."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def notify(self) -> None:
        """Wake every waiter so it re-checks its predicate."""
        async with self.condition:
            self.condition.notify_all()

    async def add_request(self, req: RecordedRequest) -> None:
        """Record a request and wake waiters."""
        req.index = len(self.requests)
        req.at = self._clock.monotonic()
        self.requests.append(req)
        await self.notify()

    def add_frame(self, frame: GatewayFrame) -> None:
        """Record a gateway frame (waiters are woken by the caller's next notify)."""
        frame.index = len(self.frames)
        frame.at = self._clock.monotonic()
        self.frames.append(frame)
        if self._cond is not None:
            asyncio.get_running_loop().create_task(self.notify())

    def mark(self) -> int:
        """Current number of requests: pass as ``after=`` to only see later requests."""
        return len(self.requests)

    def find(
        self,
        method: str | None = None,
        path_regex: str | None = None,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        *,
        after: int = 0,
        status: int | None = None,
    ) -> list[RecordedRequest]:
        """Recorded requests matching method, ``re.search(path_regex, path)``, status and predicate."""
        pattern = re.compile(path_regex) if path_regex else None
        out: list[RecordedRequest] = []
        for req in self.requests[after:]:
            if method is not None and req.method != method.upper():
                continue
            if pattern is not None and not pattern.search(req.path):
                continue
            if status is not None and req.status != status:
                continue
            if predicate is not None and not predicate(req):
                continue
            out.append(req)
        return out

    async def wait_until(self, check: Callable[[], Any], timeout: float = 5.0) -> Any:  # noqa: ASYNC109 - test-facing wait API
        """Wait until ``check()`` returns something truthy (re-checked on every notify); return it."""

        async def _wait() -> Any:
            async with self.condition:
                while True:
                    value = check()
                    if value:
                        return value
                    await self.condition.wait()

        return await asyncio.wait_for(_wait(), timeout)

    async def wait_for_request(
        self,
        method: str | None,
        path_regex: str | None,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - test-facing wait API
        *,
        after: int = 0,
        status: int | None = None,
    ) -> RecordedRequest:
        """The first matching request (already recorded or future)."""

        def check() -> RecordedRequest | None:
            found = self.find(method, path_regex, predicate, after=after, status=status)
            return found[0] if found else None

        try:
            return await self.wait_until(check, timeout)
        except TimeoutError:
            seen = [f"{r.method} {r.path} -> {r.status}" for r in self.requests[after:]]
            raise TimeoutError(f"no {method} {path_regex} request within {timeout}s; saw: {seen}") from None

    async def wait_for_frame(
        self,
        *,
        direction: str | None = None,
        op: int | None = None,
        t: str | None = None,
        predicate: Callable[[GatewayFrame], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - test-facing wait API
        after: int = 0,
    ) -> GatewayFrame:
        """The first matching gateway frame (already recorded or future)."""

        def check() -> GatewayFrame | None:
            for frame in self.frames[after:]:
                if direction is not None and frame.direction != direction:
                    continue
                if op is not None and frame.op != op:
                    continue
                if t is not None and frame.t != t:
                    continue
                if predicate is not None and not predicate(frame):
                    continue
                return frame
            return None

        try:
            return await self.wait_until(check, timeout)
        except TimeoutError:
            raise TimeoutError(f"no gateway frame {direction} op={op} t={t} within {timeout}s") from None
