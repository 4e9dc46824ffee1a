"""Review by reactions (design §2 step 7): 👍/👎 on grid rows, ✅ on the summary, promote by a trainer.

- 👍/👎 on a checkpoint's row message (``Checkpoint.row_message_id``) are that checkpoint's votes. Only
  reviewers' reactions count (the cog says whether the user is one); removing the reaction removes the
  vote. Every vote is a ``Vote`` row, unique per (message, user, emoji), so replayed gateway events are
  harmless (idempotent).
- ✅ on the summary message (``Job.summary_message_id``) from ``approvals_required`` distinct reviewers
  approves the job's best checkpoint (ranking by face similarity, votes breaking ties). The approval is
  made exactly once, by a conditional update, so two ✅ arriving together cannot approve twice; the
  reaction that crossed the threshold gets ``approved_step`` back and its caller starts the delivery.
  Removing a ✅ later does not withdraw an approval already delivered.
- ``promote(job, step)`` approves another checkpoint (trainer or admin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import NotFoundError
from bot.review.jobs import existing_job
from bot.review.ranking import Standing, best, rank
from bot.roles import Member, Role, RoleNames, require_role
from storage import jobs as job_store
from storage import outbox as outbox_store
from storage import review as store
from storage.db import unit_of_work
from storage.models import Checkpoint, Job
from storage.types import utcnow
from storage.views import JobView

CHART_MESSAGE_EVENT = "chart_message"

UP = "👍"
DOWN = "👎"
APPROVE = "✅"
VOTE_EMOJIS = frozenset({UP, DOWN})

# Discord sends some emoji with a variation selector (U+FE0F); a vote is the same vote either way.
_VARIATION_SELECTOR = "\ufe0f"


def normalise_emoji(emoji: str) -> str:
    """The emoji as stored: without variation selectors or skin-tone modifiers (a 👍🏽 is a 👍)."""
    return "".join(ch for ch in emoji if ch != _VARIATION_SELECTOR and not 0x1F3FB <= ord(ch) <= 0x1F3FF)


class Outcome(StrEnum):
    COUNTED = "counted"  # a vote or approval row was added
    REMOVED = "removed"  # a row was removed
    UNCHANGED = "unchanged"  # already recorded / nothing to remove
    NOT_REVIEWER = "not_reviewer"
    IGNORED = "ignored"  # not a review message, or an emoji that means nothing there


@dataclass(frozen=True, slots=True)
class ReactionResult:
    """What a reaction did. ``approved_step`` is set only on the reaction that approved a checkpoint."""

    outcome: Outcome
    job_id: int | None = None
    checkpoint_id: int | None = None
    step: int | None = None
    approvals: int = 0
    approvals_required: int = 0
    approved_step: int | None = None
    approvers: tuple[int, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Approval:
    job_id: int
    checkpoint_id: int
    step: int
    approved_by: tuple[int, ...]
    newly_approved: bool


class VoteService:
    """Votes, approvals and promotion, persisted as ``Vote`` rows and ``Checkpoint.approved``."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, default_approvals_required: int = 1
    ) -> None:
        self._sessions = sessions
        self._default_required = max(1, default_approvals_required)

    # --- message bookkeeping (the cog calls these after posting) ----------------------------------------

    async def attach_row_message(self, job_id: int, step: int, message_id: int) -> None:
        """Remember which message shows checkpoint ``step``'s grid row (reactions on it are its votes)."""
        async with unit_of_work(self._sessions) as session:
            checkpoint = await self._checkpoint(session, job_id, step)
            checkpoint.row_message_id = message_id

    async def attach_summary_message(self, job_id: int, message_id: int) -> None:
        """Remember the summary message (✅ on it approves the best checkpoint)."""
        async with unit_of_work(self._sessions) as session:
            job = await existing_job(session, job_id)
            job.summary_message_id = message_id

    async def attach_chart_message(self, job_id: int, *, channel_id: int, message_id: int) -> None:
        """Remember the job's chart message, so a restarted bot edits it instead of posting another."""
        async with unit_of_work(self._sessions) as session:
            job_store.add_event(
                session,
                job_id,
                CHART_MESSAGE_EVENT,
                {"channel_id": channel_id, "message_id": message_id},
                at=utcnow(),
            )

    async def chart_message(self, job_id: int) -> tuple[int, int] | None:
        """``(channel id, message id)`` of the job's newest chart message, if one was posted."""
        async with unit_of_work(self._sessions) as session:
            event = await store.latest_job_event(session, job_id, CHART_MESSAGE_EVENT)
        if event is None:
            return None
        return int(event.payload["channel_id"]), int(event.payload["message_id"])

    # --- reactions ---------------------------------------------------------------------------------------

    async def reaction_added(
        self, message_id: int, user_id: int, emoji: str, *, is_reviewer: bool
    ) -> ReactionResult:
        """Count a reaction if it is a reviewer's 👍/👎 on a row or ✅ on a summary; idempotent."""
        emoji = normalise_emoji(emoji)
        async with unit_of_work(self._sessions) as session:
            target = await self._target(session, message_id, emoji)
            if target is None:
                return ReactionResult(Outcome.IGNORED)
            job, checkpoint = target
            base = {
                "job_id": job.id,
                "checkpoint_id": checkpoint.id if checkpoint else None,
                "step": checkpoint.step if checkpoint else None,
            }
            if not is_reviewer:
                return ReactionResult(Outcome.NOT_REVIEWER, **base)
            added = await self._insert_vote(session, message_id, user_id, emoji, job.id, checkpoint)
        outcome = Outcome.COUNTED if added else Outcome.UNCHANGED
        if emoji != APPROVE:
            return ReactionResult(outcome, **base)
        return await self._maybe_approve(job.id, job.guild_id, message_id, outcome)

    async def reaction_removed(self, message_id: int, user_id: int, emoji: str) -> ReactionResult:
        """Remove the vote that reaction made (whoever the user is now: no vote outlives its reaction)."""
        emoji = normalise_emoji(emoji)
        async with unit_of_work(self._sessions) as session:
            rows = await store.delete_vote(session, message_id, user_id, emoji)
        if not rows:
            return ReactionResult(Outcome.UNCHANGED)
        job_id, checkpoint_id = rows[0]
        return ReactionResult(Outcome.REMOVED, job_id=job_id, checkpoint_id=checkpoint_id)

    async def _target(
        self, session: AsyncSession, message_id: int, emoji: str
    ) -> tuple[Job, Checkpoint | None] | None:
        if emoji in VOTE_EMOJIS:
            checkpoint = await store.checkpoint_by_row_message(session, message_id)
            if checkpoint is None:
                return None
            job = await job_store.job(session, checkpoint.job_id)
            return (job, checkpoint) if job is not None else None
        if emoji == APPROVE:
            job = await store.job_by_summary_message(session, message_id)
            return (job, None) if job is not None else None
        return None

    async def _insert_vote(
        self,
        session: AsyncSession,
        message_id: int,
        user_id: int,
        emoji: str,
        job_id: int,
        checkpoint: Checkpoint | None,
    ) -> bool:
        if await store.vote_exists(session, message_id, user_id, emoji):
            return False
        try:
            # A savepoint: a concurrent duplicate (unique constraint) leaves the outer transaction usable.
            async with session.begin_nested():
                store.add_vote(
                    session,
                    message_id=message_id,
                    user_id=user_id,
                    emoji=emoji,
                    job_id=job_id,
                    checkpoint_id=checkpoint.id if checkpoint else None,
                )
        except IntegrityError:
            return False
        return True

    async def _maybe_approve(
        self, job_id: int, guild_id: int, message_id: int, outcome: Outcome
    ) -> ReactionResult:
        required = await self.approvals_required(guild_id)
        async with unit_of_work(self._sessions) as session:
            approvers = await store.voters(session, message_id, APPROVE)
            already = await store.approved_checkpoint_count(session, job_id)
            common = {
                "job_id": job_id,
                "approvals": len(approvers),
                "approvals_required": required,
                "approvers": approvers,
            }
            if already or len(approvers) < required:
                return ReactionResult(outcome, **common)
            top = best(await self._standings(session, job_id))
            if top is None or top.checkpoint_id is None:
                return ReactionResult(outcome, **common)
            won = await self._approve(session, top.checkpoint_id, list(approvers))
        if not won:
            return ReactionResult(outcome, **common)
        return ReactionResult(
            outcome, checkpoint_id=top.checkpoint_id, step=top.step, approved_step=top.step, **common
        )

    async def _approve(self, session: AsyncSession, checkpoint_id: int, approvers: list[int]) -> bool:
        # Conditional: of two racing approvers only one wins, so delivery starts once.
        return await store.approve_checkpoint(session, checkpoint_id, approvers, at=utcnow())

    # --- promotion -----------------------------------------------------------------------------------------

    async def promote(self, job_id: int, step: int, *, member: Member, roles: RoleNames) -> Approval:
        """Approve checkpoint ``step`` of a job (trainer or admin). Re-approving changes nothing."""
        require_role(member, Role.TRAINER, roles)
        async with unit_of_work(self._sessions) as session:
            checkpoint = await self._checkpoint(session, job_id, step)
            if checkpoint.approved:
                return Approval(
                    job_id, checkpoint.id, step, tuple(checkpoint.approved_by), newly_approved=False
                )
            won = await self._approve(session, checkpoint.id, [member.user_id])
        return Approval(job_id, checkpoint.id, step, (member.user_id,), newly_approved=won)

    # --- reading -----------------------------------------------------------------------------------------

    async def approvals_required(self, guild_id: int) -> int:
        """The guild's setting, else the default from the environment."""
        async with self._sessions() as session:
            value = await store.approvals_required(session, guild_id)
        return max(1, value) if value else self._default_required

    async def standings(self, job_id: int) -> list[Standing]:
        """Every checkpoint of the job with its scores and reviewers' 👍/👎 counts, by step."""
        async with self._sessions() as session:
            return await self._standings(session, job_id)

    async def ranking(self, job_id: int) -> list[Standing]:
        """Checkpoints with a face, best first."""
        return rank(await self.standings(job_id))

    async def best(self, job_id: int) -> Standing | None:
        return best(await self.standings(job_id))

    async def _standings(self, session: AsyncSession, job_id: int) -> list[Standing]:
        counts = await store.vote_counts(session, job_id, VOTE_EMOJIS)
        checkpoints = await store.checkpoints_of(session, job_id)
        # The review records whether a checkpoint's samples mostly copy training photos (latest wins).
        memorising: dict[int, bool] = {}
        for event in await job_store.events(session, job_id, "checkpoint_scored"):
            payload = event.payload
            if "step" in payload:
                memorising[int(payload["step"])] = bool(payload.get("memorising"))
        return [
            Standing(
                step=c.step,
                score_mean=c.score_mean,
                score_max=c.score_max,
                face_share=c.face_share,
                up=counts.get((c.id, UP), 0),
                down=counts.get((c.id, DOWN), 0),
                checkpoint_id=c.id,
                memorising=memorising.get(c.step, False),
            )
            for c in checkpoints
        ]

    # --- what to read again after the bot was away (reactions are not replayed to a new session) -------

    async def job(self, job_id: int) -> JobView:
        async with self._sessions() as session:
            job = await existing_job(session, job_id)
            return JobView.of(job)

    async def _in_review(self, session: AsyncSession, within: timedelta) -> list[int]:
        """Jobs still in review: live, or succeeded recently with no checkpoint approved yet."""
        return await store.jobs_in_review(session, finished_since=utcnow() - within)

    async def open_review_messages(
        self, *, within: timedelta = timedelta(days=14)
    ) -> list[tuple[int, int, int, frozenset[str]]]:
        """``(job id, channel id, message id, emojis that count there)`` of the grid rows and summaries of
        jobs still in review."""
        async with self._sessions() as session:
            job_ids = await self._in_review(session, within)
            if not job_ids:
                return []
            owed = await outbox_store.posted_of_jobs(session, job_ids)
        found: list[tuple[int, int, int, frozenset[str]]] = []
        for row in owed:
            assert row.message_id is not None and row.channel_id is not None
            if row.key.startswith("row:"):
                found.append((row.job_id, row.channel_id, row.message_id, VOTE_EMOJIS))
            elif row.key == "summary":
                found.append((row.job_id, row.channel_id, row.message_id, frozenset({APPROVE})))
        return found

    async def recorded(self, message_id: int) -> set[tuple[int, str]]:
        """``(user id, emoji)`` of the votes recorded on a message."""
        async with self._sessions() as session:
            return await store.votes_on_message(session, message_id)

    async def approved_undelivered(self) -> list[tuple[int, int, tuple[int, ...], int]]:
        """``(job id, step, approvers, channel id)`` of approved checkpoints whose delivery was never
        announced (the bot died between the approval and the delivery)."""
        async with self._sessions() as session:
            rows = await store.approved_checkpoints_with_channel(session)
            done = await outbox_store.done_keys_like(session, "delivery:%")
        return [
            (c.job_id, c.step, tuple(int(u) for u in c.approved_by or ()), int(channel_id))
            for c, channel_id in rows
            if channel_id is not None and (c.job_id, f"delivery:{c.step}") not in done
        ]

    async def _checkpoint(self, session: AsyncSession, job_id: int, step: int) -> Checkpoint:
        checkpoint = await job_store.checkpoint_at(session, job_id, step)
        if checkpoint is None:
            raise NotFoundError(f"Job #{job_id} has no checkpoint at step {step}.")
        return checkpoint
