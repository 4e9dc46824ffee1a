"""The /dataset command group, assembled from one mixin per concern."""

from __future__ import annotations

from discord.ext import commands

from cogs.dataset.caption import CaptionCommands
from cogs.dataset.curate import CurateCommands
from cogs.dataset.gather import GatherCommands
from cogs.dataset.manage import ManageCommands


class DatasetCog(
    ManageCommands,
    GatherCommands,
    CaptionCommands,
    CurateCommands,
    commands.GroupCog,
    group_name="dataset",
    group_description="Datasets of photos",
):
    """Gather, curate and caption the photos of one person."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        super().__init__()


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(DatasetCog(bot))
