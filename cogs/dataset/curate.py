"""/dataset curate: the face report card, and buttons that apply its suggestions.

Thin adapter over :class:`bot.datasets.curation.CurationService`: check the role and the engine before
deferring, keep one progress message while the faces are analysed, then post the report card pages with
a summary embed and the buttons "Exclude N flagged", "Add M face crops" and "Both". The buttons are
dynamic items whose custom ids carry the dataset id and the engine
(``loraops:curate:<action>:<dataset>:<engine>``), registered when the cog loads, so they keep working
after a restart. Pressing one applies it at once (the label says exactly what it does): only trainers
may, and the buttons whose work is done are disabled.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.datasets.curation import FLAG_WORDS, CurationProgress, CurationResult
from bot.datasets.positions import position_list
from bot.errors import InvalidInputError, UserError
from bot.roles import Role, require_role
from bot.text import truncate
from cogs._send import post_in_channel
from cogs._shared import guild_id_of, member_of, require, services_of
from cogs.dataset.gather import ProgressMessage
from cogs.dataset.manage import dataset_name_autocomplete, sheet_batches

log = logging.getLogger(__name__)

CURATE_ID = re.compile(
    r"loraops:curate:(?P<action>exclude|crops|both):(?P<dataset>\d+)(?::(?P<engine>[A-Za-z0-9_.+-]{1,60}))?"
)
# What each button applies: (exclude the flagged photos, add face crops).
ACTIONS: dict[str, tuple[bool, bool]] = {
    "exclude": (True, False),
    "crops": (False, True),
    "both": (True, True),
}
FIELD_LIMIT = 900  # of Discord's 1024 per field, so five fields and the advice stay under 6000 in all
ADVICE_LIMIT = 1500


class CurationProgressMessage(ProgressMessage):
    """The gathering's throttled progress message, fed with curation snapshots."""

    async def show(self, snapshot: CurationProgress) -> None:
        self._latest = snapshot.text()
        self._wake.set()


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def summary_embed(result: CurationResult) -> discord.Embed:
    """Engine and why, ceiling, counts per flag, suggestions and the advice in plain words."""
    report = result.report
    flagged = result.flagged_positions()
    embed = discord.Embed(
        title=f"Report card: {result.dataset_name}",
        colour=discord.Colour.orange() if flagged else discord.Colour.green(),
        description=truncate("\n".join(f"• {_sentence(line)}" for line in report.advice), ADVICE_LIMIT),
    )
    embed.add_field(
        name="Engine", value=truncate(f"`{result.engine}`\n{result.engine_note}", FIELD_LIMIT), inline=False
    )
    if result.ceiling is not None:
        ceiling = (
            f"{result.ceiling:.3f}: how alike the person's own photos are "
            f"({report.reference_count} faces make the identity)"
        )
    else:
        ceiling = "not measured: fewer than two photos of the person's face"
    embed.add_field(name="Ceiling", value=truncate(ceiling, FIELD_LIMIT), inline=False)
    checked = f"{len(result.positions)} checked"
    if result.reused:
        checked += f" ({result.reused} from earlier analyses)"
    if result.left_out:
        checked += f"; {result.left_out} excluded photos not checked"
    embed.add_field(name="Photos", value=truncate(checked, FIELD_LIMIT), inline=False)
    flag_lines = [
        f"{FLAG_WORDS.get(flag, flag)}: {len(p)} ({position_list(p, 20)})" for flag, p in flagged.items()
    ]
    embed.add_field(name="Flags", value=truncate("\n".join(flag_lines) or "none", FIELD_LIMIT), inline=False)
    plan = result.plan
    suggestions: list[str] = []
    if plan.exclusions:
        suggestions.append(
            "Exclude "
            + ", ".join(
                f"#{position} ({reason.split(': ', 1)[-1]})"
                for position, reason in sorted(plan.exclusions.items())
            )
        )
    if plan.crops:
        suggestions.append(f"Face crops of {position_list(plan.crops, 20)}")
    if plan.crop_skips:
        suggestions.append("No crop for " + "; ".join(f"#{s.position}: {s.reason}" for s in plan.crop_skips))
    embed.add_field(
        name="Suggested",
        value=truncate("\n".join(suggestions) or "nothing to change", FIELD_LIMIT),
        inline=False,
    )
    embed.set_footer(text="The numbers are what /dataset exclude and /dataset include take.")
    return embed


