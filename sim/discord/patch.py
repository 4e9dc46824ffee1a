"""Point the real discord.py client at a running simulator (two class attributes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import DiscordSimulator

# Pass these to commands.Bot / discord.Client in tests: on_ready fires 50 ms after the last
# GUILD_CREATE instead of 2 s, and no member chunking is requested at start-up.
BOT_KWARGS: dict[str, Any] = {"guild_ready_timeout": 0.05, "chunk_guilds_at_startup": False}


def patch_discord(sim: DiscordSimulator | str) -> Callable[[], None]:
    """Set ``discord.http.Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY`` to the simulator
    (started, or its base URL ``http://127.0.0.1:PORT``); return a callable restoring both.

    Route.BASE covers the interaction and webhook routes too (webhook/async_.py imports Route).
    Never call ``discord.http._set_api_version`` afterwards: it overwrites Route.BASE.
    """
    import discord.gateway
    import discord.http
    import yarl

    base = sim if isinstance(sim, str) else sim.base_url
    if not base:
        raise RuntimeError("start the simulator before patching discord.py")
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = base + "/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
        base.replace("http://", "ws://", 1) + "/gateway"
    )

    def restore() -> None:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    return restore
