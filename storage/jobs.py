"""The queries of training jobs: the job row, its timeline of events, its checkpoints and samples, and
what a run plan reads of its dataset (design §4 ``jobs``, ``job_events``, ``checkpoints``, ``samples``;
dataset snapshots are in ``storage/datasets.py``).

Every function takes the caller's session: the caller (``bot/training``) owns the unit of work, so a
read and the writes it decides stay in one transaction exactly as before. ``for_update`` takes the
row lock (``SELECT … FOR UPDATE``) on PostgreSQL; SQLite serialises writers anyway.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    LIVE_STATES,
    TERMINAL_STATES,
    Caption,
    Checkpoint,
    FaceAnalysis,
    Image,
    Job,
    JobEvent,
    JobState,
    OwedMessage,
    Sample,
)

_LIVE_VALUES = [state.value for state in LIVE_STATES]

# -- jobs ---------------------------------------------------------------------------------------------


async def job(session: AsyncSession, job_id: int, *, for_update: bool = False) -> Job | None:
    """The job row (locked until the transaction ends when ``for_update``)."""
    return await session.get(Job, job_id, with_for_update=for_update or None)


async def add_job(session: AsyncSession, row: Job) -> Job:
    """Stage a new job and flush it, so it has its id (the pod name is made from it)."""
    session.add(row)
    await session.flush()
    return row


async def live_jobs(session: AsyncSession) -> Sequence[Job]:
    """Every job not ended yet, oldest first."""
    return (await session.scalars(select(Job).where(Job.state.in_(_LIVE_VALUES)).order_by(Job.id))).all()


async def ended_jobs_with_pod_running(session: AsyncSession) -> Sequence[Job]:
    """Ended jobs whose pod was never marked terminated (a crash between the two)."""
    return (
        await session.scalars(
            select(Job).where(
                Job.state.not_in(_LIVE_VALUES),
                Job.pod_id.is_not(None),
                Job.pod_terminated_at.is_(None),
            )
        )
    ).all()


async def live_pod_owners(session: AsyncSession) -> Sequence[Row[tuple[int, str | None, str | None]]]:
    """``(id, pod_id, pod_name)`` of every live job: who owns which pod (or name) right now."""
    return (
        await session.execute(select(Job.id, Job.pod_id, Job.pod_name).where(Job.state.in_(_LIVE_VALUES)))
    ).all()


async def guilds_with_jobs(session: AsyncSession) -> list[int]:
    """The guilds that ever had a job, ascending."""
    return sorted(set((await session.scalars(select(Job.guild_id).distinct())).all()))


async def live_job_count(
    session: AsyncSession, guild_id: int, *, exclude: int | None = None, started_only: bool = False
) -> int:
    """How many of the guild's jobs are live (``started_only``: leaving out those still pending)."""
    states = [s.value for s in LIVE_STATES if not (started_only and s == JobState.PENDING)]
    query = select(func.count(Job.id)).where(Job.guild_id == guild_id, Job.state.in_(states))
    if exclude is not None:
        query = query.where(Job.id != exclude)
    return int(await session.scalar(query) or 0)


async def guild_jobs(session: AsyncSession, guild_id: int, *, live_only: bool, limit: int) -> Sequence[Job]:
    """The guild's jobs, newest first."""
    query = select(Job).where(Job.guild_id == guild_id).order_by(Job.id.desc()).limit(limit)
    if live_only:
        query = query.where(Job.state.in_(_LIVE_VALUES))
    return (await session.scalars(query)).all()


async def succeeded_jobs(session: AsyncSession, preset: str, *, limit: int) -> Sequence[Job]:
    """The newest succeeded jobs of ``preset`` that know their GPU type (speed history)."""
    return (
        await session.scalars(
            select(Job)
            .where(Job.preset == preset, Job.state == JobState.SUCCEEDED.value, Job.gpu_type.is_not(None))
            .order_by(Job.id.desc())
            .limit(limit)
        )
    ).all()


# -- events -------------------------------------------------------------------------------------------


def add_event(
    session: AsyncSession,
    job_id: int,
    kind: str,
    payload: Mapping[str, Any] | None,
    *,
    at: datetime,
    from_state: str | None = None,
    to_state: str | None = None,
) -> JobEvent:
    """Stage one event on the job's timeline (committed with the caller's unit of work)."""
    event = JobEvent(
        job_id=job_id, at=at, kind=kind, from_state=from_state, to_state=to_state, payload=dict(payload or {})
    )
    session.add(event)
    return event


async def events(session: AsyncSession, job_id: int, kind: str | None = None) -> Sequence[JobEvent]:
    """The job's events (of ``kind`` only, if given), in the order they were recorded."""
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if kind is not None:
        query = query.where(JobEvent.kind == kind)
    return (await session.scalars(query.order_by(JobEvent.id))).all()


async def has_event(session: AsyncSession, job_id: int, kind: str) -> bool:
    found = await session.scalar(
        select(JobEvent.id).where(JobEvent.job_id == job_id, JobEvent.kind == kind).limit(1)
    )
    return found is not None


async def event_at(session: AsyncSession, job_id: int, kind: str, *, last: bool = False) -> datetime | None:
    """When the job's first (``last``: latest) event of ``kind`` happened, if it did."""
    order = JobEvent.id.desc() if last else JobEvent.id
    return await session.scalar(
        select(JobEvent.at).where(JobEvent.job_id == job_id, JobEvent.kind == kind).order_by(order).limit(1)
    )