def curation_view(result: CurationResult) -> discord.ui.View | None:
    """The buttons for a report card, or None when there is nothing to apply."""
    excluded, crops = len(result.plan.exclusions), len(result.plan.crops)
    if not excluded and not crops:
        return None
    view = discord.ui.View(timeout=None)
    engine = result.engine
    if excluded:
        view.add_item(
            CurationButton("exclude", result.dataset_id, engine, label=f"Exclude {excluded} flagged")
        )
    if crops:
        noun = "face crop" if crops == 1 else "face crops"
        view.add_item(CurationButton("crops", result.dataset_id, engine, label=f"Add {crops} {noun}"))
    if excluded and crops:
        view.add_item(CurationButton("both", result.dataset_id, engine, label="Both"))
    return view


def _custom_id(action: str, dataset_id: int, engine: str | None) -> str:
    base = f"loraops:curate:{action}:{dataset_id}"
    # An engine id the pattern can't carry (an odd model folder name) falls back to "the newest curation".
    if engine and re.fullmatch(r"[A-Za-z0-9_.+-]{1,60}", engine):
        return f"{base}:{engine}"
    return base


class CurationButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CURATE_ID.pattern):
    """One of a report card's buttons; works after a restart (the custom id says what to do)."""

    def __init__(
        self,
        action: str,
        dataset_id: int,
        engine: str | None,
        *,
        label: str | None = None,
        disabled: bool = False,
    ) -> None:
        style = discord.ButtonStyle.primary if action == "both" else discord.ButtonStyle.secondary
        super().__init__(
            discord.ui.Button(
                label=(label or action)[:80],
                style=discord.ButtonStyle.danger if action == "exclude" else style,
                custom_id=_custom_id(action, dataset_id, engine),
                disabled=disabled,
            )
        )
        self.action = action
        self.dataset_id = dataset_id
        self.engine = engine

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> CurationButton:
        label = getattr(item, "label", None)
        return cls(match["action"], int(match["dataset"]), match["engine"], label=label)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await apply_pressed(interaction, self.action, self.dataset_id, self.engine)


def view_after(message: discord.Message | None, pressed: str) -> discord.ui.View | None:
    """The message's curation buttons again, with those whose work is now done disabled."""
    if message is None:
        return None
    found: list[tuple[str, int, str | None, str, bool]] = []
    for row in message.components:
        for child in getattr(row, "children", ()):
            match = CURATE_ID.fullmatch(getattr(child, "custom_id", None) or "")
            if match is not None:
                found.append(
                    (
                        match["action"],
                        int(match["dataset"]),
                        match["engine"],
                        getattr(child, "label", None) or match["action"],
                        bool(getattr(child, "disabled", False)),
                    )
                )
    if not found:
        return None
    done_exclude, done_crops = ACTIONS[pressed]
    for action, _dataset, _engine, _label, disabled in found:
        if disabled and action != "both":
            done_exclude |= action == "exclude"
            done_crops |= action == "crops"
    view = discord.ui.View(timeout=None)
    for action, dataset_id, engine, label, _disabled in found:
        wants_exclude, wants_crops = ACTIONS[action]
        if action == "both":
            disabled = done_exclude or done_crops  # half done: the other button does the rest
        else:
            disabled = (wants_exclude and done_exclude) or (wants_crops and done_crops)
        view.add_item(CurationButton(action, dataset_id, engine, label=label, disabled=disabled))
    return view


