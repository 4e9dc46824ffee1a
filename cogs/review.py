"""Review in Discord (design §2 steps 6–8): grid rows, the chart, votes by reaction, the summary, delivery.

:class:`ReviewCog` subscribes a :class:`~bot.review.service.ReviewListener` to the training listeners and
is its publisher:

- at each checkpoint it posts the grid row (JPEG, every cell labelled with step, prompt and score) with
  its caption, adds 👍 👎 (reviewers' reactions on it are that checkpoint's votes), and renews the chart:
  **one chart message per job, edited in place** with the new PNG (its id is recorded, so a restarted
  bot edits the same message);
- when the review decides training has stopped improving it stops the job early (results kept) and
  says how much money that saved;
- when the review raises the **face alarm** (the face is not coming while training goes on) it posts
  the alarm with the checkpoint's row, mentioning the requester only, with three buttons: **Stop now**,
  **Let it run** and **Retry with these changes** (the decisions live in ``bot.review.alarm``; a poor
  or failed run's summary carries the retry button too);
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

import io
import logging
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.errors import PermissionDeniedError, UserError
from bot.locks import KeyedLocks
from bot.outbox import CHART, EARLY_STOP, FACE_ALARM, SUMMARY, delivery_key, row_key
from bot.review.delivery import DEFAULT_WEIGHT, lora_file_name
from bot.review.notify import approval_text, clip, early_stop_text, inline, neutralise
from bot.review.service import CheckpointReview, FinalReview
from bot.review.votes import APPROVE, DOWN, UP, Outcome, normalise_emoji
from bot.roles import Role, has_role
from bot.training.context import prompt_lines
from bot.training.rules import JobAction
from bot.views import JobState, JobView
from cogs._outbox import post_owed
from cogs._shared import guild_id_of, member_of, services_of

if TYPE_CHECKING:
    from bot.app import LoraBot
    from bot.services import Services

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
REVIEW_EMOJIS = frozenset({UP, DOWN, APPROVE})
ALARM_LABELS = {"stop": "Stop now", "run": "Let it run", "retry": "Retry with these changes"}
ALARM_STYLES = {
    "stop": discord.ButtonStyle.danger,
    "run": discord.ButtonStyle.secondary,
    "retry": discord.ButtonStyle.primary,
}


class AlarmButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"loraops:alarm:(?P<action>stop|run|retry):(?P<job>\d+)",
):
    """Stop now / Let it run / Retry with these changes, on a face alarm or a poor run's summary.

    A dynamic item: the job id lives in the custom id, so the buttons work after a restart.
    """

    def __init__(self, job_id: int, action: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=ALARM_LABELS[action],
                style=ALARM_STYLES[action],
                custom_id=f"loraops:alarm:{action}:{job_id}",
            )
        )
        self.job_id = job_id
        self.action = action

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> AlarmButton:
        return cls(int(match["job"]), match["action"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog = interaction.client.get_cog(ReviewCog.__cog_name__)  # type: ignore[attr-defined]
        if isinstance(cog, ReviewCog):
            await cog.alarm_button(interaction, self.job_id, self.action)


def alarm_view(job_id: int, actions: tuple[str, ...] = ("stop", "run", "retry")) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in actions:
        view.add_item(AlarmButton(job_id, action))
    return view


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
        self._charts: dict[int, tuple[int, int]] = {}  # job id → (channel id, chart message id)
        self._chart_locks = KeyedLocks[int]()

    @property
    def services(self) -> Services:
        return self.bot.services

    async def cog_load(self) -> None:
        # The review runs in the domain either way (no RunPod: no listener, nothing to review); this cog
        # only publishes it.
        if self.services.review_listener is not None:
            self.services.review_listener.publisher = self

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(AlarmButton)
        if self.services.review_listener is not None:
            self.services.review_listener.publisher = None

    # -- where to post ------------------------------------------------------------------------------

    async def _channel(self, job: JobView) -> discord.PartialMessageable | None:
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

    async def checkpoint_reviewed(self, job: JobView, review: CheckpointReview) -> None:
        """Post the row (reviewers vote on it), renew the chart, and say so when the review stopped the run.

        The early stop itself already happened in the domain, before anything was posted."""
        channel = await self._channel(job)
        if channel is None:
            return
        try:
            await self._post_row(job, channel, review)
            await self._renew_chart(job, channel, review)
        except discord.HTTPException as exc:
            log.warning("could not post the review of job %s step %s: %s", job.id, review.step, exc)
        if review.alarm is not None:
            await self._post_alarm(job, channel, review)
        if review.stopped_now:  # later checkpoints decide the same: say it once
            await self._say_early_stop(job, channel, review.early_stop.reason, review.money_saved)

    async def early_stopped(self, job: JobView, reason: str, saved: Decimal | None) -> None:
        """The review stopped the run and a crash kept the note from being posted: post it now (once)."""
        channel = await self._channel(job)
        if channel is not None:
            await self._say_early_stop(job, channel, reason, saved)

    async def _say_early_stop(
        self, job: JobView, channel: discord.PartialMessageable, reason: str, saved: Decimal | None
    ) -> None:
        await post_owed(
            self.services.outbox,
            self.bot,
            job.id,
            EARLY_STOP,
            channel_id=channel.id,
            content=early_stop_text(job_id=job.id, reason=reason, saved=saved),
            allowed_mentions=NO_MENTIONS,
        )

    async def _post_row(
        self, job: JobView, channel: discord.PartialMessageable, review: CheckpointReview
    ) -> None:
        name = _image_name(f"job{job.id}-step{review.step}", review.row.format)
        posted = await post_owed(
            self.services.outbox,
            self.bot,
            job.id,
            row_key(review.step),
            channel_id=channel.id,
            content=review.caption,
            file_names=[name],
            make_files=lambda: [_file(review.row.data, name)],
            allowed_mentions=NO_MENTIONS,
            degrade=("grid row", f"`/train samples job:{job.id} step:{review.step}` shows it."),
        )
        assert posted.message_id is not None
        await self.services.votes.attach_row_message(job.id, review.step, posted.message_id)
        if not (posted.fresh or posted.recovered):
            return  # posted and set up before
        message = channel.get_partial_message(posted.message_id)
        for emoji in (UP, DOWN):
            try:
                await message.add_reaction(emoji)
            except discord.HTTPException as exc:
                log.warning("could not add %s to the row of job %s: %s", emoji, job.id, exc)

    async def _post_alarm(
        self, job: JobView, channel: discord.PartialMessageable, review: CheckpointReview
    ) -> None:
        """The face alarm: the row again (what the review saw), the requester pinged, three buttons."""
        alarm = review.alarm
        assert alarm is not None
        name = _image_name(f"job{job.id}-step{review.step}-alarm", review.row.format)
        try:
            await post_owed(
                self.services.outbox,
                self.bot,
                job.id,
                FACE_ALARM,
                channel_id=channel.id,
                content=alarm.content(),
                file_names=[name],
                make_files=lambda: [_file(review.row.data, name)],
                degrade=("row", f"`/train samples job:{job.id} step:{review.step}` shows it."),
                view=alarm_view(job.id),
                allowed_mentions=summary_mentions((alarm.requester_id,), ()),
            )
        except discord.HTTPException as exc:
            log.warning("could not post the face alarm of job %s: %s", job.id, exc)

    async def alarm_button(self, interaction: discord.Interaction[Any], job_id: int, action: str) -> None:
        """Route a button of the alarm (or of a poor run's summary) to the domain and render the result."""
        from bot.app import reply_privately

        try:
            await self._may_act(interaction, job_id)
            if action == "retry":
                await self._retry(interaction, job_id)
                return
            await interaction.response.defer()
            alarms = self.services.alarms
            who = interaction.user.mention
            if action == "stop":
                outcome = await alarms.stop_now(
                    job_id, user_id=interaction.user.id, guild_id=interaction.guild_id
                )
                note = outcome.text(job_id, who)
            else:
                first = await alarms.let_run(
                    job_id, user_id=interaction.user.id, guild_id=interaction.guild_id
                )
                note = (
                    f"▶️ {who} lets job #{job_id} run to the end."
                    if first
                    else f"Job #{job_id}: someone already chose."
                )
        except UserError as exc:
            await reply_privately(interaction, str(exc))
            return
        message = interaction.message
        if message is not None:  # the choice is made: only the retry stays
            await interaction.edit_original_response(view=alarm_view(job_id, ("retry",)))
        await interaction.followup.send(note, allowed_mentions=NO_MENTIONS)

    async def _may_act(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """The requester, a trainer or an admin may press the alarm's buttons (they spend or save money)."""
        training = self.services.training
        if training is None:
            raise PermissionDeniedError("Training is not set up on this bot.")
        await training.service.authorize(
            job_id,
            guild_id=interaction.guild_id,
            member=member_of(interaction.user),
            roles=self.services.roles,
            action=JobAction.ANSWER_ALARM,
        )

    async def _retry(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        from cogs.train import quote_text, show_quote

        await interaction.response.defer(thinking=True)
        try:
            outcome = await self.services.alarms.retry(
                job_id,
                user_id=interaction.user.id,
                channel_id=interaction.channel_id,
                guild_id=interaction.guild_id,
            )
        except UserError as exc:
            await interaction.delete_original_response()
            await interaction.followup.send(str(exc)[:2000], ephemeral=True)
            return
        quote = outcome.quote
        assert quote.job_id is not None
        applied = f"Applied to the dataset: {', '.join(outcome.applied)}.\n" if outcome.applied else ""
        suggested = outcome.suggestions
        overrides = f" · overrides `{suggested.overrides_text()}`" if suggested.overrides else ""
        head = (
            f"Retry of job #{job_id} with the suggested changes: preset `{suggested.preset}`{overrides}.\n"
            f"{applied}"
        )
        # Its ✅ counts like that of a /train start quote (remembered before it is shown).
        await show_quote(interaction, quote, clip(head + quote_text(quote)))

    async def _renew_chart(
        self, job: JobView, channel: discord.PartialMessageable, review: CheckpointReview
    ) -> None:
        total = f"/{review.total_steps}" if review.total_steps else ""
        content = f"Job #{job.id}: face similarity and loss by step (as of step {review.step}{total})."
        name = f"job{job.id}-chart.png"
        async with self._chart_locks(job.id):
            known = self._charts.get(job.id)
            if known is None:  # after a restart: the message recorded by the previous process
                known = await self.services.votes.chart_message(job.id)
            if known is not None and known[0] == channel.id:
                try:
                    await channel.get_partial_message(known[1]).edit(
                        content=content, attachments=[_file(review.chart_png, name)]
                    )
                    return
                except discord.NotFound as exc:  # deleted meanwhile: post a new one
                    log.info("chart message of job %s is gone (%s): posting a new one", job.id, exc)
                    await self.services.outbox.forget(job.id, CHART, known[1])
            posted = await post_owed(
                self.services.outbox,
                self.bot,
                job.id,
                CHART,
                channel_id=channel.id,
                content=content,
                file_names=[name],
                make_files=lambda: [_file(review.chart_png, name)],
                allowed_mentions=NO_MENTIONS,
            )
            assert posted.message_id is not None
            self._charts[job.id] = (channel.id, posted.message_id)
            await self.services.votes.attach_chart_message(
                job.id, channel_id=channel.id, message_id=posted.message_id
            )
            if not posted.fresh:  # an older chart message: bring it up to date
                await channel.get_partial_message(posted.message_id).edit(
                    content=content, attachments=[_file(review.chart_png, name)]
                )

    async def job_reviewed(self, job: JobView, review: FinalReview) -> None:
        """The summary: only the requester and the reviewer role may be pinged. Posted through the
        outbox, so it is posted once even if the bot dies around the post (and found again)."""
        self._charts.pop(job.id, None)
        outbox = self.services.outbox
        if job.pod_id is None and JobState(job.state) == JobState.CANCELLED:
            await outbox.settle(job.id, SUMMARY)
            return  # cancelled at the quote: nothing ran, and the quote message already says so
        channel = await self._channel(job)
        if channel is None:
            await outbox.settle(job.id, SUMMARY)
            return
        files: list[tuple[bytes, str]] = []
        if review.grid is not None:
            files.append((review.grid.data, _image_name(f"job{job.id}-grid", review.grid.format)))
        if review.chart_png is not None:
            files.append((review.chart_png, f"job{job.id}-chart.png"))
        notice = review.notice
        unpingable = self._unpingable_note(job.guild_id, channel.id, notice.mention_role_ids)
        posted = await post_owed(
            outbox,
            self.bot,
            job.id,
            SUMMARY,
            channel_id=channel.id,
            content=clip(notice.content + unpingable),
            file_names=[name for _, name in files],
            make_files=lambda: [_file(data, name) for data, name in files],
            degrade=("grid and chart", f"`/train samples job:{job.id}` shows the whole grid."),
            allowed_mentions=summary_mentions(notice.mention_user_ids, notice.mention_role_ids),
            # A poor or failed run's summary offers "Retry with these changes".
            view=alarm_view(job.id, ("retry",)) if review.retry else None,
        )
        assert posted.message_id is not None
        if JobState(job.state) == JobState.SUCCEEDED and review.best is not None:
            await self.services.votes.attach_summary_message(job.id, posted.message_id)
            if posted.fresh or posted.recovered:
                try:
                    await channel.get_partial_message(posted.message_id).add_reaction(APPROVE)
                except discord.HTTPException as exc:
                    log.warning("could not add ✅ to the summary of job %s: %s", job.id, exc)

    def _unpingable_note(self, guild_id: int, channel_id: int, role_ids: tuple[int, ...]) -> str:
        """Discord only pings a role the bot mentions if the role is mentionable or the bot may Mention
        Everyone in the channel; otherwise the summary says so instead of silently pinging nobody."""
        guild = self.bot.get_guild(guild_id)
        if guild is None or not role_ids:
            return ""
        channel = guild.get_channel(channel_id)
        if channel is not None and channel.permissions_for(guild.me).mention_everyone:
            return ""
        names = [
            neutralise(role.name)
            for role_id in role_ids
            if (role := guild.get_role(role_id)) is not None and not role.mentionable
        ]
        if not names:
            return ""
        return (
            f"\n(The {', '.join(names)} role was not pinged: make it mentionable in the server settings, "
            "or give me **Mention Everyone**.)"
        )

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
        await self._reaction_added(
            payload.message_id, payload.channel_id, payload.user_id, str(payload.emoji), is_reviewer
        )

    async def _reaction_added(
        self, message_id: int, channel_id: int, user_id: int, emoji: str, is_reviewer: bool
    ) -> None:
        result = await self.services.votes.reaction_added(message_id, user_id, emoji, is_reviewer=is_reviewer)
        if result.outcome is Outcome.NOT_REVIEWER:
            log.info("%s on job %s by %s not counted: not a reviewer", emoji, result.job_id, user_id)
            return
        if result.approved_step is None or result.job_id is None:
            return
        await self._deliver_approved(result.job_id, result.approved_step, result.approvers, channel_id)

    async def _deliver_approved(
        self, job_id: int, step: int, approvers: tuple[int, ...], channel_id: int
    ) -> None:
        """Deliver an approved checkpoint and say so, once (the message is owed under ``delivery:<step>``)."""
        key = delivery_key(step)
        if key in await self.services.outbox.done_keys(job_id):
            return
        content = await delivery_message(
            self.services, job_id=job_id, step=step, approvers=approvers, promoted=False
        )
        await post_owed(
            self.services.outbox,
            self.bot,
            job_id,
            key,
            channel_id=channel_id,
            content=content,
            allowed_mentions=NO_MENTIONS,
        )

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

    # -- reactions made while the bot was away -------------------------------------------------------------

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """A new gateway session (a start, or an invalidated session): Discord does not replay the
        reactions made meanwhile, so read them from the review messages still open and apply the change."""
        if self.services.training is None:
            return
        self.services.tasks.spawn(self.sync_reactions(), name="review-reaction-sync")

    async def sync_reactions(self) -> int:
        """Apply the reactions on open review messages (rows and summaries of jobs still in review) that
        the database does not know yet, and withdraw votes whose reaction is gone. Idempotent: votes are
        unique, an approval is made once, a delivery is announced once. Returns how many changed."""
        training = self.services.training
        if training is not None:
            # Rows and summaries recovered at start-up are open review messages too: wait for them.
            await training.owed_settled()
        changed = 0
        for job_id, channel_id, message_id, emojis in await self.services.votes.open_review_messages():
            try:
                changed += await self._sync_message(job_id, channel_id, message_id, emojis)
            except discord.HTTPException as exc:
                log.warning("job %s: could not read reactions of message %s: %s", job_id, message_id, exc)
        for job_id, step, approvers, channel_id in await self.services.votes.approved_undelivered():
            await self._deliver_approved(job_id, step, approvers, channel_id)
        if changed:
            log.info("applied %d reaction change(s) made while the bot was away", changed)
        return changed

    async def _sync_message(
        self, job_id: int, channel_id: int, message_id: int, emojis: frozenset[str]
    ) -> int:
        me = self.bot.user
        job = await self.services.votes.job(job_id)
        guild = self.bot.get_guild(job.guild_id)
        if me is None or guild is None:
            return 0
        channel = self.bot.get_partial_messageable(channel_id, guild_id=job.guild_id)
        try:
            message = await channel.fetch_message(message_id)
        except discord.NotFound:
            return 0
        present: set[tuple[int, str]] = set()
        for reaction in message.reactions:
            emoji = normalise_emoji(str(reaction.emoji))
            if emoji not in emojis:
                continue
            async for user in reaction.users(limit=None):
                if user.id != me.id:
                    present.add((user.id, emoji))
        recorded = await self.services.votes.recorded(message_id)
        changed = 0
        for user_id, emoji in sorted(present - recorded):
            try:
                member = await guild.fetch_member(user_id)
            except discord.NotFound:
                continue  # left the server: not a reviewer
            is_reviewer = has_role(member_of(member), Role.REVIEWER, self.services.roles)
            await self._reaction_added(message_id, channel_id, user_id, emoji, is_reviewer)
            changed += 1
        for user_id, emoji in sorted(recorded - present):
            await self.services.votes.reaction_removed(message_id, user_id, emoji)
            changed += 1
        return changed


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
    message = await interaction.followup.send(content, allowed_mentions=NO_MENTIONS, wait=True)
    # Its delivery is announced: a restarted bot must not announce it again.
    await services.outbox.record(
        job_id, delivery_key(step), channel_id=message.channel.id, message_id=message.id
    )


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(ReviewCog(bot))  # type: ignore[arg-type]
