"""Review by reactions: reviewer votes on rows, ✅ approvals on the summary, promotion."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.errors import NotFoundError, PermissionDeniedError
from bot.review.votes import APPROVE, DOWN, UP, Outcome, VoteService
from bot.roles import Member, RoleNames
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Checkpoint, GuildSettings, Vote

from ._helpers import SeededJob, seed_job

ROLES = RoleNames("trainer", "reviewer", "admin")
ROW = {500: 9500, 1000: 91000, 1500: 91500}
SUMMARY = 99999


async def _job(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, scores: dict[int, float | None]
) -> SeededJob:
    seeded = await seed_job(sessions, BlobStore(settings.blob_dir), [(step, []) for step in scores])
    async with unit_of_work(sessions) as session:
        for step, score in scores.items():
            checkpoint = await session.get(Checkpoint, seeded.checkpoint_ids[step])
            assert checkpoint is not None
            checkpoint.score_mean, checkpoint.score_max = score, score
            checkpoint.face_share = 1.0 if score is not None else 0.0
    service = VoteService(sessions)
    for step in scores:
        await service.attach_row_message(seeded.job_id, step, ROW[step])
    await service.attach_summary_message(seeded.job_id, SUMMARY)
    return seeded


async def _votes(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Vote)) or 0)


async def test_reviewer_votes_count_for_the_row_checkpoint(sessions, settings) -> None:
    seeded = await _job(sessions, settings, {500: 0.6, 1000: 0.7})
    service = VoteService(sessions)
    result = await service.reaction_added(ROW[1000], 11, UP, is_reviewer=True)
    assert result.outcome is Outcome.COUNTED and result.step == 1000
    await service.reaction_added(ROW[1000], 12, UP, is_reviewer=True)
    await service.reaction_added(ROW[1000], 13, DOWN, is_reviewer=True)
    await service.reaction_added(ROW[500], 11, DOWN, is_reviewer=True)
    standings = {s.step: s for s in await service.standings(seeded.job_id)}
    assert (standings[1000].up, standings[1000].down, standings[1000].net_votes) == (2, 1, 1)
    assert standings[500].net_votes == -1


async def test_non_reviewer_votes_do_not_count(sessions, settings) -> None:
    seeded = await _job(sessions, settings, {500: 0.6})
    service = VoteService(sessions)
    result = await service.reaction_added(ROW[500], 77, UP, is_reviewer=False)
    assert result.outcome is Outcome.NOT_REVIEWER
    assert await _votes(sessions) == 0
    assert (await service.standings(seeded.job_id))[0].up == 0


async def test_votes_are_idempotent_and_unreact_removes(sessions, settings) -> None:
    seeded = await _job(sessions, settings, {500: 0.6})
    service = VoteService(sessions)
    assert (await service.reaction_added(ROW[500], 11, UP, is_reviewer=True)).outcome is Outcome.COUNTED
    # a replayed gateway event, and the same emoji with a variation selector / skin tone
    assert (await service.reaction_added(ROW[500], 11, UP, is_reviewer=True)).outcome is Outcome.UNCHANGED
    assert (await service.reaction_added(ROW[500], 11, "👍🏽", is_reviewer=True)).outcome is Outcome.UNCHANGED
    assert await _votes(sessions) == 1
    removed = await service.reaction_removed(ROW[500], 11, UP)
    assert removed.outcome is Outcome.REMOVED and removed.job_id == seeded.job_id
    assert await _votes(sessions) == 0
    assert (await service.standings(seeded.job_id))[0].up == 0
    assert (await service.reaction_removed(ROW[500], 11, UP)).outcome is Outcome.UNCHANGED


async def test_other_messages_and_emoji_are_ignored(sessions, settings) -> None:
    await _job(sessions, settings, {500: 0.6})
    service = VoteService(sessions)
    assert (await service.reaction_added(123456, 11, UP, is_reviewer=True)).outcome is Outcome.IGNORED
    assert (await service.reaction_added(ROW[500], 11, "🎉", is_reviewer=True)).outcome is Outcome.IGNORED
    assert (await service.reaction_added(ROW[500], 11, APPROVE, is_reviewer=True)).outcome is Outcome.IGNORED
    assert (await service.reaction_added(SUMMARY, 11, UP, is_reviewer=True)).outcome is Outcome.IGNORED
    assert await _votes(sessions) == 0


async def test_votes_break_a_tie_for_the_best_checkpoint(sessions, settings) -> None:
    seeded = await _job(sessions, settings, {500: 0.7001, 1000: 0.7002, 1500: 0.5})
    service = VoteService(sessions)
    top = await service.best(seeded.job_id)
    assert top is not None and top.step == 1000  # tied at 0.700 as shown; no votes yet: the higher max
    await service.reaction_added(ROW[500], 11, UP, is_reviewer=True)
    top = await service.best(seeded.job_id)
    assert top is not None and top.step == 500
    await service.reaction_added(ROW[1500], 11, UP, is_reviewer=True)
    await service.reaction_added(ROW[1500], 12, UP, is_reviewer=True)
    top = await service.best(seeded.job_id)
    assert top is not None and top.step == 500  # votes never beat a clearly better score


async def test_approval_needs_the_configured_number_of_reviewers(sessions, settings) -> None:
    seeded = await _job(sessions, settings, {500: 0.6, 1000: 0.8})
    async with unit_of_work(sessions) as session:
        session.add(GuildSettings(guild_id=seeded.guild_id, approvals_required=2))
    service = VoteService(sessions, default_approvals_required=1)
    first = await service.reaction_added(SUMMARY, 11, APPROVE, is_reviewer=True)
    assert first.outcome is Outcome.COUNTED and (first.approvals, first.approvals_required) == (1, 2)
    assert first.approved_step is None
    outsider = await service.reaction_added(SUMMARY, 66, APPROVE, is_reviewer=False)
    assert outsider.outcome is Outcome.NOT_REVIEWER and outsider.approved_step is None
    again = await service.reaction_added(SUMMARY, 11, APPROVE, is_reviewer=True)  # same reviewer twice
    assert again.approved_step is None
    second = await service.reaction_added(SUMMARY, 12, APPROVE, is_reviewer=True)
    assert second.approved_step == 1000 and second.approvers == (11, 12)
    third = await service.reaction_added(SUMMARY, 13, APPROVE, is_reviewer=True)
    assert third.approved_step is None  # approved once, delivery starts once
    async with sessions() as session:
        approved = (await session.scalars(select(Checkpoint).where(Checkpoint.approved))).all()
    assert [(c.step, c.approved_by) for c in approved] == [(1000, [11, 12])]
    assert approved[0].approved_at is not None


async def test_default_approvals_from_settings(sessions, settings) -> None:
    seeded = await _job(sessions, settings, {500: 0.6})
    service = VoteService(sessions, default_approvals_required=1)
    assert await service.approvals_required(seeded.guild_id) == 1
    result = await service.reaction_added(SUMMARY, 11, "✅\ufe0f", is_reviewer=True)
    assert result.approved_step == 500


async def test_no_approval_when_no_checkpoint_showed_a_face(sessions, settings) -> None:
    await _job(sessions, settings, {500: None})
    service = VoteService(sessions)
    result = await service.reaction_added(SUMMARY, 11, APPROVE, is_reviewer=True)
    assert result.outcome is Outcome.COUNTED and result.approved_step is None


async def test_promote_approves_another_checkpoint_for_trainers_only(sessions, settings) -> None:
    seeded = await _job(sessions, settings, {500: 0.6, 1000: 0.8})
    service = VoteService(sessions)
    with pytest.raises(PermissionDeniedError):
        await service.promote(seeded.job_id, 500, member=Member.of(11, ["reviewer"]), roles=ROLES)
    approval = await service.promote(seeded.job_id, 500, member=Member.of(21, ["Trainer"]), roles=ROLES)
    assert approval.newly_approved and approval.step == 500 and approval.approved_by == (21,)
    again = await service.promote(seeded.job_id, 500, member=Member.of(22, ["admin"]), roles=ROLES)
    assert not again.newly_approved and again.approved_by == (21,)
    with pytest.raises(NotFoundError):
        await service.promote(seeded.job_id, 777, member=Member.of(21, ["trainer"]), roles=ROLES)


async def test_the_chart_message_is_remembered_across_processes(sessions, settings) -> None:
    seeded = await _job(sessions, settings, {500: 0.6})
    assert await VoteService(sessions).chart_message(seeded.job_id) is None
    await VoteService(sessions).attach_chart_message(seeded.job_id, channel_id=7, message_id=70)
    await VoteService(sessions).attach_chart_message(seeded.job_id, channel_id=7, message_id=71)
    # A new service (a restarted bot) finds the newest chart message.
    assert await VoteService(sessions).chart_message(seeded.job_id) == (7, 71)