async def apply_pressed(
    interaction: discord.Interaction[Any], action: str, dataset_id: int, engine: str | None
) -> None:
    """A report card button was pressed: check who and where, apply, update the buttons, announce."""
    from bot.app import reply_privately

    services = services_of(interaction)
    exclude, crops = ACTIONS[action]
    try:
        if interaction.guild_id is None:
            raise InvalidInputError("This works in a server channel.")
        require_role(member_of(interaction.user), Role.TRAINER, services.roles)
        await services.curation.dataset_name(dataset_id, guild_id=interaction.guild_id)
        await interaction.response.defer()  # crops take a moment; the buttons are updated after
        result = await services.curation.apply(
            dataset_id, exclude_flagged=exclude, add_crops=crops, user_id=interaction.user.id, engine=engine
        )
    except UserError as exc:
        await reply_privately(interaction, str(exc))
        return
    view = view_after(interaction.message, action)
    if view is not None:
        try:
            await interaction.edit_original_response(view=view)
        except discord.HTTPException as exc:
            log.warning("could not update the curation buttons: %s", exc)
    with contextlib.suppress(discord.HTTPException):
        await interaction.followup.send(
            f"{interaction.user.mention} applied the curation. {result.summary()}"[:2000],
            allowed_mentions=discord.AllowedMentions.none(),
        )


async def _post_cards(
    interaction: discord.Interaction[Any],
    result: CurationResult,
    content: str,
    embed: discord.Embed,
    view: discord.ui.View | None,
) -> None:
    """The first batch of pages, the embed and the buttons in place of the progress message; the
    other pages as follow-ups. After the 15-minute token, everything goes to the channel instead."""
    limit = max(interaction.filesize_limit, 1)
    pages = [(number, card) for number, card in enumerate(result.cards, 1)]
    batches = sheet_batches(pages, limit=limit) or [[]]
    too_large = len(pages) - sum(len(b) for b in batches)
    if too_large:
        content += f" ({too_large} page{'' if too_large == 1 else 's'} too large to post here.)"

    def files(batch: list[tuple[int, bytes]]) -> list[discord.File]:
        return [
            discord.File(io.BytesIO(card), filename=f"{result.dataset_name}-report-card-{number:02d}.jpg")
            for number, card in batch
        ]

    extra: dict[str, Any] = {"view": view} if view is not None else {}
    try:
        await interaction.edit_original_response(
            content=content, embed=embed, attachments=files(batches[0]), **extra
        )
        for batch in batches[1:]:
            await interaction.followup.send(files=files(batch))
        return
    except discord.HTTPException as exc:
        log.warning("could not post the report card through the interaction (%s); using the channel", exc)
    channel = await post_in_channel(
        interaction, lambda room: content[:room], embed=embed, files=files(batches[0]), **extra
    )
    if channel is None:
        return
    with contextlib.suppress(discord.HTTPException):
        for batch in batches[1:]:
            await channel.send(files=files(batch))


class CurateCommands(commands.Cog):
    """Mixin of the /dataset group: the face report card and its buttons."""

    bot: commands.Bot

    async def cog_load(self) -> None:
        await super().cog_load()
        self.bot.add_dynamic_items(CurationButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(CurationButton)
        await super().cog_unload()

    @app_commands.command(
        name="curate", description="Check every photo's face and post a report card with suggestions."
    )
    @app_commands.describe(name="The dataset", engine="Face engine (default: this server's choice)")
    @app_commands.autocomplete(name=dataset_name_autocomplete)
    @require(Role.TRAINER)
    async def curate(
        self,
        interaction: discord.Interaction[Any],
        name: str,
        engine: Literal["auto", "insightface", "dlib"] | None = None,
    ) -> None:
        services = services_of(interaction)
        guild_id = guild_id_of(interaction)
        # Mistakes are answered privately, before the public "thinking" reply.
        info = await services.datasets.get(guild_id=guild_id, name=name)
        if info.image_count - info.excluded_count <= 0:
            raise InvalidInputError(
                f"**{info.name}** has no photos to check: add some with `/dataset add` or `/dataset gather`."
            )
        choice = engine or (await services.guilds.get(guild_id)).face_engine
        services.curation.service_for(choice)  # raises a plain message when that engine can't run here
        await interaction.response.defer(thinking=True)
        progress = CurationProgressMessage.of_response(interaction)
        progress.start()
        try:
            result = await services.curation.curate(info.id, engine_choice=choice, progress=progress.show)
        finally:
            await progress.stop()
        pages = len(result.cards)
        content = (
            f"**{info.name}**: {len(result.positions)} photos checked with `{result.engine}`; "
            f"report card{'' if pages == 1 else f' in {pages} pages'} below."
        )
        await _post_cards(interaction, result, content, summary_embed(result), curation_view(result))
