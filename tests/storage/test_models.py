"""Storage behaviour on SQLite and PostgreSQL: constraints, money, time, cascades."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.db import unit_of_work
from storage.models import Dataset, Image, Job, JobEvent, JobState, SpendEntry, Vote


def _dataset(**kw: object) -> Dataset:
    fields: dict[str, object] = {
        "guild_id": 2000,
        "name": "elena",
        "trigger_word": "ohwx",
        "class_word": "woman",
        "owner_id": 1,
    }
    fields.update(kw)
    return Dataset(**fields)


def _image(dataset_id: int, position: int, sha: str) -> Image:
    return Image(
        dataset_id=dataset_id,
        position=position,
        sha256=sha,
        width=10,
        height=10,
        format="JPEG",
        byte_size=100,
        source_kind="attachment",
        added_by=1,
    )


async def test_dataset_names_are_unique_per_guild(db: async_sessionmaker[AsyncSession]) -> None:
    async with unit_of_work(db) as session:
        session.add(_dataset())
        session.add(_dataset(guild_id=2001))  # same name, other guild: fine
    with pytest.raises(IntegrityError):
        async with unit_of_work(db) as session:
            session.add(_dataset())
    async with unit_of_work(db) as session:
        assert len(list(await session.scalars(select(Dataset)))) == 2  # the failed unit left nothing


async def test_money_is_exact_decimal_and_times_are_aware_utc(db: async_sessionmaker[AsyncSession]) -> None:
    paris = timezone(timedelta(hours=1))
    started = datetime(2026, 11, 25, 13, 0, tzinfo=paris)
    async with unit_of_work(db) as session:
        dataset = _dataset()
        session.add(dataset)
        await session.flush()
        session.add(
            SpendEntry(
                guild_id=2000,
                amount_usd=Decimal("0.1") + Decimal("0.2"),
                period_start=started,
                period_end=started + timedelta(minutes=51),
            )
        )
    async with unit_of_work(db) as session:
        entry = await session.scalar(select(SpendEntry))
        assert entry is not None
        assert entry.amount_usd == Decimal("0.3")
        assert isinstance(entry.amount_usd, Decimal)
        assert entry.period_start.tzinfo is not None
        assert entry.period_start == started
        assert entry.period_start.utcoffset() == timedelta(0)
        assert entry.at.tzinfo is not None


async def test_naive_datetimes_and_float_money_are_refused(db: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(StatementError):
        async with unit_of_work(db) as session:
            session.add(
                SpendEntry(
                    guild_id=1,
                    amount_usd=Decimal(1),
                    period_start=datetime(2026, 1, 1),  # noqa: DTZ001
                    period_end=datetime.now(UTC),
                )
            )
    with pytest.raises(StatementError):
        async with unit_of_work(db) as session:
            now = datetime.now(UTC)
            session.add(SpendEntry(guild_id=1, amount_usd=0.3, period_start=now, period_end=now))  # type: ignore[arg-type]


async def test_images_cascade_and_positions_are_unique(db: async_sessionmaker[AsyncSession]) -> None:
    async with unit_of_work(db) as session:
        dataset = _dataset()
        session.add(dataset)
        await session.flush()
        session.add_all([_image(dataset.id, 1, "a" * 64), _image(dataset.id, 2, "b" * 64)])
        dataset_id = dataset.id
    with pytest.raises(IntegrityError):
        async with unit_of_work(db) as session:
            session.add(_image(dataset_id, 2, "c" * 64))
    with pytest.raises(IntegrityError):
        async with unit_of_work(db) as session:
            session.add(_image(dataset_id, 3, "a" * 64))  # same bytes twice in one subset
    async with unit_of_work(db) as session:
        dataset = await session.get(Dataset, dataset_id)
        await session.delete(dataset)
    async with unit_of_work(db) as session:
        assert list(await session.scalars(select(Image))) == []


async def test_job_events_and_votes(db: async_sessionmaker[AsyncSession]) -> None:
    async with unit_of_work(db) as session:
        dataset = _dataset()
        session.add(dataset)
        await session.flush()
        job = Job(
            guild_id=2000,
            dataset_id=dataset.id,
            preset="sdxl-face",
            budget_usd=Decimal("2.50"),
            requested_by=1,
            pod_name="loraops-1",
        )
        session.add(job)
        await session.flush()
        session.add(JobEvent(job_id=job.id, kind="state", from_state=None, to_state=JobState.PENDING))
        session.add(Vote(message_id=5, user_id=7, emoji="👍", job_id=job.id))
        job_id = job.id
    with pytest.raises(IntegrityError):
        async with unit_of_work(db) as session:
            session.add(Vote(message_id=5, user_id=7, emoji="👍", job_id=job_id))
    async with unit_of_work(db) as session:
        job = await session.get(Job, job_id)
        assert job is not None
        assert job.state == JobState.PENDING
        assert job.cost_usd == Decimal(0)
        assert job.budget_usd == Decimal("2.50")
        events = list(await session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)))
        assert [e.to_state for e in events] == ["pending"]
        assert JobState(job.state) in {JobState.PENDING}