async def first_payload(session: AsyncSession, job_id: int, kind: str) -> dict[str, Any] | None:
    """The payload of the job's first event of ``kind``, if it has one."""
    return await session.scalar(
        select(JobEvent.payload)
        .where(JobEvent.job_id == job_id, JobEvent.kind == kind)
        .order_by(JobEvent.id)
        .limit(1)
    )


async def events_of_kind(session: AsyncSession, kind: str) -> Sequence[JobEvent]:
    """Every job's events of ``kind``, in the order they were recorded."""
    return (await session.scalars(select(JobEvent).where(JobEvent.kind == kind).order_by(JobEvent.id))).all()


async def endings_after_start(session: AsyncSession) -> Sequence[JobEvent]:
    """Transitions into a terminal state of jobs that had started (left ``pending``), oldest first."""
    return (
        await session.scalars(
            select(JobEvent)
            .where(
                JobEvent.kind == "state",
                JobEvent.to_state.in_([s.value for s in TERMINAL_STATES]),
                JobEvent.from_state != JobState.PENDING.value,
            )
            .order_by(JobEvent.id)
        )
    ).all()


async def state_events_of(session: AsyncSession, job_ids: Collection[int]) -> Sequence[JobEvent]:
    """The transitions of the given jobs."""
    return (
        await session.scalars(
            select(JobEvent).where(JobEvent.job_id.in_(list(job_ids)), JobEvent.kind == "state")
        )
    ).all()


# -- checkpoints and samples --------------------------------------------------------------------------


async def checkpoints(
    session: AsyncSession, job_id: int, *, collected_only: bool = False
) -> Sequence[Checkpoint]:
    """The job's checkpoints (``collected_only``: those in the blob store, by step)."""
    query = select(Checkpoint).where(Checkpoint.job_id == job_id)
    if collected_only:
        query = query.where(Checkpoint.collected.is_(True)).order_by(Checkpoint.step)
    return (await session.scalars(query)).all()


async def checkpoint(session: AsyncSession, checkpoint_id: int) -> Checkpoint | None:
    return await session.get(Checkpoint, checkpoint_id)


async def checkpoint_at(session: AsyncSession, job_id: int, step: int) -> Checkpoint | None:
    return await session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)
    )


async def samples(session: AsyncSession, job_id: int, *, step: int | None = None) -> Sequence[Sample]:
    """The job's samples (at ``step`` only, by prompt, if given)."""
    query = select(Sample).where(Sample.job_id == job_id)
    if step is not None:
        query = query.where(Sample.step == step).order_by(Sample.prompt_index)
    return (await session.scalars(query)).all()


def add_row(session: AsyncSession, row: Checkpoint | Sample) -> None:
    """Stage a new checkpoint or sample row."""
    session.add(row)


# -- the quote messages of jobs (the owed-message ledger's ``quote`` rows) ------------------------------


async def pending_quote_messages(session: AsyncSession, quote_key: str) -> list[tuple[int, int, int]]:
    """``(job id, channel id, message id)`` of the posted quotes of jobs still pending, by job."""
    rows = await session.execute(
        select(OwedMessage.job_id, OwedMessage.channel_id, OwedMessage.message_id)
        .join(Job, Job.id == OwedMessage.job_id)
        .where(
            Job.state == JobState.PENDING.value,
            OwedMessage.key == quote_key,
            OwedMessage.message_id.is_not(None),
            OwedMessage.channel_id.is_not(None),
        )
        .order_by(Job.id)
    )
    return [(int(j), int(c), int(m)) for j, c, m in rows.all()]


async def quotes_left_pending(
    session: AsyncSession, quote_key: str, since: datetime
) -> list[tuple[int, int, int, JobEvent]]:
    """``(job id, channel id, message id, the transition out of pending)`` of the posted quotes of jobs
    created since ``since`` that left ``pending``, by job."""
    rows = (
        await session.execute(
            select(OwedMessage.job_id, OwedMessage.channel_id, OwedMessage.message_id, JobEvent)
            .join(Job, Job.id == OwedMessage.job_id)
            .join(JobEvent, JobEvent.job_id == Job.id)
            .where(
                Job.created_at >= since,
                OwedMessage.key == quote_key,
                OwedMessage.message_id.is_not(None),
                OwedMessage.channel_id.is_not(None),
                JobEvent.kind == "state",
                JobEvent.from_state == JobState.PENDING.value,
            )
            .order_by(Job.id)
        )
    ).all()
    return [(int(j), int(c), int(m), event) for j, c, m, event in rows]


# -- what a run plan reads of its dataset ---------------------------------------------------------------


async def images_to_train(session: AsyncSession, dataset_id: int) -> Sequence[Image]:
    """The dataset's images that are not excluded, by position (the order the snapshot keeps)."""
    return (
        await session.scalars(
            select(Image)
            .where(Image.dataset_id == dataset_id, Image.excluded.is_(False))
            .order_by(Image.position)
        )
    ).all()


async def captions_of(session: AsyncSession, image_ids: Collection[int]) -> dict[int, str]:
    """``image id → caption text`` for those of the images that have a caption."""
    rows = await session.scalars(select(Caption).where(Caption.image_id.in_(list(image_ids))))
    return {caption.image_id: caption.text for caption in rows.all()}


async def face_analyses_of(session: AsyncSession, image_ids: Collection[int]) -> Sequence[FaceAnalysis]:
    """Every face analysis of the images (each may have several: one per engine and run)."""
    return (
        await session.scalars(select(FaceAnalysis).where(FaceAnalysis.image_id.in_(list(image_ids))))
    ).all()
