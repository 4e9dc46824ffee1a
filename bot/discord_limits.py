"""What Discord accepts, for the code that sizes its output to it (Discord's numbers; no discord import).

The interaction tells a cog the real attachment limit of a server (boosts raise it); this is the limit
without boosts, which every server has and which pictures made ahead of time must fit.
"""

from __future__ import annotations

# Discord's per-file upload limit for bots in a server without boosts.
DISCORD_FILE_LIMIT = 10 * 1024 * 1024
