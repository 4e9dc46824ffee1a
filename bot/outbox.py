"""Messages a job owes its channel, each posted exactly once whatever moment the bot dies at.

Posting a message and storing its id cannot be one transaction, so the bot records its *intent* first
(an :class:`~storage.models.OwedMessage` row under a key such as ``summary`` or ``row:20``, with a fresh
nonce and the content it is about to send), then posts, then stores the id Discord answered. After a
crash between the post and the store, the next attempt for the same key first looks for the message
(the bot's own message with exactly the recorded content, posted after the intent) and adopts it;
only when it is not there is it posted again, with the same nonce, which Discord also uses to refuse
a duplicate created in the last few minutes (so a 5xx answer to a post that did create the message
does not double it when retried). A key whose message id is stored is never posted again.

This module knows nothing of Discord: the caller passes ``send(nonce) -> message id`` and
``find(channel_id, since, content) -> message id | None`` (``cogs/_outbox.py`` builds both).

One asyncio lock per (job, key) serialises attempts within the process, so the reconciler finishing an
owed message and a live listener posting it cannot both post.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crashpoints import crashpoint
from bot.locks import KeyedLocks
from storage import outbox as store
from storage.db import unit_of_work
from storage.types import utcnow
from storage.views import OwedMessageView

log = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[int]]
Find = Callable[[int, datetime, str], Awaitable[int | None]]

PROGRESS = "progress"
SUMMARY = "summary"
CHART = "chart"
EARLY_STOP = "early_stop"
FACE_ALARM = "face_alarm"
QUOTE = "quote"


def row_key(step: int) -> str:
    """The key of a checkpoint's grid row."""
    return f"row:{step}"


def delivery_key(step: int) -> str:
    """The key of the message announcing the delivery of an approved checkpoint."""
    return f"delivery:{step}"


def new_nonce() -> str:
    # Discord takes a nonce of at most 25 characters.
    return secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Posted:
    """Where an owed message is. ``fresh``: this call posted it (reactions etc. still to be added);
    ``recovered``: an earlier attempt had posted it and it was found again."""

    message_id: int | None
    fresh: bool = False
    recovered: bool = False


class Outbox:
    """The owed-message ledger; one per process."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._locks = KeyedLocks[tuple[int, str]]()

    def _lock(self, job_id: int, key: str) -> AbstractAsyncContextManager[None]:
        return self._locks((job_id, key))

    # -- reading ------------------------------------------------------------------------------------

    async def get(self, job_id: int, key: str) -> OwedMessageView | None:
        async with self._sessions() as session:
            row = await store.owed(session, job_id, key)
            return OwedMessageView.of(row) if row is not None else None

    async def message_id(self, job_id: int, key: str) -> int | None:
        row = await self.get(job_id, key)
        return row.message_id if row is not None else None

    async def done_keys(self, job_id: int) -> set[str]:
        """Keys of the job whose message is posted (or settled without one)."""
        async with self._sessions() as session:
            return await store.done_keys(session, job_id)

    async def posted(
        self, job_ids: Sequence[int], keys: Sequence[str] | None = None
    ) -> list[OwedMessageView]:
        """Posted messages of these jobs (optionally only these keys)."""
        if not job_ids:
            return []
        async with self._sessions() as session:
            return [OwedMessageView.of(row) for row in await store.posted(session, job_ids, keys)]

    # -- writing ------------------------------------------------------------------------------------

    async def deliver(
        self, job_id: int, key: str, *, channel_id: int, content: str, send: Send, find: Find
    ) -> Posted:
        """Post the message owed under ``key`` unless it already is; see the module docstring.

        Raises what ``send`` raises (the intent stays recorded: the next attempt finds or re-posts)."""
        async with self._lock(job_id, key):
            row = await self._intent(job_id, key, channel_id)
            if row.done_at is not None:
                return Posted(row.message_id)
            if row.attempted_at is not None and row.channel_id is not None:
                # An earlier attempt may have posted and died (or been answered with an error).
                found = await find(row.channel_id, row.attempted_at, row.content)
                if found is not None:
                    log.info("job %s: found its %s message %s again", job_id, key, found)
                    await self._done(row.id, found)
                    return Posted(found, recovered=True)
            await self._attempt(row.id, channel_id, content)
            message_id = await send(row.nonce)
            crashpoint(f"outbox.sent:{key}")
            await self._done(row.id, message_id)
            return Posted(message_id, fresh=True)

    async def record(self, job_id: int, key: str, *, channel_id: int | None, message_id: int) -> None:
        """Record a message posted by other means (an interaction's reply, e.g. the quote)."""
        async with self._lock(job_id, key):
            row = await self._intent(job_id, key, channel_id)
            await self._done(row.id, message_id)

    async def settle(self, job_id: int, key: str) -> None:
        """Nothing will be posted for ``key`` (no channel to post in): stop owing it."""
        async with self._lock(job_id, key):
            row = await self._intent(job_id, key, None)
            if row.done_at is None:
                await self._done(row.id, None)

    async def forget(self, job_id: int, key: str, message_id: int) -> None:
        """The message was deleted from Discord: the next :meth:`deliver` posts a new one."""
        async with self._lock(job_id, key), unit_of_work(self._sessions) as session:
            await store.delete_posted(session, job_id, key, message_id)

    async def _intent(self, job_id: int, key: str, channel_id: int | None) -> OwedMessageView:
        known = await self.get(job_id, key)
        if known is not None:
            return known
        try:
            async with unit_of_work(self._sessions) as session:
                row = store.add_owed(
                    session,
                    job_id=job_id,
                    key=key,
                    channel_id=channel_id,
                    nonce=new_nonce(),
                    created_at=utcnow(),
                )
        except IntegrityError:  # recorded meanwhile (another process): use that one
            existing = await self.get(job_id, key)
            if existing is None:
                raise
            return existing
        return OwedMessageView.of(row)  # committed: the row has its id and defaults

    async def _attempt(self, row_id: int, channel_id: int, content: str) -> None:
        # Committed before the post: after a crash the next attempt knows what to look for, and since when.
        async with unit_of_work(self._sessions) as session:
            row = await store.owed_by_id(session, row_id)
            assert row is not None
            row.channel_id = channel_id
            row.content = content
            row.attempts += 1
            if row.attempted_at is None:
                row.attempted_at = utcnow()

    async def _done(self, row_id: int, message_id: int | None) -> None:
        async with unit_of_work(self._sessions) as session:
            row = await store.owed_by_id(session, row_id)
            assert row is not None
            row.message_id = message_id
            row.done_at = utcnow()
