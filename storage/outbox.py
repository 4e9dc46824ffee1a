"""The queries of the owed-message ledger (``OwedMessage``, design §7): one row per message a job owes the
team, keyed by ``(job, key)``. The caller (``bot/outbox.py``) owns each unit of work."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import OwedMessage


async def owed(session: AsyncSession, job_id: int, key: str) -> OwedMessage | None:
    return await session.scalar(
        select(OwedMessage).where(OwedMessage.job_id == job_id, OwedMessage.key == key)
    )


async def owed_by_id(session: AsyncSession, row_id: int) -> OwedMessage | None:
    return await session.get(OwedMessage, row_id)


def add_owed(
    session: AsyncSession, *, job_id: int, key: str, channel_id: int | None, nonce: str, created_at: datetime
) -> OwedMessage:
    """Stage the intent to post (unique per job and key: a second one fails when it is flushed)."""
    row = OwedMessage(
        job_id=job_id,
        key=key,
        channel_id=channel_id,
        nonce=nonce,
        content="",
        attempts=0,
        created_at=created_at,
    )
    session.add(row)
    return row


async def delete_posted(session: AsyncSession, job_id: int, key: str, message_id: int) -> None:
    await session.execute(
        delete(OwedMessage).where(
            OwedMessage.job_id == job_id, OwedMessage.key == key, OwedMessage.message_id == message_id
        )
    )


async def done_keys(session: AsyncSession, job_id: int) -> set[str]:
    """Keys of the job whose message is posted (or settled without one)."""
    rows = await session.scalars(
        select(OwedMessage.key).where(OwedMessage.job_id == job_id, OwedMessage.done_at.is_not(None))
    )
    return set(rows.all())


async def done_keys_like(session: AsyncSession, pattern: str) -> set[tuple[int, str]]:
    """``(job id, key)`` of every settled message whose key matches the SQL LIKE ``pattern``."""
    rows = await session.execute(
        select(OwedMessage.job_id, OwedMessage.key).where(
            OwedMessage.key.like(pattern), OwedMessage.done_at.is_not(None)
        )
    )
    return {(int(job_id), str(key)) for job_id, key in rows.tuples().all()}


async def posted(
    session: AsyncSession, job_ids: Collection[int], keys: Collection[str] | None = None
) -> list[OwedMessage]:
    """Posted messages of these jobs (optionally only these keys), oldest first."""
    query = select(OwedMessage).where(
        OwedMessage.job_id.in_(list(job_ids)), OwedMessage.message_id.is_not(None)
    )
    if keys is not None:
        query = query.where(OwedMessage.key.in_(list(keys)))
    return list((await session.scalars(query.order_by(OwedMessage.id))).all())


async def posted_of_jobs(session: AsyncSession, job_ids: Collection[int]) -> Sequence[OwedMessage]:
    """Posted messages of these jobs that know their channel, oldest first."""
    return (
        await session.scalars(
            select(OwedMessage)
            .where(
                OwedMessage.job_id.in_(list(job_ids)),
                OwedMessage.message_id.is_not(None),
                OwedMessage.channel_id.is_not(None),
            )
            .order_by(OwedMessage.id)
        )
    ).all()
