"""Posting into a channel that denies the bot a permission: degrade, and say so.

A channel's permission overwrites can take ``Attach Files`` from the bot while it may still write there.
Discord then refuses the whole message (403 50013); the text must not be lost with the picture. Owed
messages (cogs/_outbox.py ``post_owed(degrade=...)``) are then sent without their files, with one line
telling the team what is missing and where to see it.
"""

from __future__ import annotations

from bot.review.notify import clip

MISSING_PERMISSIONS = 50013


def degraded_text(content: str, what: str, where: str) -> str:
    """``content`` plus the line saying its files could not be attached here, and where to see them."""
    note = (
        f"\n⚠️ I can't attach files in this channel (it denies me **Attach Files**), so the {what} is "
        f"not shown here: {where}"
    )
    return clip(content + note)
