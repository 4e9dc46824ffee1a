"""Cost accrual and budgets (design §7). Money is ``Decimal`` everywhere; times are aware UTC.

A pod costs its ``costPerHr`` (read from RunPod at launch, stored in ``Job.price_per_hour``) for
every second it exists: from ``Job.pod_created_at`` until now, or until ``Job.pod_terminated_at``.
That cost is written to the spend ledger (``SpendEntry``) as it accrues. Each accrual covers only
the time since the job's last ledger ``period_end`` and is computed as the difference between the
cumulative cost and what the ledger already holds, so repeated or restarted accruals never count a
second twice and rounding never drifts. Entries are split at calendar-month boundaries (UTC) so a
guild's monthly spend is a plain sum over that month's entries.

Concurrent accruals of the same job (the orchestrator's poll and the reconciler's sweep) are made
safe by a compare-and-set on ``Job.cost_usd``: the loser of a race rolls back and recomputes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from storage.db import unit_of_work
from storage.models import GuildSettings, Job, SpendEntry
from storage.types import utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
CENT = Decimal("0.01")
MICRO = Decimal("0.000001")  # the ledger's resolution (NUMERIC(14, 6))
_US_PER_HOUR = Decimal(3_600_000_000)
POD_TIME = "pod_time"


def usd(amount: Decimal) -> str:
    """``$1.23`` for display (rounded half up to the cent).

    A positive amount under a cent keeps four decimals (``$0.0012``): a short pod costs that much, and
    "$0.00" would read as if nothing had been spent.
    """
    if Decimal(0) < amount < CENT / 2:
        return f"${amount.quantize(Decimal('0.0001'), rounding=ROUND_HALF_UP)}"
    return f"${amount.quantize(CENT, rounding=ROUND_HALF_UP)}"


def cost_of(price_per_hour: Decimal, duration: timedelta) -> Decimal:
    """Exact cost of ``duration`` at ``price_per_hour``, rounded to the ledger's micro-dollar."""
    micros = max(duration, timedelta(0)) // timedelta(microseconds=1)
    return (price_per_hour * Decimal(micros) / _US_PER_HOUR).quantize(MICRO, rounding=ROUND_HALF_UP)


def month_start(at: datetime) -> datetime:
    """The first instant of ``at``'s calendar month, UTC."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def next_month_start(at: datetime) -> datetime:
    start = month_start(at)
    return datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)


def split_by_month(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at each month boundary it crosses."""
    pieces: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        boundary = min(next_month_start(cursor), end)
        pieces.append((cursor, boundary))
        cursor = boundary
    return pieces


@dataclass(frozen=True)
class BudgetStop:
    """Why a job must stop: ``scope`` is ``job`` (its own budget) or ``month`` (the guild's month)."""

    scope: Literal["job", "month"]
    spent: Decimal
    budget: Decimal
    message: str


class _RacedError(Exception):
    """Another accrual of the same job committed between our read and our write."""


@dataclass(frozen=True)
class Accrual:
    job_id: int
    delta: Decimal
    cost: Decimal


