"""/dataset create | list | show."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.datasets.manage import DatasetInfo
from bot.roles import Role
from cogs._shared import guild_id_of, require, services_of


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
    embed.set_footer(text=f"created by user {info.owner_id}")
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
        await interaction.response.send_message(text)

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
        info = await services_of(interaction).datasets.get(guild_id=guild_id_of(interaction), name=name)
        if info.image_count == 0:
            await interaction.response.send_message(
                content="No images yet: add some with `/dataset gather` or `/dataset add`.",
                embed=describe_dataset(info),
            )
            return
        await interaction.response.send_message(embed=describe_dataset(info))
