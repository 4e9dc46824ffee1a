"""Frozen views (storage/views.py): copies of committed rows that can't write back or lazy-load."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.db import unit_of_work
from storage.models import Dataset, Job, JobEvent, JobState
from storage.views import JobEventView, JobView


async def _job(db: async_sessionmaker[AsyncSession], state: JobState) -> Job:
    async with unit_of_work(db) as session:
        dataset = Dataset(guild_id=1, name="elena", trigger_word="ohwx", class_word="woman", owner_id=1)
        session.add(dataset)
        await session.flush()
        job = Job(
            guild_id=1,
            dataset_id=dataset.id,
            preset="sd15-local",
            budget_usd=Decimal("2.50"),
            requested_by=42,
            state=state.value,
            params={"overrides": {"network_dim": "16"}},
            last_log=["step 1", 2],
        )
        session.add(job)
        await session.flush()
        session.add(JobEvent(job_id=job.id, kind="state", to_state="pending", payload={"by": 42}))
        return job


async def test_job_view_copies_the_row_and_says_whether_it_is_live(
    db: async_sessionmaker[AsyncSession],
) -> None:
    row = await _job(db, JobState.TRAINING)
    view = JobView.of(row)

    assert (view.id, view.guild_id, view.requested_by, view.budget_usd) == (row.id, 1, 42, Decimal("2.50"))
    assert view.state is JobState.TRAINING and view.live and not view.terminal
    assert view.cost_usd == Decimal(0) and view.step == 0
    assert view.last_log == ("step 1", "2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.state = JobState.CANCELLED  # type: ignore[misc]
    # The JSON columns are copies: changing the view's never reaches the row.
    view.params["overrides"]["network_dim"] = "999"
    assert row.params == {"overrides": {"network_dim": "16"}}


@pytest.mark.parametrize("state", sorted(JobState, key=lambda s: s.value))
async def test_live_is_the_complement_of_terminal(
    db: async_sessionmaker[AsyncSession], state: JobState
) -> None:
    view = JobView.of(await _job(db, state))
    assert view.live is not view.terminal
    assert view.terminal is state.is_terminal


async def test_job_event_view(db: async_sessionmaker[AsyncSession]) -> None:
    row = await _job(db, JobState.PENDING)
    async with db() as session:
        event = await session.scalar(select(JobEvent).where(JobEvent.job_id == row.id))
    assert event is not None
    view = JobEventView.of(event)
    assert (view.job_id, view.kind, view.to_state, view.payload) == (row.id, "state", "pending", {"by": 42})
    view.payload["by"] = 7
    assert event.payload == {"by": 42}
