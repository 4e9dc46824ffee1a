"""Cost accrual into the ledger with a controllable clock, and the budgets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from bot.config import Settings
from bot.training.money import Money, cost_of, month_start, next_month_start, split_by_month, usd
from storage.db import unit_of_work
from storage.models import GuildSettings, Job, SpendEntry

from .conftest import GUILD, ShiftableClock, make_dataset

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


async def _job(sessions, *, price: str = "0.36", budget: str = "5", created: datetime = T0) -> int:  # type: ignore[no-untyped-def]
    dataset_id = await make_dataset(sessions)
    async with unit_of_work(sessions) as session:
        job = Job(
            guild_id=GUILD,
            dataset_id=dataset_id,
            preset="p",
            state="training",
            budget_usd=Decimal(budget),
            requested_by=1,
            pod_id="pod1",
            pod_name="loraops-1",
            price_per_hour=Decimal(price),
            pod_created_at=created,
        )
        session.add(job)
        await session.flush()
        return job.id


async def _ledger(sessions, job_id: int) -> list[SpendEntry]:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        return list(
            (
                await session.scalars(
                    select(SpendEntry).where(SpendEntry.job_id == job_id).order_by(SpendEntry.id)
                )
            ).all()
        )


async def _cost(sessions, job_id: int) -> Decimal:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job.cost_usd


def test_cost_of_is_exact_and_display_rounds() -> None:
    assert cost_of(Decimal("0.36"), timedelta(minutes=10)) == Decimal("0.060000")
    assert cost_of(Decimal("0.27"), timedelta(seconds=1)) == Decimal("0.000075")
    assert cost_of(Decimal("1"), timedelta(seconds=-5)) == 0
    assert usd(Decimal("0.125")) == "$0.13" and usd(Decimal(5)) == "$5.00"
    assert usd(Decimal("0.001166")) == "$0.0012" and usd(Decimal(0)) == "$0.00"
    assert usd(Decimal("0.005")) == "$0.01"


def test_month_helpers() -> None:
    at = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert month_start(at) == datetime(2026, 12, 1, tzinfo=UTC)
    assert next_month_start(at) == datetime(2027, 1, 1, tzinfo=UTC)
    pieces = split_by_month(datetime(2026, 11, 30, 23, tzinfo=UTC), datetime(2027, 1, 1, 1, tzinfo=UTC))
    assert [p[0].month for p in pieces] == [11, 12, 1]
    assert pieces[0][1] == pieces[1][0] and pieces[1][1] == pieces[2][0]


async def test_accrues_incrementally_without_double_counting(sessions, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    job_id = await _job(sessions)
    clock = ShiftableClock(T0)
    money = Money(sessions, settings, clock=clock)
    assert (await money.accrue(job_id)).delta == 0  # no time has passed
    clock.advance(minutes=10)
    first = await money.accrue(job_id)
    assert first.delta == Decimal("0.06") and first.cost == Decimal("0.06")
    assert (await money.accrue(job_id)).delta == 0  # same instant again: nothing
    clock.advance(minutes=20)
    # A restarted process (new Money over the same database) continues from the ledger.
    restarted = Money(sessions, settings, clock=clock)
    second = await restarted.accrue(job_id)
    assert second.delta == Decimal("0.12") and second.cost == Decimal("0.18")
    entries = await _ledger(sessions, job_id)
    assert [e.amount_usd for e in entries] == [Decimal("0.06"), Decimal("0.12")]
    assert entries[0].period_start == T0 and entries[0].period_end == entries[1].period_start
    assert entries[1].period_end == T0 + timedelta(minutes=30)
    assert await _cost(sessions, job_id) == sum(e.amount_usd for e in entries)


async def test_stops_at_pod_termination(sessions, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    job_id = await _job(sessions, price="0.27")
    async with unit_of_work(sessions) as session:
        job = await session.get(Job, job_id)
        assert job is not None
        job.pod_terminated_at = T0 + timedelta(minutes=40)
    clock = ShiftableClock(T0 + timedelta(hours=5))
    money = Money(sessions, settings, clock=clock)
    assert (await money.accrue(job_id)).cost == Decimal("0.18")
    clock.advance(hours=1)
    assert (await money.accrue(job_id)).delta == 0
    assert len(await _ledger(sessions, job_id)) == 1


async def test_no_pod_no_cost(sessions, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    dataset_id = await make_dataset(sessions)
    async with unit_of_work(sessions) as session:
        job = Job(guild_id=GUILD, dataset_id=dataset_id, preset="p", budget_usd=Decimal(5), requested_by=1)
        session.add(job)
        await session.flush()
        job_id = job.id
    money = Money(sessions, settings, clock=ShiftableClock(T0))
    assert (await money.accrue(job_id)).cost == 0
    assert await _ledger(sessions, job_id) == []


async def test_concurrent_accruals_count_once(sessions, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    job_id = await _job(sessions, price="3.60")
    clock = ShiftableClock(T0 + timedelta(minutes=1))
    a, b = Money(sessions, settings, clock=clock), Money(sessions, settings, clock=clock)
    await asyncio.gather(a.accrue(job_id), b.accrue(job_id), a.accrue(job_id))
    assert await _cost(sessions, job_id) == Decimal("0.06")
    assert sum(e.amount_usd for e in await _ledger(sessions, job_id)) == Decimal("0.06")


async def test_split_at_month_boundary(sessions, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    job_id = await _job(sessions, price="1.00", created=datetime(2026, 11, 30, 23, 0, tzinfo=UTC))
    clock = ShiftableClock(datetime(2026, 12, 1, 1, 0, tzinfo=UTC))
    money = Money(sessions, settings, clock=clock)
    assert (await money.accrue(job_id)).cost == Decimal("2.00")
    entries = await _ledger(sessions, job_id)
    assert [(e.period_start.month, e.amount_usd) for e in entries] == [
        (11, Decimal("1.00")),
        (12, Decimal("1.00")),
    ]
    assert await money.month_spent(GUILD, datetime(2026, 11, 15, tzinfo=UTC)) == Decimal("1.00")
    assert await money.month_spent(GUILD) == Decimal("1.00")
    assert await money.month_spent(GUILD + 1) == 0


async def test_job_budget_crossed(sessions, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    job_id = await _job(sessions, price="0.36", budget="0.10")
    clock = ShiftableClock(T0 + timedelta(minutes=10))
    money = Money(sessions, settings, clock=clock)
    await money.accrue(job_id)
    assert await money.budget_stop(job_id) is None
    # Polling every 10 minutes: the next check would be over, so stop now.
    ahead = await money.budget_stop(job_id, lookahead_s=600)
    assert ahead is not None and ahead.scope == "job"
    clock.advance(minutes=10)
    await money.accrue(job_id)
    stop = await money.budget_stop(job_id)
    assert stop is not None and stop.scope == "job" and stop.spent == Decimal("0.12")
    assert "job budget $0.10 reached ($0.12 spent)" in stop.message


async def test_guild_month_budget_crossed(sessions, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    job_id = await _job(sessions, price="0.36", budget="100")
    async with unit_of_work(sessions) as session:
        session.add(
            GuildSettings(guild_id=GUILD, monthly_budget_usd=Decimal("0.05"), job_budget_usd=Decimal("3"))
        )
    money = Money(sessions, settings, clock=ShiftableClock(T0 + timedelta(minutes=10)))
    assert await money.month_budget(GUILD) == Decimal("0.05")
    assert await money.default_job_budget(GUILD) == Decimal("3")
    assert await money.month_budget(GUILD + 1) == settings.monthly_budget_usd
    await money.accrue(job_id)
    stop = await money.budget_stop(job_id)
    assert stop is not None and stop.scope == "month"
    assert "month" in stop.message and "$0.05" in stop.message
