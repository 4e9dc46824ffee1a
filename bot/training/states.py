"""The training job's state machine (design §5): a pure transition table and one committed step.

``pending → provisioning → uploading → training → collecting → succeeded``; ``failed``, ``cancelled``
and ``budget_stopped`` may follow any live state. Terminal states are final.

:func:`transition` is the only writer of ``Job.state``. It commits the job row change and its
``JobEvent`` in one short transaction *before* the caller performs the side effect the transition
announces (renting a pod, terminating it, ...), so after a crash the database always says at least
as much as the world did. It is idempotent: asking for the state the job is already in changes
nothing, and a job that has already finished stays finished (the caller learns it did not move).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage import jobs
from storage.db import unit_of_work
from storage.models import LIVE_STATES, TERMINAL_STATES, Job, JobEvent, JobState
from storage.types import utcnow

__all__ = [
    "FORWARD",
    "TRANSITIONS",
    "IllegalTransitionError",
    "TransitionResult",
    "can_transition",
    "is_live",
    "is_terminal",
    "next_state",
    "transition",
]

# The happy path, in order. Each live state may move one step forward.
FORWARD: tuple[JobState, ...] = (
    JobState.PENDING,
    JobState.PROVISIONING,
    JobState.UPLOADING,
    JobState.TRAINING,
    JobState.COLLECTING,
    JobState.SUCCEEDED,
)

_STOPS = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.BUDGET_STOPPED})


def _build_table() -> Mapping[JobState, frozenset[JobState]]:
    table: dict[JobState, frozenset[JobState]] = {}
    for index, state in enumerate(FORWARD):
        if state in TERMINAL_STATES:
            continue
        table[state] = frozenset({FORWARD[index + 1]}) | _STOPS
    for state in TERMINAL_STATES:
        table[state] = frozenset()
    return table


# state -> the states it may move to (a state never "moves" to itself: that is a no-op, not a move).
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = _build_table()


def can_transition(old: JobState | str, new: JobState | str) -> bool:
    """True when ``old → new`` is an edge of the table (same-state is not an edge)."""
    return JobState(new) in TRANSITIONS[JobState(old)]


def next_state(state: JobState | str) -> JobState | None:
    """The happy-path successor of a live state; ``None`` for terminal states."""
    state = JobState(state)
    if state in TERMINAL_STATES:
        return None
    return FORWARD[FORWARD.index(state) + 1]


def is_terminal(state: JobState | str) -> bool:
    return JobState(state) in TERMINAL_STATES


def is_live(state: JobState | str) -> bool:
    return JobState(state) in LIVE_STATES


class IllegalTransitionError(RuntimeError):
    """A programming error: a transition the table does not allow (e.g. training → provisioning)."""


@dataclass
class TransitionResult:
    """What :func:`transition` did. ``job`` is the committed, detached row as it now stands."""

    job: Job
    old: JobState
    new: JobState
    changed: bool
    event: JobEvent | None = None
    payload: dict[str, Any] = field(default_factory=dict)


async def transition(
    sessions: async_sessionmaker[AsyncSession],
    job_id: int,
    new: JobState,
    *,
    payload: Mapping[str, Any] | None = None,
    update: Callable[[Job], None] | None = None,
    now: datetime | None = None,
) -> TransitionResult:
    """Move job ``job_id`` to ``new`` and commit the row and its ``JobEvent`` together.

    ``update`` may change other columns of the job in the same transaction (e.g. ``error``). No-ops,
    returned with ``changed=False`` and without touching the row: the job is already in ``new``, or
    it is already in a terminal state (a late cancel after success, a second budget stop). Raises
    :class:`IllegalTransitionError` for an edge the table does not have, and ``LookupError`` when
    the job does not exist.
    """
    at = now or utcnow()
    data = dict(payload or {})
    async with unit_of_work(sessions) as session:
        # FOR UPDATE serialises concurrent movers on PostgreSQL; SQLite serialises writers anyway.
        job = await jobs.job(session, job_id, for_update=True)
        if job is None:
            raise LookupError(f"job {job_id} does not exist")
        old = JobState(job.state)
        if old == new or old in TERMINAL_STATES:
            return TransitionResult(job=job, old=old, new=old, changed=False, payload=data)
        if not can_transition(old, new):
            raise IllegalTransitionError(f"job {job_id}: {old.value} → {new.value} is not allowed")
        job.state = new.value
        if update is not None:
            update(job)
        if new in TERMINAL_STATES and job.finished_at is None:
            job.finished_at = at
        event = jobs.add_event(
            session, job.id, "state", data, at=at, from_state=old.value, to_state=new.value
        )
    return TransitionResult(job=job, old=old, new=new, changed=True, event=event, payload=data)


async def record_event(
    sessions: async_sessionmaker[AsyncSession],
    job_id: int,
    kind: str,
    payload: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """Commit a non-transition event (``pod_created``, ``no_capacity``, ...) on the job's timeline."""
    async with unit_of_work(sessions) as session:
        jobs.add_event(session, job_id, kind, payload, at=now or utcnow())
