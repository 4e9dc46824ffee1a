"""One asyncio lock per key (a dataset id, a job id, a (job, message) pair), made on first use.

The one helper for "only one task at a time works on this id in this process" (the ingestor's and the
curator's per-dataset locks, the outbox's per-message lock, the review cog's per-job chart lock).
It serialises coroutines of one process only; across processes the database's row locks do.

A lock is dropped once nobody holds or waits for it, so a long-running bot does not keep one per id
it ever saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holders and waiters: the entry goes when the last of them leaves


class KeyedLocks(Generic[K]):
    """``async with locks(key):`` holds the lock of ``key``; other keys are not blocked."""

    def __init__(self) -> None:
        self._entries: dict[K, _Entry] = {}

    @asynccontextmanager
    async def __call__(self, key: K) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and self._entries.get(key) is entry:
                del self._entries[key]

    def locked(self, key: K) -> bool:
        """Whether some task holds ``key``'s lock now."""
        entry = self._entries.get(key)
        return entry is not None and entry.lock.locked()

    def __len__(self) -> int:
        """How many keys have a holder or a waiter (the others hold no memory)."""
        return len(self._entries)
