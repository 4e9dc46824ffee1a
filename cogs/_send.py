"""Posting into a channel that may deny the bot a permission: degrade, and say so.

A channel's permission overwrites can take ``Attach Files`` (or ``Embed Links``) from the bot while it
may still write there. Discord then refuses the whole message (403 50013); the text must not be lost
with the picture. :func:`send_or_degrade` sends the message without its files/embeds and adds one line
telling the team what is missing and where to find it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import discord

from bot.review.notify import clip

log = logging.getLogger(__name__)

MISSING_PERMISSIONS = 50013


def denied_note(what: str, where: str) -> str:
    """The line added to a message whose files could not be attached."""
    return (
        f"\n⚠️ I can't attach files in this channel (it denies me **Attach Files**), so the {what} is "
        f"not shown here: {where}"
    )


async def send_or_degrade(
    channel: discord.abc.Messageable,
    content: str,
    *,
    files: Sequence[discord.File] = (),
    embed: discord.Embed | None = None,
    allowed_mentions: discord.AllowedMentions,
    what: str,
    where: str,
) -> discord.Message:
    """``channel.send`` with files/embed; if the channel denies them, the text alone plus a note.

    Re-raises when even the text cannot be sent (no Send Messages, channel gone): nothing can be said
    there, and the caller decides what that means."""
    try:
        return await channel.send(
            content, files=list(files), embed=embed, allowed_mentions=allowed_mentions  # type: ignore[arg-type]
        )
    except discord.Forbidden as exc:
        if exc.code != MISSING_PERMISSIONS or not (files or embed):
            raise
        log.warning("channel %s refused files/embeds (%s): posting the text alone", _id(channel), exc)
    return await channel.send(clip(content + denied_note(what, where)), allowed_mentions=allowed_mentions)


def _id(channel: discord.abc.Messageable) -> object:
    return getattr(channel, "id", "?")
