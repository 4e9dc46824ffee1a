"""Cost accrual into the ledger with a controllable clock, and the budgets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from bot.config import Settings
from bot.training.money import (
    EXTRA_POD,
    EXTRA_POD_STORAGE,
    POD_EXITED_EVENT,
    POD_TIME,
    STORAGE,
    Money,
    cost_of,
    month_start,
    next_month_start,
    split_by_month,
    usd,
)
from bot.training.pricing import PodDisks, gpu_price
from storage.db import unit_of_work
from storage.models import GuildSettings, Job, JobEvent, SpendEntry

from .conftest import GUILD, ShiftableClock, make_dataset

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


NO_DISKS = {"pod": {"container_disk_in_gb": 0, "volume_in_gb": 0}}


async def _job(  # type: ignore[no-untyped-def]
    sessions,
    *,
    price: str = "0.36",
    budget: str = "5",
    created: datetime = T0,
    params: dict[str, Any] | None = None,
) -> int:
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
            params=NO_DISKS if params is None else params,
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


async def test_disks_are_billed_with_the_pod(sessions, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    params = {"pod": {"container_disk_in_gb": 73, "volume_in_gb": 146}}
    job_id = await _job(sessions, price="0.27", params=params)
    money = Money(sessions, settings, clock=ShiftableClock(T0 + timedelta(hours=10)))
    accrual = await money.accrue(job_id)
    # 73 GB container + 146 GB volume at $0.10/GB-month, 730 h a month: $0.03/h.
    assert accrual.cost == Decimal("2.70") + Decimal("0.30")
    kinds = {e.kind: e.amount_usd for e in await _ledger(sessions, job_id)}
    assert kinds == {POD_TIME: Decimal("2.70"), STORAGE: Decimal("0.30")}
    stop = await money.budget_stop(job_id, lookahead_s=3600)  # $3.00 + $0.30 of look-ahead: < $5
    assert stop is None


async def test_a_pod_that_exited_stops_gpu_billing_then_bills_its_volume_stopped(  # type: ignore[no-untyped-def]
    sessions, settings: Settings
) -> None:
    params = {"pod": {"container_disk_in_gb": 73, "volume_in_gb": 73}}
    job_id = await _job(sessions, price="0.36", params=params)
    clock = ShiftableClock(T0 + timedelta(hours=2))
    money = Money(sessions, settings, clock=clock)
    assert (await money.accrue(job_id)).cost == Decimal("0.72") + Decimal("0.04")
    # Learnt now: the pod had exited after one hour. GPU time after that is taken back.
    async with unit_of_work(sessions) as session:
        session.add(
            JobEvent(
                job_id=job_id,
                at=clock(),
                kind=POD_EXITED_EVENT,
                payload={"at": (T0 + timedelta(hours=1)).isoformat()},
            )
        )
    accrual = await money.accrue(job_id)
    # 1 h of GPU and both disks ($0.36 + $0.02), then 1 h of the 73 GB volume stopped ($0.02).
    assert accrual.cost == Decimal("0.36") + Decimal("0.02") + Decimal("0.02")
    entries = await _ledger(sessions, job_id)
    assert sum(e.amount_usd for e in entries if e.kind == POD_TIME) == Decimal("0.36")
    assert await _cost(sessions, job_id) == sum(e.amount_usd for e in entries)


async def test_extra_pods_are_charged_once_each(sessions, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    job_id = await _job(sessions, price="0.27")
    money = Money(sessions, settings, clock=ShiftableClock(T0))
    disks = PodDisks(container_gb=73, volume_gb=0)
    charge = {
        "pod_id": "ghost1",
        "price_per_hour": Decimal("0.27"),
        "disks": disks,
        "start": T0,
        "end": T0 + timedelta(hours=1),
    }
    assert await money.charge_extra_pod(job_id, **charge) == Decimal("0.28")
    assert await money.charge_extra_pod(job_id, **charge) == 0  # a retry or a second process
    assert await money.charge_extra_pod(job_id, **{**charge, "pod_id": "ghost2"}) == Decimal("0.28")
    entries = await _ledger(sessions, job_id)
    assert [e.kind for e in entries] == [EXTRA_POD, EXTRA_POD_STORAGE] * 2
    assert await _cost(sessions, job_id) == Decimal("0.56")


def test_a_pod_is_never_free() -> None:
    assert gpu_price(Decimal("0.27"), catalogue=Decimal("0.30")) == Decimal("0.27")
    assert gpu_price(Decimal(0), catalogue=Decimal("0.30")) == Decimal("0.30")
    assert gpu_price(None, catalogue=None, quoted=Decimal("0.25")) == Decimal("0.25")
    assert gpu_price(None, catalogue=Decimal(0)) is None
