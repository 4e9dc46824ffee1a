"""Posting a job's owed messages through Discord exactly once (the Discord half of ``bot/outbox.py``).

:func:`post_owed` sends with the owed row's nonce (discord.py then sets ``enforce_nonce``, so a create
Discord already made, e.g. one answered with a 5xx that discord.py retries, is returned instead of being
made twice) and finds a message posted by an attempt that died before recording it by reading the
channel's history since that attempt: the bot's own message with the same content (and the same file
names, when it has files).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import discord

from bot.outbox import Outbox, Posted
from cogs._send import MISSING_PERMISSIONS, degraded_text

log = logging.getLogger(__name__)

# How far back of the recorded attempt to look (clock skew between us and Discord), and how many
# messages of the channel to read at most while looking.
FIND_SLACK = timedelta(seconds=30)
FIND_LIMIT = 500


async def find_own_message(
    client: discord.Client,
    channel_id: int,
    since: datetime,
    content: str,
    file_names: Sequence[str] = (),
) -> int | None:
    """The id of the bot's message in the channel, created after ``since``, with this content and
    these attachment names; None when there is none (or the history cannot be read)."""
    me = client.user
    if me is None:
        return None
    channel = client.get_partial_messageable(channel_id)
    after = discord.Object(discord.utils.time_snowflake(since - FIND_SLACK))
    wanted_files = sorted(file_names)
    try:
        async for message in channel.history(limit=FIND_LIMIT, after=after, oldest_first=True):
            if message.author.id != me.id or message.content.strip() != content.strip():
                continue
            if wanted_files and sorted(a.filename for a in message.attachments) != wanted_files:
                continue
            return message.id
    except discord.HTTPException as exc:
        log.warning("could not read channel %s to find a message again: %s", channel_id, exc)
        raise
    return None


async def post_owed(
    outbox: Outbox,
    client: discord.Client,
    job_id: int,
    key: str,
    *,
    channel_id: int,
    content: str,
    file_names: Sequence[str] = (),
    make_files: Callable[[], list[discord.File]] | None = None,
    allowed_mentions: discord.AllowedMentions | None = None,
    view: discord.ui.View | None = None,
    degrade: tuple[str, str] | None = None,
) -> Posted:
    """Post ``content`` (and fresh files from ``make_files``) as the job's ``key`` message, once.

    Files are made per attempt: a ``discord.File`` can be sent only once. With ``degrade`` (what the
    files show, where else to see them) a channel that denies the bot Attach Files gets the text alone
    and a line saying so (cogs/_send.py), instead of nothing."""
    channel = client.get_partial_messageable(channel_id)

    async def send(nonce: str) -> int:
        kwargs: dict[str, Any] = {"nonce": nonce}
        if make_files is not None:
            kwargs["files"] = make_files()
        if allowed_mentions is not None:
            kwargs["allowed_mentions"] = allowed_mentions
        if view is not None:
            kwargs["view"] = view
        try:
            message = await channel.send(content, **kwargs)
        except discord.Forbidden as exc:
            if degrade is None or "files" not in kwargs or exc.code != MISSING_PERMISSIONS:
                raise
            log.warning(
                "job %s: channel %s refused the files of %s (%s): text alone", job_id, channel_id, key, exc
            )
            del kwargs["files"]
            message = await channel.send(degraded_text(content, *degrade), **kwargs)
        return message.id

    async def find(found_in: int, since: datetime, sent: str) -> int | None:
        found = await find_own_message(client, found_in, since, sent, file_names)
        if found is None and degrade is not None and file_names:
            found = await find_own_message(client, found_in, since, degraded_text(sent, *degrade))
        return found

    return await outbox.deliver(job_id, key, channel_id=channel_id, content=content, send=send, find=find)