class Money:
    """Accrues pod time into the ledger and answers budget questions. One per process is enough."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        clock: Clock = utcnow,
        min_period_s: float = 0.0,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        # While a pod runs, ledger rows shorter than this are not written (fewer rows when polling
        # often); the final accrual after termination is always written.
        self.min_period = timedelta(seconds=min_period_s)

    def now(self) -> datetime:
        return self._clock()

    async def accrue(self, job_id: int) -> Accrual:
        """Bring the job's ledger up to now (or to the pod's termination). Returns what was added."""
        for _attempt in range(5):
            try:
                return await self._accrue_once(job_id)
            except _RacedError:
                continue
        raise RuntimeError(f"job {job_id}: cost accrual kept racing; giving up this round")

    async def _accrue_once(self, job_id: int) -> Accrual:
        now = self._clock()
        async with unit_of_work(self._sessions) as session:
            job = await session.get(Job, job_id)
            if job is None:
                raise LookupError(f"job {job_id} does not exist")
            created, price = job.pod_created_at, job.price_per_hour
            if created is None or price is None:
                return Accrual(job_id, Decimal(0), job.cost_usd)
            end = max(job.pod_terminated_at or now, created)
            entries = (
                await session.scalars(
                    select(SpendEntry).where(SpendEntry.job_id == job_id, SpendEntry.kind == POD_TIME)
                )
            ).all()
            accrued = sum((entry.amount_usd for entry in entries), Decimal(0))
            last_end = max((entry.period_end for entry in entries), default=created)
            if end <= last_end or (job.pod_terminated_at is None and end - last_end < self.min_period):
                return Accrual(job_id, Decimal(0), accrued)
            running = accrued
            for piece_start, piece_end in split_by_month(last_end, end):
                amount = cost_of(price, piece_end - created) - running
                if amount <= 0:
                    continue
                running += amount
                session.add(
                    SpendEntry(
                        guild_id=job.guild_id,
                        job_id=job_id,
                        amount_usd=amount,
                        period_start=piece_start,
                        period_end=piece_end,
                        kind=POD_TIME,
                        note=f"{job.pod_name or 'pod'} {job.gpu_type or ''} @ {price}/h".strip()[:200],
                        at=now,
                    )
                )
            if running == job.cost_usd:
                return Accrual(job_id, Decimal(0), running)
            # Compare-and-set: if another accrual moved cost_usd since we read it, start over.
            outcome = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.cost_usd == job.cost_usd)
                .values(cost_usd=running)
                .execution_options(synchronize_session=False)
            )
            if getattr(outcome, "rowcount", 1) != 1:
                raise _RacedError  # leaves the unit of work, which rolls our entries back
            return Accrual(job_id, running - job.cost_usd, running)

    async def month_spent(self, guild_id: int, at: datetime | None = None) -> Decimal:
        """What the guild's ledger holds for ``at``'s calendar month (UTC)."""
        at = at or self._clock()
        start, end = month_start(at), next_month_start(at)
        async with self._sessions() as session:
            amounts = (
                await session.scalars(
                    select(SpendEntry.amount_usd).where(
                        SpendEntry.guild_id == guild_id,
                        SpendEntry.period_start >= start,
                        SpendEntry.period_start < end,
                    )
                )
            ).all()
        # Summed here, not in SQL: SQLite stores Money as text.
        return sum(amounts, Decimal(0))

    async def month_budget(self, guild_id: int) -> Decimal:
        """The guild's monthly budget: its own setting, else the default from settings."""
        async with self._sessions() as session:
            guild = await session.get(GuildSettings, guild_id)
        if guild is not None and guild.monthly_budget_usd is not None:
            return guild.monthly_budget_usd
        return self._settings.monthly_budget_usd

    async def default_job_budget(self, guild_id: int) -> Decimal:
        """The per-job budget when none is given: the guild's setting, else settings' default."""
        async with self._sessions() as session:
            guild = await session.get(GuildSettings, guild_id)
        if guild is not None and guild.job_budget_usd is not None:
            return guild.job_budget_usd
        return self._settings.default_job_budget_usd

    async def budget_stop(self, job_id: int, *, lookahead_s: float = 0.0) -> BudgetStop | None:
        """Whether the job has crossed its budget or its guild's month budget.

        ``lookahead_s`` counts the cost of that many more seconds of this pod, so a poller that
        checks every N seconds stops *before* the next check would find the budget overrun.
        """
        async with self._sessions() as session:
            job = await session.get(Job, job_id)
        if job is None:
            raise LookupError(f"job {job_id} does not exist")
        extra = Decimal(0)
        if job.price_per_hour is not None and job.pod_terminated_at is None and lookahead_s > 0:
            extra = cost_of(job.price_per_hour, timedelta(seconds=lookahead_s))
        if job.cost_usd + extra >= job.budget_usd:
            return BudgetStop(
                "job",
                job.cost_usd,
                job.budget_usd,
                f"job budget {usd(job.budget_usd)} reached ({usd(job.cost_usd)} spent)",
            )
        spent, budget = await self.month_spent(job.guild_id), await self.month_budget(job.guild_id)
        if spent + extra >= budget:
            return BudgetStop(
                "month",
                spent,
                budget,
                f"this month's budget {usd(budget)} reached ({usd(spent)} spent this month)",
            )
        return None
