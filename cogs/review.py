"""Review in Discord (design §2 steps 6–8): grid rows, the chart, votes by reaction, the summary, delivery.

:class:`ReviewCog` subscribes a :class:`~bot.review.service.ReviewListener` to the training listeners and
is its publisher:

- at each checkpoint it posts the grid row (JPEG, every cell labelled with step, prompt and score) with
  its caption, adds 👍 👎 (reviewers' reactions on it are that checkpoint's votes), and renews the chart:
  **one chart message per job, edited in place** with the new PNG (its id is recorded, so a restarted
  bot edits the same message);
- when the review decides training has stopped improving it stops the job early (results kept) and
  says how much money that saved;
- when the job ends it posts the summary (best checkpoint, score, cost, time, full grid, chart; or the
  cause and last log lines of a failure, cancel or budget stop). Only the requester and the reviewer
  role can be pinged by it: ``allowed_mentions`` names exactly those, so text that users wrote (dataset
  names, prompts, log lines) can never mention anyone else.

Reactions: 👍/👎 on a row and ✅ on the summary go to :class:`~bot.review.votes.VoteService` (only
reviewers count; removing a reaction removes its vote). The ✅ that reaches the approvals required
approves the best checkpoint, which is then delivered (ComfyUI ``loras`` folder and/or Cloudinary) and
announced with its trigger word, recommended weight and sample prompts. ``/train samples`` and
``/train promote`` (in the train group) call :func:`post_samples` and :func:`promote_checkpoint`.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.errors import UserError
from bot.review.delivery import DEFAULT_WEIGHT, lora_file_name
from bot.review.notify import approval_text, clip, early_stop_text, inline, neutralise
from bot.review.service import CheckpointReview, FinalReview, ReviewListener
from bot.review.votes import APPROVE, DOWN, UP, Outcome, normalise_emoji
from bot.roles import Role, has_role
from bot.training.context import prompt_lines
from cogs._shared import guild_id_of, member_of, services_of
from storage.models import Job, JobState

if TYPE_CHECKING:
    from bot.app import LoraBot
    from bot.services import Services

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
REVIEW_EMOJIS = frozenset({UP, DOWN, APPROVE})


def _file(data: bytes, name: str) -> discord.File:
    return discord.File(io.BytesIO(data), filename=name)


def _image_name(stem: str, image_format: str) -> str:
    return f"{stem}.{'png' if image_format.upper() == 'PNG' else 'jpg'}"


def summary_mentions(user_ids: tuple[int, ...], role_ids: tuple[int, ...]) -> discord.AllowedMentions:
    """Exactly these users and roles may be pinged; never @everyone/@here, never anyone a text names."""
    return discord.AllowedMentions(
        everyone=False,
        users=[discord.Object(user_id) for user_id in user_ids],
        roles=[discord.Object(role_id) for role_id in role_ids],
        replied_user=False,
    )


def _prompt_text(line: str) -> str:
    # sd-scripts prompt lines carry options after " --" (negative, size, seed): show the prompt only.
    return line.split(" --", 1)[0].strip()


async def usage_text(services: Services, job_id: int, step: int) -> str:
    """Trigger word, recommended weight (as a ComfyUI/A1111 tag) and the sample prompts of a delivered
    checkpoint."""
    if services.training is None:
        return ""
    job = await services.training.service.get(job_id)
    datasets = await services.datasets.list(guild_id=job.guild_id)
    dataset = next((d for d in datasets if d.id == job.dataset_id), None)
    weight = float(job.params.get("recommended_weight", DEFAULT_WEIGHT))
    prompts = [
        _prompt_text(p) for p in prompt_lines(str((job.params.get("spec") or {}).get("prompts_txt", "")))
    ]
    lines: list[str] = []
    if dataset is not None:
        stem = lora_file_name(dataset.name, dataset.trigger_word, step).removesuffix(".safetensors")
        trigger = neutralise(dataset.trigger_word).replace("`", "ˋ")
        lines.append(
            f"Trigger word: `{trigger}` · recommended weight {weight:g} (e.g. `<lora:{stem}:{weight:g}>`)"
        )
    else:
        lines.append(f"Recommended weight {weight:g}")
    if prompts:
        lines.append("Sample prompts:")
        lines.extend(f"{n}. {inline(p, 160)}" for n, p in enumerate(prompts[:6], start=1))
    return "\n".join(lines)


async def delivery_message(
    services: Services, *, job_id: int, step: int, approvers: tuple[int, ...], promoted: bool
) -> str:
    """Deliver an approved checkpoint; the message says where it went and how to use it. Approvers are
    named, not pinged (the caller sends it with no allowed mentions)."""
    head = approval_text(job_id=job_id, step=step, approvers=approvers, promoted=promoted)
    try:
        result = await services.delivery.deliver(job_id, step)
    except UserError as exc:
        return clip(f"{head}\nDelivery failed: {neutralise(str(exc))}")
    usage = await usage_text(services, job_id, step)
    return clip("\n".join(part for part in (head, result.text(), usage) if part))


class ReviewCog(commands.Cog, name="Review"):
    """Posts reviews of training jobs and counts reactions on them."""

    def __init__(self, bot: LoraBot) -> None:
        self.bot = bot
        self._listener: ReviewListener | None = None
        self._charts: dict[int, tuple[int, int]] = {}  # job id → (channel id, chart message id)
        self._chart_locks: dict[int, asyncio.Lock] = {}

    @property
    def services(self) -> Services:
        return self.bot.services

    async def cog_load(self) -> None:
        training = self.services.training
        if training is None:
            return  # no RunPod: nothing will be trained, so nothing to review
        self._listener = ReviewListener(self.services.review, self)
        training.listeners.add(self._listener)

    async def cog_unload(self) -> None:
        training = self.services.training
        if self._listener is not None and training is not None:
            training.listeners.remove(self._listener)
        self._listener = None

    # -- where to post ------------------------------------------------------------------------------

    async def _channel(self, job: Job) -> discord.PartialMessageable | None:
        channel_id = job.channel_id
        if channel_id is None:
            channel_id = (await self.services.guilds.get(job.guild_id)).report_channel_id
        if channel_id is None:
            log.warning("job %s has no channel to post its review in", job.id)
            return None
        return self.bot.get_partial_messageable(channel_id, guild_id=job.guild_id)

    # -- the publisher (ReviewPublisher) ------------------------------------------------------------------

    def reviewer_role_id(self, guild_id: int) -> int | None:
        """The guild's reviewer role, found by its configured name."""
        guild = self.bot.get_guild(guild_id)
        if guild is None:
            return None
        wanted = self.services.roles.name_of(Role.REVIEWER).casefold()
        role = next((r for r in guild.roles if r.name.casefold() == wanted), None)
        return role.id if role is not None else None

    async def checkpoint_reviewed(self, job: Job, review: CheckpointReview) -> None:
        """Post the row (reviewers vote on it), renew the chart, and stop early if the review says so.

        A failed post never keeps a run going that should stop: the early stop does not depend on it."""
        channel = await self._channel(job)
        if channel is not None:
            try:
                await self._post_row(job, channel, review)
                await self._renew_chart(job, channel, review)
            except discord.HTTPException as exc:
                log.warning("could not post the review of job %s step %s: %s", job.id, review.step, exc)
        if review.early_stop.stop:
            await self._stop_early(job, channel, review)

    async def _post_row(
        self, job: Job, channel: discord.PartialMessageable, review: CheckpointReview
    ) -> None:
        name = _image_name(f"job{job.id}-step{review.step}", review.row.format)
        message = await channel.send(
            review.caption, file=_file(review.row.data, name), allowed_mentions=NO_MENTIONS
        )
        await self.services.votes.attach_row_message(job.id, review.step, message.id)
        for emoji in (UP, DOWN):
            try:
                await message.add_reaction(emoji)
            except discord.HTTPException as exc:
                log.warning("could not add %s to the row of job %s: %s", emoji, job.id, exc)

    async def _renew_chart(
        self, job: Job, channel: discord.PartialMessageable, review: CheckpointReview
    ) -> None:
        total = f"/{review.total_steps}" if review.total_steps else ""
        content = f"Job #{job.id}: face similarity and loss by step (as of step {review.step}{total})."
        name = f"job{job.id}-chart.png"
        async with self._chart_locks.setdefault(job.id, asyncio.Lock()):
            known = self._charts.get(job.id)
            if known is None:  # after a restart: the message recorded by the previous process
                known = await self.services.votes.chart_message(job.id)
            if known is not None and known[0] == channel.id:
                try:
                    await channel.get_partial_message(known[1]).edit(
                        content=content, attachments=[_file(review.chart_png, name)]
                    )
                    return
                except discord.HTTPException as exc:  # deleted meanwhile: post a new one
                    log.info("chart message of job %s not editable (%s): posting a new one", job.id, exc)
            message = await channel.send(
                content, file=_file(review.chart_png, name), allowed_mentions=NO_MENTIONS
            )
            self._charts[job.id] = (channel.id, message.id)
            await self.services.votes.attach_chart_message(
                job.id, channel_id=channel.id, message_id=message.id
            )

    async def _stop_early(
        self, job: Job, channel: discord.PartialMessageable | None, review: CheckpointReview
    ) -> None:
        training = self.services.training
        if training is None:
            return
        decision = review.early_stop
        payload = {
            "best_step": decision.best_step,
            "saved_usd": str(review.money_saved) if review.money_saved is not None else None,
        }
        try:
            _, stopped = await training.service.stop_early(job.id, decision.reason, payload=payload)
        except UserError as exc:
            log.warning("job %s: early stop refused: %s", job.id, exc)
            return
        if stopped and channel is not None:  # later checkpoints decide the same: say it once
            await channel.send(
                early_stop_text(job_id=job.id, reason=decision.reason, saved=review.money_saved),
                allowed_mentions=NO_MENTIONS,
            )

    async def job_reviewed(self, job: Job, review: FinalReview) -> None:
        """The summary: only the requester and the reviewer role may be pinged."""
        self._charts.pop(job.id, None)
        self._chart_locks.pop(job.id, None)
        if job.pod_id is None and JobState(job.state) == JobState.CANCELLED:
            return  # cancelled at the quote: nothing ran, and the quote message already says so
        channel = await self._channel(job)
        if channel is None:
            return
        files: list[discord.File] = []
        if review.grid is not None:
            files.append(_file(review.grid.data, _image_name(f"job{job.id}-grid", review.grid.format)))
        if review.chart_png is not None:
            files.append(_file(review.chart_png, f"job{job.id}-chart.png"))
        notice = review.notice
        message = await channel.send(
            notice.content,
            files=files,
            allowed_mentions=summary_mentions(notice.mention_user_ids, notice.mention_role_ids),
        )
        if JobState(job.state) == JobState.SUCCEEDED and review.best is not None:
            await self.services.votes.attach_summary_message(job.id, message.id)
            try:
                await message.add_reaction(APPROVE)
            except discord.HTTPException as exc:
                log.warning("could not add ✅ to the summary of job %s: %s", job.id, exc)

    # -- reactions ----------------------------------------------------------------------------------------

    def _ours(self, payload: discord.RawReactionActionEvent) -> bool:
        me = self.bot.user
        if me is None or payload.guild_id is None or payload.user_id == me.id:
            return False
        if normalise_emoji(str(payload.emoji)) not in REVIEW_EMOJIS:
            return False
        # Review messages are the bot's own (the gateway tells on additions; removals don't say).
        return payload.message_author_id is None or payload.message_author_id == me.id

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """👍/👎 on a row, ✅ on a summary: a reviewer's vote or approval; the approving ✅ delivers."""
        if not self._ours(payload):
            return
        member = payload.member
        is_reviewer = member is not None and has_role(member_of(member), Role.REVIEWER, self.services.roles)
        emoji = str(payload.emoji)
        result = await self.services.votes.reaction_added(
            payload.message_id, payload.user_id, emoji, is_reviewer=is_reviewer
        )
        if result.outcome is Outcome.NOT_REVIEWER:
            log.info("%s on job %s by %s not counted: not a reviewer", emoji, result.job_id, payload.user_id)
            return
        if result.approved_step is None or result.job_id is None:
            return
        content = await delivery_message(
            self.services,
            job_id=result.job_id,
            step=result.approved_step,
            approvers=result.approvers,
            promoted=False,
        )
        channel = self.bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        await channel.send(content, allowed_mentions=NO_MENTIONS)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        """Removing a reaction removes the vote it made (an approval already delivered stays)."""
        if not self._ours(payload):
            return
        result = await self.services.votes.reaction_removed(
            payload.message_id, payload.user_id, str(payload.emoji)
        )
        if result.outcome is Outcome.REMOVED:
            log.info("%s by %s on job %s withdrawn", payload.emoji, payload.user_id, result.job_id)


