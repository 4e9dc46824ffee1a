"""The state machine: the table exhaustively, and the committed, idempotent transition."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from sqlalchemy import select

from bot.training.states import (
    FORWARD,
    TRANSITIONS,
    IllegalTransitionError,
    can_transition,
    is_live,
    is_terminal,
    next_state,
    transition,
)
from storage.db import unit_of_work
from storage.models import LIVE_STATES, TERMINAL_STATES, Job, JobEvent, JobState

from .conftest import make_dataset

STOPS = {JobState.FAILED, JobState.CANCELLED, JobState.BUDGET_STOPPED}

EXPECTED_FORWARD = {
    JobState.PENDING: JobState.PROVISIONING,
    JobState.PROVISIONING: JobState.UPLOADING,
    JobState.UPLOADING: JobState.TRAINING,
    JobState.TRAINING: JobState.COLLECTING,
    JobState.COLLECTING: JobState.SUCCEEDED,
}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(JobState, JobState)))
def test_table_every_pair(old: JobState, new: JobState) -> None:
    allowed = old in LIVE_STATES and (new in STOPS or EXPECTED_FORWARD.get(old) == new)
    assert can_transition(old, new) is allowed
    assert can_transition(old.value, new.value) is allowed


def test_table_shape() -> None:
    assert set(TRANSITIONS) == set(JobState)
    for state in TERMINAL_STATES:
        assert TRANSITIONS[state] == frozenset()
        assert next_state(state) is None
        assert is_terminal(state) and not is_live(state)
    for state in LIVE_STATES:
        assert next_state(state) == EXPECTED_FORWARD[state]
        assert state not in TRANSITIONS[state]
    assert FORWARD[0] == JobState.PENDING and FORWARD[-1] == JobState.SUCCEEDED


async def _job(sessions, state: JobState = JobState.PENDING) -> int:  # type: ignore[no-untyped-def]
    dataset_id = await make_dataset(sessions)
    async with unit_of_work(sessions) as session:
        job = Job(
            guild_id=1001,
            dataset_id=dataset_id,
            preset="p",
            state=state.value,
            budget_usd=Decimal(5),
            requested_by=1,
        )
        session.add(job)
        await session.flush()
        return job.id


async def _events(sessions, job_id: int) -> list[JobEvent]:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        return list((await session.scalars(select(JobEvent).where(JobEvent.job_id == job_id))).all())


async def test_transition_commits_row_and_event(sessions) -> None:  # type: ignore[no-untyped-def]
    job_id = await _job(sessions)
    result = await transition(sessions, job_id, JobState.PROVISIONING, payload={"by": 7})
    assert result.changed and result.old == JobState.PENDING and result.new == JobState.PROVISIONING
    # Read through a fresh session: it is committed.
    async with sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None and job.state == "provisioning" and job.finished_at is None
    (event,) = await _events(sessions, job_id)
    assert (event.kind, event.from_state, event.to_state, event.payload) == (
        "state",
        "pending",
        "provisioning",
        {"by": 7},
    )


async def test_transition_idempotent_and_terminal_is_final(sessions) -> None:  # type: ignore[no-untyped-def]
    job_id = await _job(sessions, JobState.TRAINING)
    again = await transition(sessions, job_id, JobState.TRAINING)
    assert not again.changed
    stopped = await transition(
        sessions, job_id, JobState.CANCELLED, update=lambda j: setattr(j, "error", "bye")
    )
    assert stopped.changed and stopped.job.finished_at is not None and stopped.job.error == "bye"
    # A late success, a second cancel or a budget stop after cancel change nothing.
    for late in (JobState.SUCCEEDED, JobState.CANCELLED, JobState.BUDGET_STOPPED):
        result = await transition(sessions, job_id, late)
        assert not result.changed and result.new == JobState.CANCELLED
    assert len(await _events(sessions, job_id)) == 1


async def test_illegal_transition_raises_and_writes_nothing(sessions) -> None:  # type: ignore[no-untyped-def]
    job_id = await _job(sessions, JobState.TRAINING)
    with pytest.raises(IllegalTransitionError):
        await transition(sessions, job_id, JobState.PROVISIONING)
    with pytest.raises(IllegalTransitionError):
        await transition(sessions, job_id, JobState.SUCCEEDED)  # must pass through collecting
    async with sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None and job.state == "training"
    assert await _events(sessions, job_id) == []
    with pytest.raises(LookupError):
        await transition(sessions, 999, JobState.FAILED)
