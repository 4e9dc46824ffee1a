"""The queries of the spend ledger (design §7 ``spend_ledger``) and of a job's running cost.

The caller (``bot/training/money.py``) owns the unit of work and decides the amounts; this module
reads and stages rows. :func:`add_entry` is the one place a ledger row is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Job, SpendEntry

NOTE_CHARS = 200  # the column's width


async def job_entries(session: AsyncSession, job_id: int) -> Sequence[SpendEntry]:
    """Every ledger entry of the job."""
    return (await session.scalars(select(SpendEntry).where(SpendEntry.job_id == job_id))).all()


def add_entry(
    session: AsyncSession,
    *,
    guild_id: int,
    job_id: int | None,
    kind: str,
    amount: Decimal,
    start: datetime,
    end: datetime,
    note: str,
    at: datetime,
) -> SpendEntry:
    """Stage one ledger entry: ``amount`` for ``[start, end)``, of ``kind``, written ``at``."""
    entry = SpendEntry(
        guild_id=guild_id,
        job_id=job_id,
        amount_usd=amount,
        period_start=start,
        period_end=end,
        kind=kind,
        note=note[:NOTE_CHARS],
        at=at,
    )
    session.add(entry)
    return entry


async def set_cost_if_unchanged(
    session: AsyncSession, job_id: int, expected: Decimal, total: Decimal
) -> bool:
    """Compare-and-set ``Job.cost_usd`` from ``expected`` to ``total``; False if another writer moved it."""
    outcome = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.cost_usd == expected)
        .values(cost_usd=total)
        .execution_options(synchronize_session=False)
    )
    return getattr(outcome, "rowcount", 1) == 1


async def period_ends(session: AsyncSession, kind: str, note_prefix: str) -> Sequence[datetime]:
    """The ``period_end`` of every entry of ``kind`` whose note starts with ``note_prefix``."""
    return (
        await session.scalars(
            select(SpendEntry.period_end).where(
                SpendEntry.kind == kind, SpendEntry.note.startswith(note_prefix)
            )
        )
    ).all()


async def guild_amounts(
    session: AsyncSession, guild_id: int, start: datetime, end: datetime
) -> Sequence[Decimal]:
    """The amounts of the guild's entries whose period starts in ``[start, end)``."""
    return (
        await session.scalars(
            select(SpendEntry.amount_usd).where(
                SpendEntry.guild_id == guild_id,
                SpendEntry.period_start >= start,
                SpendEntry.period_start < end,
            )
        )
    ).all()
