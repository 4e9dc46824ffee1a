"""/train estimate | start | status | list | cancel: renting a GPU to train a LoRA, from Discord.

``/train start`` freezes the plan into a pending job and shows its quote (GPU, time, cost, budget) with
Confirm / Cancel buttons; the requester confirms with a button or a ✅ reaction on the quote. The buttons
are dynamic items whose custom ids carry the job id (``loraops:train:confirm:<job>``), registered when
the cog loads, so they work on quotes posted before a restart. The progress message and the final
announcement are kept by :class:`cogs._progress.ProgressBoard`, subscribed to the training listeners.
"""

from __future__ import annotations

import logging
import re
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.crashpoints import crashpoint
from bot.errors import (
    ServiceUnavailableError,
    UserError,
)
from bot.guilds import parse_usd
from bot.outbox import QUOTE
from bot.roles import Role
from bot.training.jobs import Quote, Training
from bot.training.money import usd
from bot.training.presets import load_preset, preset_names
from bot.training.progress import ProgressView
from bot.training.rules import JobAction, may_act
from bot.views import JobState
from cogs._progress import ProgressBoard
from cogs._shared import guild_id_of, member_of, require, services_of
from cogs.dataset.manage import dataset_name_autocomplete
from cogs.review import post_samples, promote_checkpoint

if TYPE_CHECKING:
    from bot.app import LoraBot

log = logging.getLogger(__name__)

CONFIRM_EMOJI = "✅"
CONFIRM_ID = re.compile(r"loraops:train:confirm:(?P<job>\d+)")
GPU_CACHE_S = 300.0


def training_of(interaction: discord.Interaction[Any]) -> Training:
    """The training service, or a clear word on what to configure when RunPod is not set up."""
    training = services_of(interaction).training
    if training is None:
        raise ServiceUnavailableError(
            "Training is not set up on this bot: the operator must set `RUNPOD_API_KEY` "
            "(and usually `HF_TOKEN` for gated base models) and restart it."
        )
    return training


def line_for(view: ProgressView) -> str:
    """One line of ``/train list``."""
    progress = f" {view.step}/{view.total_steps}" if view.state != JobState.PENDING else ""
    return (
        f"`#{view.job_id}` {view.preset} · {view.state.value}{progress} · "
        f"{usd(view.cost_usd)} of {usd(view.budget_usd)}"
    )


def quote_text(quote: Quote) -> str:
    ask = (
        f"Confirm with the button or a {CONFIRM_EMOJI} reaction within 15 minutes; nothing is rented before."
    )
    return f"{quote.render()}\n{ask}"[:2000]


# -- the persistent buttons -------------------------------------------------------------------------------


# /train estimate and /train start take the same options.
_RUN_OPTION_DESCRIPTIONS = {
    "dataset": "The dataset to train on",
    "preset": "Training preset",
    "overrides": "Preset overrides as key=value, e.g. steps=800 network_dim=32",
    "gpu": "GPU type to try first",
    "budget": "Budget for this job in USD (above the server default needs an admin)",
}


class QuoteButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"loraops:train:(?P<action>confirm|cancel):(?P<job>\d+)",
):
    """Confirm or cancel a pending job (the requester, still a trainer, or an admin).

    A dynamic item: the job id lives in the custom id, so the buttons work after a restart.
    """

    def __init__(self, job_id: int, action: str) -> None:
        confirm = action == "confirm"
        super().__init__(
            discord.ui.Button(
                label="Confirm" if confirm else "Cancel",
                style=discord.ButtonStyle.success if confirm else discord.ButtonStyle.secondary,
                custom_id=f"loraops:train:{action}:{job_id}",
            )
        )
        self.job_id = job_id
        self.confirm = confirm

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> QuoteButton:
        return cls(int(match["job"]), match["action"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog = interaction.client.get_cog(TrainCog.__cog_name__)  # type: ignore[attr-defined]
        if not isinstance(cog, TrainCog):
            return
        await cog.run_button(interaction, self.job_id, confirm=self.confirm)


def quote_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(QuoteButton(job_id, "confirm"))
    view.add_item(QuoteButton(job_id, "cancel"))
    return view


async def show_quote(interaction: discord.Interaction[Any], quote: Quote, content: str) -> None:
    """Fill the deferred (thinking) reply in with a pending job's quote and its buttons.

    The deferred reply already is the quote's message: its id is remembered *before* the quote is shown
    in it, so a ✅ made on the quote while the bot was away still confirms (see ``sync_quotes``), even
    when the bot died right after showing it."""
    assert quote.job_id is not None
    message = await interaction.original_response()
    await services_of(interaction).outbox.record(
        quote.job_id, QUOTE, channel_id=message.channel.id, message_id=message.id
    )
    await interaction.edit_original_response(content=content, view=quote_view(quote.job_id))
    crashpoint("quote.shown")


# -- the cog -----------------------------------------------------------------------------------------------


class TrainCog(commands.GroupCog, group_name="train", group_description="Train a LoRA on a rented GPU"):
    """Estimate, start (with confirmation), watch and cancel training jobs."""

    def __init__(self, bot: LoraBot) -> None:
        self.bot = bot
        self.board: ProgressBoard | None = None
        self._gpu_cache: tuple[float, list[tuple[str, str]]] | None = None
        super().__init__()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(QuoteButton)
        training = self.bot.services.training
        if training is not None:
            self.board = ProgressBoard(self.bot, training.service, self.bot.services.outbox)
            # First: the progress message shows how the job ended before the summary announces it.
            training.listeners.add(self.board, first=True)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(QuoteButton)
        training = self.bot.services.training
        if self.board is not None:
            if training is not None:
                training.listeners.remove(self.board)
            await self.board.close()
            self.board = None

    # -- autocomplete ------------------------------------------------------------------------------------

    async def preset_autocomplete(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        choices = []
        for name in preset_names():
            if current.lower() not in name.lower():
                continue
            summary = load_preset(name).summary
            label = f"{name}: {summary}" if summary else name
            choices.append(app_commands.Choice(name=label[:100], value=name))
        return choices[:25]

    async def gpu_autocomplete(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        training = services_of(interaction).training
        if training is None:
            return []
        now = time.monotonic()
        if self._gpu_cache is None or now - self._gpu_cache[0] > GPU_CACHE_S:
            try:
                gpus = await training.ctx.runpod.list_gpu_types()  # type: ignore[attr-defined]
            except Exception:  # an autocomplete must answer something within 3 s, whatever RunPod does
                log.warning("GPU list for autocomplete failed", exc_info=True)
                return []
            self._gpu_cache = (now, [(str(g.display_name), str(g.id)) for g in gpus])
        wanted = current.lower()
        return [
            app_commands.Choice(name=f"{name} ({gpu_id})"[:100], value=gpu_id)
            for name, gpu_id in self._gpu_cache[1]
            if wanted in name.lower() or wanted in gpu_id.lower()
        ][:25]

    async def job_autocomplete(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[int]]:
        training = services_of(interaction).training
        if training is None or interaction.guild_id is None:
            return []
        live_only = interaction.command is not None and interaction.command.name == "cancel"
        views = await training.service.list_jobs(interaction.guild_id, live_only=live_only, limit=25)
        return [
            app_commands.Choice(name=line_for(view).replace("`", "")[:100], value=view.job_id)
            for view in views
            if current.strip().lstrip("#") in str(view.job_id)
        ]

    # -- helpers ------------------------------------------------------------------------------------------

    async def _request(
        self,
        interaction: discord.Interaction[Any],
        *,
        dataset: str,
        preset: str,
        overrides: str | None,
        budget: str | None,
    ) -> tuple[Training, dict[str, str], Decimal | None]:
        """The cheap checks, done before deferring so that their errors stay private."""
        training = training_of(interaction)
        amount = parse_usd(budget) if budget is not None else None
        guild_id = guild_id_of(interaction)
        await services_of(interaction).datasets.get(guild_id=guild_id, name=dataset)
        # Refused here, privately, before any spend: unknown preset, bad override, budget authority.
        params = await training.service.check_request(
            guild_id=guild_id,
            preset=preset,
            overrides=overrides,
            budget_usd=amount,
            member=member_of(interaction.user),
            roles=services_of(interaction).roles,
        )
        return training, params, amount

    async def run_button(self, interaction: discord.Interaction[Any], job_id: int, *, confirm: bool) -> None:
        """Confirm or Cancel pressed on a quote."""
        from bot.app import reply_privately

        try:
            training = training_of(interaction)
            await training.service.authorize(
                job_id,
                guild_id=interaction.guild_id,
                member=member_of(interaction.user),
                roles=services_of(interaction).roles,
                action=JobAction.CONFIRM if confirm else JobAction.CANCEL,
            )
            await interaction.response.defer()  # the job transition and the message edit may take a moment
            if confirm:
                await training.service.confirm(
                    job_id, user_id=interaction.user.id, guild_id=interaction.guild_id
                )
                note = f"{CONFIRM_EMOJI} Confirmed by {interaction.user.mention}: renting a GPU pod."
            else:
                await training.service.cancel(
                    job_id,
                    user_id=interaction.user.id,
                    guild_id=interaction.guild_id,
                    reason=f"cancelled by {interaction.user.display_name} before it started",
                )
                note = f"Cancelled by {interaction.user.mention}; nothing was rented."
        except UserError as exc:
            await reply_privately(interaction, str(exc))
            return
        content = interaction.message.content if interaction.message is not None else f"Job #{job_id}"
        await interaction.edit_original_response(content=_with_note(content, note), view=None)

    # -- commands ---------------------------------------------------------------------------------------

    @app_commands.command(
        name="estimate", description="GPU, time and cost of a training run (rents nothing)."
    )
    @app_commands.describe(**_RUN_OPTION_DESCRIPTIONS)
    @app_commands.autocomplete(
        dataset=dataset_name_autocomplete, preset=preset_autocomplete, gpu=gpu_autocomplete
    )
    @require(Role.TRAINER)
    async def estimate(
        self,
        interaction: discord.Interaction[Any],
        dataset: str,
        preset: str,
        overrides: str | None = None,
        gpu: str | None = None,
        budget: str | None = None,
    ) -> None:
        training, params, amount = await self._request(
            interaction, dataset=dataset, preset=preset, overrides=overrides, budget=budget
        )
        await interaction.response.defer(ephemeral=True, thinking=True)
        quote = await training.service.estimate(
            guild_id=guild_id_of(interaction),
            dataset=dataset,
            preset=preset,
            user_id=interaction.user.id,
            budget_usd=amount,
            params=params,
            gpu=gpu,
        )
        verdict = "Start it with `/train start`." if quote.ok else "It cannot start as it is."
        await interaction.followup.send(f"{quote.render()}\n{verdict}"[:2000], ephemeral=True)

    @app_commands.command(name="start", description="Quote a training run; it starts once you confirm.")
    @app_commands.describe(**_RUN_OPTION_DESCRIPTIONS)
    @app_commands.autocomplete(
        dataset=dataset_name_autocomplete, preset=preset_autocomplete, gpu=gpu_autocomplete
    )
    @require(Role.TRAINER)
    async def start(
        self,
        interaction: discord.Interaction[Any],
        dataset: str,
        preset: str,
        overrides: str | None = None,
        gpu: str | None = None,
        budget: str | None = None,
    ) -> None:
        training, params, amount = await self._request(
            interaction, dataset=dataset, preset=preset, overrides=overrides, budget=budget
        )
        # Planning freezes a snapshot and asks RunPod for prices: more than Discord's 3 s at times.
        await interaction.response.defer(thinking=True)
        try:
            quote = await training.service.start(
                guild_id=guild_id_of(interaction),
                dataset=dataset,
                preset=preset,
                user_id=interaction.user.id,
                channel_id=interaction.channel_id,
                budget_usd=amount,
                params=params,
                gpu=gpu,
            )
        except UserError:
            # The public "thinking" message goes; the error policy then answers privately.
            await interaction.delete_original_response()
            raise
        await show_quote(interaction, quote, quote_text(quote))

    @app_commands.command(name="status", description="Progress of a training job (the newest if none given).")
    @app_commands.describe(job="Job number")
    @app_commands.autocomplete(job=job_autocomplete)
    async def status(self, interaction: discord.Interaction[Any], job: int | None = None) -> None:
        training = training_of(interaction)
        guild_id = guild_id_of(interaction)
        if job is None:
            views = await training.service.list_jobs(guild_id, live_only=True, limit=1)
            views = views or await training.service.list_jobs(guild_id, limit=1)
            if not views:
                await interaction.response.send_message("No training jobs yet.", ephemeral=True)
                return
            view = views[0]
        else:
            view = await training.service.status(job, guild_id=guild_id)
        await interaction.response.send_message(view.render()[:2000], ephemeral=True)

    @app_commands.command(name="list", description="This server's recent training jobs.")
    async def list_(self, interaction: discord.Interaction[Any]) -> None:
        training = training_of(interaction)
        views = await training.service.list_jobs(guild_id_of(interaction), limit=15)
        if not views:
            await interaction.response.send_message(
                "No training jobs yet. Start one with `/train start`.", ephemeral=True
            )
            return
        await interaction.response.send_message("\n".join(line_for(v) for v in views)[:2000], ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel a training job (the requester or an admin).")
    @app_commands.describe(job="Job number")
    @app_commands.autocomplete(job=job_autocomplete)
    async def cancel(self, interaction: discord.Interaction[Any], job: int) -> None:
        training = training_of(interaction)
        guild_id = guild_id_of(interaction)
        await training.service.authorize(
            job,
            guild_id=guild_id,
            member=member_of(interaction.user),
            roles=services_of(interaction).roles,
            action=JobAction.CANCEL,
        )
        await interaction.response.defer(ephemeral=True, thinking=True)  # terminating the pod takes a call
        ended = await training.service.cancel(
            job,
            user_id=interaction.user.id,
            guild_id=guild_id,
            reason=f"cancelled by {interaction.user.display_name}",
        )
        terminated = " and its pod terminated" if ended.pod_id else ""
        await interaction.followup.send(f"Job #{job} cancelled{terminated}.", ephemeral=True)

    # -- review: /train samples, /train promote (their bodies live in cogs/review.py) -------------------

    @app_commands.command(name="samples", description="Show a checkpoint's samples, or a job's whole grid.")
    @app_commands.describe(job="Job number", step="Checkpoint step (leave out for every checkpoint)")
    @app_commands.autocomplete(job=job_autocomplete)
    async def samples(self, interaction: discord.Interaction[Any], job: int, step: int | None = None) -> None:
        await post_samples(interaction, job, step)

    @app_commands.command(name="promote", description="Approve a checkpoint of a job and deliver it.")
    @app_commands.describe(job="Job number", step="The checkpoint step to approve")
    @app_commands.autocomplete(job=job_autocomplete)
    @require(Role.TRAINER)
    async def promote(self, interaction: discord.Interaction[Any], job: int, step: int) -> None:
        await promote_checkpoint(interaction, job, step)

    # -- ✅ on a quote ---------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """The requester's ✅ on a quote confirms it, like the button."""
        training = self.bot.services.training
        me = self.bot.user
        if training is None or me is None or payload.guild_id is None or payload.user_id == me.id:
            return
        if str(payload.emoji) != CONFIRM_EMOJI:
            return
        if payload.message_author_id is not None and payload.message_author_id != me.id:
            return
        channel = self.bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        try:
            message = await channel.fetch_message(payload.message_id)
        except discord.HTTPException:
            return
        job_id = _quoted_job(message)
        if job_id is None:
            return  # a ✅ on another message (checkpoint approvals are the review cog's)
        await self._confirm_by_reaction(message, job_id, payload.user_id, payload.member, payload.guild_id)

    async def _confirm_by_reaction(
        self,
        message: discord.Message,
        job_id: int,
        user_id: int,
        member: discord.Member | None,
        guild_id: int,
    ) -> bool:
        """Confirm pending job ``job_id`` for a ✅ by ``user_id`` on its quote, if they may; True if done."""
        training = self.bot.services.training
        if training is None:
            return False
        try:
            job = await training.service.get(job_id, guild_id=guild_id)
            if JobState(job.state) != JobState.PENDING:
                return False  # confirmed (or ended) already: a second ✅ changes nothing
            allowed = member is not None and may_act(
                member_of(member), job.requested_by, JobAction.CONFIRM, self.bot.services.roles
            )
            if not allowed:
                log.info("✅ on job %s by %s ignored: not the requester nor an admin", job_id, user_id)
                return False
            await training.service.confirm(job_id, user_id=user_id, guild_id=guild_id)
        except UserError as exc:
            log.info("✅ on job %s by %s refused: %s", job_id, user_id, exc)
            return False
        note = f"{CONFIRM_EMOJI} Confirmed by <@{user_id}>: renting a GPU pod."
        try:
            await message.edit(content=_with_note(message.content, note), view=None)
        except discord.HTTPException as exc:
            log.warning("could not update the quote of job %s: %s", job_id, exc)
        return True

    # -- ✅ made on a quote while the bot was away ----------------------------------------------------------

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """A new gateway session: Discord does not replay reactions made meanwhile, so read the quotes."""
        if self.bot.services.training is not None:
            self.bot.services.tasks.spawn(self.sync_quotes(), name="quote-reaction-sync")

    async def sync_quotes(self) -> int:
        """Confirm pending jobs whose quote got the requester's (or an admin's) ✅ while the bot was
        away. Returns how many were confirmed."""
        training = self.bot.services.training
        me = self.bot.user
        if training is None or me is None:
            return 0
        confirmed = 0
        for job_id, channel_id, message_id in await training.service.pending_quotes():
            job = await training.service.get(job_id)
            guild = self.bot.get_guild(job.guild_id)
            if guild is None:
                continue
            channel = self.bot.get_partial_messageable(channel_id, guild_id=job.guild_id)
            try:
                message = await channel.fetch_message(message_id)
                reaction = next((r for r in message.reactions if str(r.emoji) == CONFIRM_EMOJI), None)
                users = [u async for u in reaction.users(limit=None)] if reaction is not None else []
                for user in users:
                    if user.id == me.id:
                        continue
                    try:
                        member = await guild.fetch_member(user.id)
                    except discord.NotFound:
                        continue
                    if await self._confirm_by_reaction(message, job_id, user.id, member, job.guild_id):
                        confirmed += 1
                        break
            except discord.HTTPException as exc:
                log.warning("job %s: could not read its quote's reactions: %s", job_id, exc)
        await self._settle_quotes()
        return confirmed

    async def _settle_quotes(self) -> None:
        """A bot killed between confirming (or cancelling) a job and editing its quote left the quote
        asking for a confirmation, buttons and all: say what happened instead."""
        training = self.bot.services.training
        if training is None:
            return
        for job_id, channel_id, message_id, event in await training.service.left_pending():
            channel = self.bot.get_partial_messageable(channel_id)
            try:
                message = await channel.fetch_message(message_id)
                if not message.components:
                    continue  # already says what happened
                payload = event.payload or {}
                if event.to_state == JobState.PROVISIONING.value:
                    note = (
                        f"{CONFIRM_EMOJI} Confirmed by <@{payload.get('confirmed_by')}>: renting a GPU pod."
                    )
                elif payload.get("reason") == "unconfirmed":
                    note = "Not confirmed in time; nothing was rented."
                elif payload.get("by") is not None:
                    note = f"Cancelled by <@{payload.get('by')}>; nothing was rented."
                else:
                    note = f"Job #{job_id} ended ({event.to_state}); nothing was rented."
                await message.edit(content=_with_note(message.content, note), view=None)
            except discord.HTTPException as exc:
                log.warning("job %s: could not update its quote: %s", job_id, exc)


def _quoted_job(message: discord.Message) -> int | None:
    """The job a quote message is for, from its Confirm button's custom id."""
    for row in message.components:
        for child in getattr(row, "children", ()):
            match = CONFIRM_ID.fullmatch(getattr(child, "custom_id", None) or "")
            if match is not None:
                return int(match["job"])
    return None


def _with_note(content: str, note: str) -> str:
    # The quote's last line asked for confirmation: replace it with what happened.
    lines = [line for line in content.splitlines() if "within 15 minutes" not in line]
    return "\n".join([*lines, note])[:2000]


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(TrainCog(bot))  # type: ignore[arg-type]
