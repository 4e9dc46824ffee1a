"""Posting when the usual way is closed: degrade, or go to the channel, and say so.

A channel's permission overwrites can take ``Attach Files`` from the bot while it may still write there.
Discord then refuses the whole message (403 50013); the text must not be lost with the picture. Owed
messages (cogs/_outbox.py ``post_owed(degrade=...)``) are then sent without their files, with one line
telling the team what is missing and where to see it.

A long command's interaction token expires after 15 minutes; its answer then goes to the channel instead
(:func:`post_in_channel`), addressed to the person who asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import discord

from bot.review.notify import clip

MISSING_PERMISSIONS = 50013


def degraded_text(content: str, what: str, where: str) -> str:
    """``content`` plus the line saying its files could not be attached here, and where to see them."""
    note = (
        f"\n⚠️ I can't attach files in this channel (it denies me **Attach Files**), so the {what} is "
        f"not shown here: {where}"
    )
    return clip(content + note)


async def post_in_channel(
    interaction: discord.Interaction[Any],
    content: Callable[[int], str],
    **send: Any,
) -> discord.abc.Messageable | None:
    """Post an answer the interaction can no longer carry (its token expired) in its channel.

    The invoker is mentioned first and is the only one who may be pinged: the text carries names people
    typed. ``content(room)`` is the text in at most ``room`` characters (what is left after the mention).
    Returns the channel for any follow-up posts, or None when nothing could be posted there.
    """
    channel = interaction.channel
    if not isinstance(channel, discord.abc.Messageable):
        return None
    prefix = f"{interaction.user.mention} "
    try:
        await channel.send(
            content=prefix + content(2000 - len(prefix)),
            allowed_mentions=discord.AllowedMentions(users=[interaction.user]),
            **send,
        )
    except discord.HTTPException:
        return None
    return channel
