"""/budget show | set and /faces engine: the admin's knobs."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.guilds import parse_budgets
from bot.roles import Role, require_role
from bot.training.money import usd
from cogs._shared import guild_id_of, member_of, require, services_of


# The admin-only groups below are hidden from members without Manage Server (Discord's
# default_member_permissions; a server can grant them to its admin role under Integrations) and are still
# checked by role at run time, because that default is a display rule a server may change.
@app_commands.default_permissions(manage_guild=True)
class BudgetCog(commands.GroupCog, group_name="budget", group_description="Money: budgets and spend"):
    """Budgets per job and per month; spend so far this month."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="show", description="This month's spend against the budgets.")
    async def show(self, interaction: discord.Interaction[Any]) -> None:
        services = services_of(interaction)
        guild_id = guild_id_of(interaction)
        config = await services.guilds.get(guild_id)
        spent = await services.money.month_spent(guild_id)
        share = (spent / config.monthly_budget_usd * 100) if config.monthly_budget_usd else 0
        await interaction.response.send_message(
            f"This month: **{usd(spent)}** of {usd(config.monthly_budget_usd)} ({share:.0f} %).\n"
            f"Default budget per job: {usd(config.job_budget_usd)}.",
            ephemeral=True,
        )

    @app_commands.command(name="set", description="Set the default budget per job and/or the monthly budget.")
    @app_commands.describe(
        job="Default budget per training job in USD, e.g. 2.50", month="Monthly budget in USD"
    )
    @require(Role.ADMIN)
    async def set_(
        self, interaction: discord.Interaction[Any], job: str | None = None, month: str | None = None
    ) -> None:
        if job is None and month is None:
            await interaction.response.send_message("Give `job`, `month` or both.", ephemeral=True)
            return
        job_usd, month_usd = parse_budgets(job, month)
        config = await services_of(interaction).guilds.update(
            guild_id_of(interaction), job_budget_usd=job_usd, monthly_budget_usd=month_usd
        )
        await interaction.response.send_message(
            f"Budgets: {usd(config.job_budget_usd)} per job, {usd(config.monthly_budget_usd)} per month.",
            ephemeral=True,
        )


@app_commands.default_permissions(manage_guild=True)
class FacesCog(commands.GroupCog, group_name="faces", group_description="Face engine"):
    """Which face engine scores this server's photos."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="engine", description="Show or set the face engine (auto, insightface, dlib).")
    @app_commands.describe(engine="Leave empty to see the current engine")
    @app_commands.choices(
        engine=[app_commands.Choice(name=name, value=name) for name in ("auto", "insightface", "dlib")]
    )
    async def engine(self, interaction: discord.Interaction[Any], engine: str | None = None) -> None:
        services = services_of(interaction)
        guild_id = guild_id_of(interaction)
        if engine is not None:
            await require_admin(interaction)
            config = await services.guilds.update(guild_id, face_engine=engine)
        else:
            config = await services.guilds.get(guild_id)
        await interaction.response.send_message(
            f"Face engine: **{config.face_engine}**. Scores from different engines are never compared.",
            ephemeral=True,
        )


async def require_admin(interaction: discord.Interaction[Any]) -> None:
    require_role(member_of(interaction.user), Role.ADMIN, services_of(interaction).roles)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(BudgetCog(bot))
    await bot.add_cog(FacesCog(bot))
