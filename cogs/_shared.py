"""What every cog shares: role checks, the services accessor, reply helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands

from bot.roles import Member, Role, has_role

if TYPE_CHECKING:
    from bot.app import LoraBot
    from bot.services import Services

T = TypeVar("T")


class MissingLoraRoleError(app_commands.CheckFailure):
    pass


def services_of(interaction: discord.Interaction[Any]) -> Services:
    bot: LoraBot = interaction.client  # type: ignore[assignment]
    return bot.services


def member_of(user: discord.User | discord.Member) -> Member:
    """The domain's view of a Discord member (role names and the Administrator permission)."""
    if isinstance(user, discord.Member):
        return Member.of(
            user.id, [role.name for role in user.roles], is_administrator=user.guild_permissions.administrator
        )
    return Member.of(user.id, [])


def require(role: Role) -> Callable[[T], T]:
    """A slash-command check: the invoking member must hold ``role`` (admins always may)."""

    async def predicate(interaction: discord.Interaction[Any]) -> bool:
        if interaction.guild is None:
            raise app_commands.NoPrivateMessage("This command works in a server channel.")
        names = services_of(interaction).roles
        if not has_role(member_of(interaction.user), role, names):
            raise MissingLoraRoleError(f"This needs the **{names.name_of(role)}** role.")
        return True

    return app_commands.check(predicate)


def guild_id_of(interaction: discord.Interaction[Any]) -> int:
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage("This command works in a server channel.")
    return interaction.guild_id
