"""The queries of per-guild settings (``GuildSettings``): admins' choices, each falling back to a default
in ``bot/guilds.py``. The caller owns the unit of work."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import GuildSettings


async def settings(session: AsyncSession, guild_id: int) -> GuildSettings | None:
    return await session.get(GuildSettings, guild_id)


async def settings_to_change(session: AsyncSession, guild_id: int) -> GuildSettings:
    """The guild's row, staged new (all defaults) when it has none yet."""
    row = await session.get(GuildSettings, guild_id)
    if row is None:
        row = GuildSettings(guild_id=guild_id)
        session.add(row)
    return row
