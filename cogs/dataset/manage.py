"""/dataset create | list | show."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.datasets.manage import DatasetInfo
from bot.roles import Role
from cogs._shared import guild_id_of, require, services_of

# Discord: at most 10 files per message; keep one request's uploads well under its size cap.
MAX_FILES_PER_MESSAGE = 10
MAX_REQUEST_BYTES = 24 * 1024 * 1024


async def dataset_name_autocomplete(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    if interaction.guild_id is None:
        return []
    names = await services_of(interaction).datasets.names(guild_id=interaction.guild_id, prefix=current)
    return [app_commands.Choice(name=name, value=name) for name in names]


def describe_dataset(info: DatasetInfo) -> discord.Embed:
    embed = discord.Embed(title=f"Dataset {info.name}", colour=discord.Colour.blurple())
    embed.add_field(name="Trigger", value=f"`{info.trigger_word}`")
    embed.add_field(name="Class", value=info.class_word)
    usable = info.image_count - info.excluded_count
    embed.add_field(
        name="Images", value=f"{info.image_count} ({info.excluded_count} excluded, {usable} in use)"
    )
    # A mention inside an embed shows the name and never pings anyone.
    embed.add_field(name="Owner", value=f"<@{info.owner_id}>")
    embed.timestamp = info.created_at
    return embed


class ManageCommands(commands.Cog):
    """Mixin of the /dataset group: creating and looking at datasets."""

    @app_commands.command(name="create", description="Create a dataset for one person.")
    @app_commands.describe(
        name="Short name, e.g. elena",
        trigger="A rare word the LoRA will learn as this person, e.g. ohwx",
        class_word="What the subject is, e.g. woman",
    )
    @app_commands.rename(class_word="class")
    @require(Role.TRAINER)
    async def create(
        self, interaction: discord.Interaction[Any], name: str, trigger: str, class_word: str
    ) -> None:
        services = services_of(interaction)
        info = await services.datasets.create(
            guild_id=guild_id_of(interaction),
            name=name,
            trigger=trigger,
            class_word=class_word,
            owner_id=interaction.user.id,
        )
        text = (
            f"Created dataset **{info.name}** (trigger `{info.trigger_word}`, class {info.class_word}). "
            "Add photos with `/dataset gather` or `/dataset add`."
        )
        # The trigger advice only warns (creation has succeeded); it is added when the trigger is weak.
        from cogs.dataset.caption import send_with_trigger_advice

        await send_with_trigger_advice(interaction, text, info.trigger_word, seed=info.name)

    @app_commands.command(name="list", description="List this server's datasets.")
    async def list_(self, interaction: discord.Interaction[Any]) -> None:
        datasets = await services_of(interaction).datasets.list(guild_id=guild_id_of(interaction))
        if not datasets:
            await interaction.response.send_message(
                "No datasets yet. Start one with `/dataset create`.", ephemeral=True
            )
            return
        lines = [
            f"**{d.name}**: trigger `{d.trigger_word}` {d.class_word}, {d.image_count} images"
            + (f" ({d.excluded_count} excluded)" if d.excluded_count else "")
            for d in datasets
        ]
        await interaction.response.send_message("\n".join(lines)[:2000], ephemeral=True)

    @app_commands.command(name="show", description="Show a dataset and its contact sheet.")
    @app_commands.describe(name="The dataset")
    @app_commands.autocomplete(name=dataset_name_autocomplete)
    async def show(self, interaction: discord.Interaction[Any], name: str) -> None:
        services = services_of(interaction)
        info = await services.datasets.get(guild_id=guild_id_of(interaction), name=name)
        if info.image_count == 0:
            await interaction.response.send_message(
                content="No images yet: add some with `/dataset gather` or `/dataset add`.",
                embed=describe_dataset(info),
            )
            return
        # Rendering thumbnails takes a while for big sets: answer "thinking" within the 3 s.
        await interaction.response.defer(thinking=True)
        pages = await services.gather.render_contact_sheets(info.id)
        limit = max(interaction.filesize_limit, 1)
        fitting = [(number, page) for number, page in enumerate(pages, 1) if len(page) < limit]
        content = contact_sheet_caption(len(pages), len(pages) - len(fitting))
        batches = sheet_batches(fitting, limit=limit)
        if not batches:
            await interaction.followup.send(content=content, embed=describe_dataset(info))
            return
        for index, batch in enumerate(batches):
            files = [
                discord.File(io.BytesIO(page), filename=f"{info.name}-sheet-{number:02d}.jpg")
                for number, page in batch
            ]
            if index == 0:
                await interaction.followup.send(content=content, embed=describe_dataset(info), files=files)
            else:
                await interaction.followup.send(files=files)


def contact_sheet_caption(pages: int, too_large: int) -> str:
    text = (
        f"Contact sheet: {pages} page{'' if pages == 1 else 's'}. "
        "The numbers are what `/dataset exclude` and `/dataset include` take."
    )
    if too_large:
        text += f" ({too_large} page{'' if too_large == 1 else 's'} too large to post here.)"
    return text


def sheet_batches(
    pages: Sequence[tuple[int, bytes]],
    *,
    limit: int,
    max_files: int = MAX_FILES_PER_MESSAGE,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> list[list[tuple[int, bytes]]]:
    """Pages grouped for messages: at most ``max_files`` each, and (with room for the rest of the
    request) at most ``max_request_bytes`` together. Pages of ``limit`` bytes or more are left out."""
    batches: list[list[tuple[int, bytes]]] = []
    current: list[tuple[int, bytes]] = []
    size = 0
    for number, page in pages:
        if len(page) >= limit:
            continue
        if current and (len(current) >= max_files or size + len(page) > max_request_bytes):
            batches.append(current)
            current, size = [], 0
        current.append((number, page))
        size += len(page)
    if current:
        batches.append(current)
    return batches
