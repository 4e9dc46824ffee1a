"""The queries only the review (design §2 steps 6–8) makes: the messages reviewers react on, votes and
approvals, the chart message, the jobs still in review. A job's plain reads and writes (the job, its
checkpoints, samples and events) are ``storage/jobs.py``'s, shared with the training domain.

Every function takes the caller's session: the service in ``bot/review/`` owns the unit of work (and
any savepoint), so a read and the write that depends on it stay in one transaction as before.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    LIVE_STATES,
    Checkpoint,
    GuildSettings,
    Job,
    JobEvent,
    JobState,
    Sample,
    Vote,
)

# --- jobs and their events ------------------------------------------------------------------------------


async def job_by_summary_message(session: AsyncSession, message_id: int) -> Job | None:
    return await session.scalar(select(Job).where(Job.summary_message_id == message_id))


async def latest_job_event(session: AsyncSession, job_id: int, kind: str) -> JobEvent | None:
    return await session.scalar(
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.kind == kind)
        .order_by(JobEvent.id.desc())
        .limit(1)
    )


async def jobs_in_review(session: AsyncSession, *, finished_since: datetime) -> list[int]:
    """Jobs still in review: live, or succeeded since ``finished_since`` with no checkpoint approved."""
    approved = select(Checkpoint.job_id).where(Checkpoint.approved)
    rows = await session.scalars(
        select(Job.id).where(
            or_(
                Job.state.in_([s.value for s in LIVE_STATES]),
                (Job.state == JobState.SUCCEEDED.value)
                & (Job.finished_at >= finished_since)
                & Job.id.not_in(approved),
            )
        )
    )
    return list(rows.all())


# --- checkpoints and samples -----------------------------------------------------------------------------


async def checkpoint_by_row_message(session: AsyncSession, message_id: int) -> Checkpoint | None:
    return await session.scalar(select(Checkpoint).where(Checkpoint.row_message_id == message_id))


async def checkpoints_of(
    session: AsyncSession, job_id: int, *, step: int | None = None
) -> Sequence[Checkpoint]:
    """The job's checkpoints by step (only the one at ``step`` when given)."""
    query = select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
    if step is not None:
        query = query.where(Checkpoint.step == step)
    return (await session.scalars(query)).all()


async def checkpoint_ids_of(session: AsyncSession, job_id: int) -> Sequence[int]:
    return (await session.scalars(select(Checkpoint.id).where(Checkpoint.job_id == job_id))).all()


async def approved_checkpoint_count(session: AsyncSession, job_id: int) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Checkpoint)
            .where(Checkpoint.job_id == job_id, Checkpoint.approved)
        )
        or 0
    )


async def approve_checkpoint(
    session: AsyncSession, checkpoint_id: int, approvers: list[int], *, at: datetime
) -> bool:
    """Approve a checkpoint not approved yet. Conditional: of two racing approvers only one sees
    rowcount 1, so the delivery starts once. True for the one that approved it."""
    result = await session.execute(
        update(Checkpoint)
        .where(Checkpoint.id == checkpoint_id, Checkpoint.approved.is_(False))
        .values(approved=True, approved_at=at, approved_by=approvers)
    )
    return (getattr(result, "rowcount", 0) or 0) == 1


async def approved_checkpoints_with_channel(session: AsyncSession) -> Sequence[tuple[Checkpoint, int | None]]:
    """Every approved checkpoint with its job's channel."""
    rows = await session.execute(
        select(Checkpoint, Job.channel_id).join(Job, Job.id == Checkpoint.job_id).where(Checkpoint.approved)
    )
    return [(checkpoint, channel_id) for checkpoint, channel_id in rows.tuples().all()]


async def samples_by_id(session: AsyncSession, sample_ids: Collection[int]) -> dict[int, Sample]:
    rows = (await session.scalars(select(Sample).where(Sample.id.in_(list(sample_ids))))).all()
    return {s.id: s for s in rows}


async def sample_prompts(session: AsyncSession, job_id: int) -> Sequence[tuple[int, str]]:
    """``(prompt index, prompt)`` of every sample of the job, by prompt index."""
    rows = await session.execute(
        select(Sample.prompt_index, Sample.prompt)
        .where(Sample.job_id == job_id)
        .order_by(Sample.prompt_index)
    )
    return [(int(index), prompt) for index, prompt in rows.tuples().all()]


# --- votes ------------------------------------------------------------------------------------------------


async def vote_exists(session: AsyncSession, message_id: int, user_id: int, emoji: str) -> bool:
    return (
        await session.scalar(
            select(Vote.id).where(Vote.message_id == message_id, Vote.user_id == user_id, Vote.emoji == emoji)
        )
    ) is not None


def add_vote(
    session: AsyncSession,
    *,
    message_id: int,
    user_id: int,
    emoji: str,
    job_id: int,
    checkpoint_id: int | None,
) -> None:
    """Stage a vote (unique per message, user and emoji: a duplicate fails when it is flushed)."""
    session.add(
        Vote(message_id=message_id, user_id=user_id, emoji=emoji, job_id=job_id, checkpoint_id=checkpoint_id)
    )


async def delete_vote(
    session: AsyncSession, message_id: int, user_id: int, emoji: str
) -> Sequence[tuple[int, int | None]]:
    """Remove a vote; ``(job id, checkpoint id)`` of what was removed (empty when there was none)."""
    result = await session.execute(
        delete(Vote)
        .where(Vote.message_id == message_id, Vote.user_id == user_id, Vote.emoji == emoji)
        .returning(Vote.job_id, Vote.checkpoint_id)
    )
    return [(int(job_id), checkpoint_id) for job_id, checkpoint_id in result.tuples().all()]


async def voters(session: AsyncSession, message_id: int, emoji: str) -> tuple[int, ...]:
    """Who reacted ``emoji`` on a message, in the order the votes were recorded."""
    return tuple(
        (
            await session.scalars(
                select(Vote.user_id)
                .where(Vote.message_id == message_id, Vote.emoji == emoji)
                .order_by(Vote.id)
            )
        ).all()
    )


async def votes_on_message(session: AsyncSession, message_id: int) -> set[tuple[int, str]]:
    """``(user id, emoji)`` of the votes recorded on a message."""
    rows = await session.execute(select(Vote.user_id, Vote.emoji).where(Vote.message_id == message_id))
    return {(int(user), str(emoji)) for user, emoji in rows.tuples().all()}


async def vote_counts(
    session: AsyncSession, job_id: int, emojis: Collection[str]
) -> dict[tuple[int, str], int]:
    """``(checkpoint id, emoji) → votes`` of the job's checkpoints, for the given emojis."""
    rows = await session.execute(
        select(Vote.checkpoint_id, Vote.emoji, func.count())
        .where(Vote.job_id == job_id, Vote.checkpoint_id.is_not(None), Vote.emoji.in_(list(emojis)))
        .group_by(Vote.checkpoint_id, Vote.emoji)
    )
    return {
        (int(checkpoint_id), str(emoji)): int(count)
        for checkpoint_id, emoji, count in rows.tuples().all()
        if checkpoint_id is not None  # excluded by the query; for the type checker
    }


async def approvals_required(session: AsyncSession, guild_id: int) -> int | None:
    """The guild's own setting (None when it has not chosen one)."""
    return await session.scalar(
        select(GuildSettings.approvals_required).where(GuildSettings.guild_id == guild_id)
    )