# -- /train samples and /train promote (the commands live in the train group, cogs/train.py) -----------


async def post_samples(interaction: discord.Interaction[Any], job_id: int, step: int | None) -> None:
    """Re-post one checkpoint's row (``step``) or the whole grid of a job, from stored scores."""
    services = services_of(interaction)
    if services.training is not None:
        await services.training.service.get(job_id, guild_id=guild_id_of(interaction))  # this server's job?
    await interaction.response.defer(thinking=True)
    try:
        image, caption = await services.review.samples_view(job_id, step)
    except UserError as exc:
        await interaction.followup.send(str(exc)[:2000], ephemeral=True)
        return
    stem = f"job{job_id}-step{step}" if step is not None else f"job{job_id}-grid"
    await interaction.followup.send(
        clip(caption),
        file=_file(image.data, _image_name(stem, image.format)),
        allowed_mentions=NO_MENTIONS,
    )


async def promote_checkpoint(interaction: discord.Interaction[Any], job_id: int, step: int) -> None:
    """A trainer (or admin) approves checkpoint ``step`` of a job; it is delivered like an approval."""
    services = services_of(interaction)
    if services.training is not None:
        await services.training.service.get(job_id, guild_id=guild_id_of(interaction))
    approval = await services.votes.promote(
        job_id, step, member=member_of(interaction.user), roles=services.roles
    )
    if not approval.newly_approved:
        await interaction.response.send_message(
            f"Checkpoint step {step} of job #{job_id} is already approved.", ephemeral=True
        )
        return
    await interaction.response.defer(thinking=True)  # copying a LoRA file can take a while
    content = await delivery_message(
        services, job_id=job_id, step=step, approvers=approval.approved_by, promoted=True
    )
    await interaction.followup.send(content, allowed_mentions=NO_MENTIONS)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(ReviewCog(bot))  # type: ignore[arg-type]
