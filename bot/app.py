"""Start-up: the only module of ``bot/`` that imports discord.

``build_application`` wires settings → migrations → engine/sessions → HTTP session → services →
discord.py bot → cogs, in that order, once; ``run`` connects. Nothing connects at import time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import Settings
from bot.errors import StartupError, UserError
from bot.services import Services, build_services
from bot.text import quote_inline
from storage.db import check_connection, make_engine, make_sessionmaker
from storage.migrate import upgrade_to_head_async

log = logging.getLogger(__name__)
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)


class LoraTree(app_commands.CommandTree["LoraBot"]):
    """One error policy for every slash command (style R6)."""

    async def on_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        original = getattr(error, "original", error)
        if isinstance(original, UserError):
            await reply_privately(interaction, str(original))
            return
        if isinstance(error, app_commands.CheckFailure):
            await reply_privately(interaction, str(error) or "You can't use this command here.")
            return
        if isinstance(error, app_commands.TransformerError):
            await reply_privately(
                interaction, f"That value doesn't fit: {quote_inline(str(error.value), 60)}."
            )
            return
        reference = secrets.token_hex(4)
        command = interaction.command.qualified_name if interaction.command else "?"
        log.error("command /%s failed (ref %s)", command, reference, exc_info=original)
        await reply_privately(interaction, f"Something went wrong on our side (ref `{reference}`).")


async def reply_privately(interaction: discord.Interaction[Any], text: str) -> None:
    """An ephemeral reply through whichever channel the interaction still allows."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text[:2000], ephemeral=True)
        else:
            await interaction.response.send_message(text[:2000], ephemeral=True)
    except discord.HTTPException:
        log.warning("could not deliver an error reply for interaction %s", interaction.id)


class LoraBot(commands.Bot):
    """Holds the services and loads the cogs; no business logic lives here."""

    def __init__(self, services: Services, **options: Any) -> None:
        intents = discord.Intents.default()
        intents.typing = False
        intents.presences = False
        options.setdefault("chunk_guilds_at_startup", False)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=LoraTree,
            allowed_mentions=discord.AllowedMentions.none(),
            **options,
        )
        self.services = services
        self.sync_on_start = True
        self.run_background = True  # off for one-shot commands such as `loraops sync`

    async def setup_hook(self) -> None:
        from cogs import EXTENSIONS

        for extension in EXTENSIONS:
            await self.load_extension(extension)
        guild_ids = self.services.settings.discord_guild_ids
        for guild_id in guild_ids:
            # Guild commands appear at once; global ones take up to an hour to reach clients.
            self.tree.copy_global_to(guild=discord.Object(guild_id))
        if self.sync_on_start:
            await sync_commands_if_changed(self)
        training = self.services.training
        if training is not None and self.run_background:
            # Reconcile at once (resumes live jobs after a restart, stops orphan pods), then on a timer.
            training.start_background(self.services.tasks)


    async def on_ready(self) -> None:
        # Every new gateway session (not a resume): the guilds and roles are known from here on.
        training = self.services.training
        if training is not None:
            training.chat_ready()


def command_fingerprints(bot: LoraBot) -> dict[str, str]:
    """A hash of the command payloads per sync target ("global" or a guild id)."""
    targets: list[discord.Object | None] = [
        discord.Object(g) for g in bot.services.settings.discord_guild_ids
    ]
    if not targets:
        targets = [None]
    result = {}
    for target in targets:
        payload = [command.to_dict(bot.tree) for command in bot.tree.get_commands(guild=target)]
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        result["global" if target is None else str(target.id)] = digest
    return result


def _fingerprint_file(settings: Settings) -> Path:
    return settings.data_dir / "command-fingerprints.json"


async def sync_commands(bot: LoraBot) -> list[str]:
    """Sync every target now; remember what was synced."""
    fingerprints = command_fingerprints(bot)
    for target in fingerprints:
        await bot.tree.sync(guild=None if target == "global" else discord.Object(int(target)))
    path = _fingerprint_file(bot.services.settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fingerprints, indent=1))
    return list(fingerprints)


async def sync_commands_if_changed(bot: LoraBot) -> bool:
    """Sync at start only when the command set changed since the last sync (style R10)."""
    path = _fingerprint_file(bot.services.settings)
    try:
        previous = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        previous = {}
    if previous == command_fingerprints(bot):
        log.info("slash commands unchanged; not syncing")
        return False
    synced = await sync_commands(bot)
    log.info("slash commands synced to %s", ", ".join(synced))
    return True


def point_discord_at(api_base: str, gateway_url: str | None) -> None:
    """Use another Discord endpoint (the simulator). discord.py reads these class attributes per call."""
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    Route.BASE = api_base.rstrip("/")
    if gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


@dataclass
class Application:
    """Everything start-up built, closed in reverse order."""

    settings: Settings
    engine: AsyncEngine
    http: aiohttp.ClientSession
    services: Services
    bot: LoraBot
    _closed: bool = field(default=False, repr=False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.bot.is_closed():
            await self.bot.close()
        await self.services.close()
        await self.http.close()
        await self.engine.dispose()


async def build_application(
    settings: Settings, *, clock: Callable[[], datetime] | None = None, **bot_options: Any
) -> Application:
    """Wire everything in one place. Applies migrations first; raises on an unreachable database.

    ``clock`` (UTC now; the wall clock by default) times money and jobs: the simulators' harness
    passes the RunPod simulator's clock, so the ledger and RunPod's meter read the same time."""
    await upgrade_to_head_async(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        await check_connection(engine)
    except BaseException:
        await engine.dispose()
        raise
    sessions = make_sessionmaker(engine)
    http = aiohttp.ClientSession(timeout=HTTP_TIMEOUT)
    try:
        services = build_services(settings, sessions, http, clock=clock)
    except BaseException:
        # A start-up error (e.g. a malformed CLOUDINARY_URL) must not leak the session and the pool.
        await http.close()
        await engine.dispose()
        raise
    if settings.discord_api_base:
        point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
    bot = LoraBot(services, **bot_options)
    return Application(settings, engine, http, services, bot)


async def run(settings: Settings) -> None:
    """Run the bot until it is stopped."""
    assert settings.discord_token is not None, "checked by the caller"
    app = await build_application(settings)
    # Load the face engine in its worker processes in the background, so the first /dataset curate
    # doesn't wait for it; the bot connects meanwhile (the workers run at a lower CPU priority).
    app.services.tasks.spawn(app.services.faces.warm_up(), name="faces-warm-up")
    try:
        await app.bot.start(settings.discord_token.get_secret_value())
    except discord.LoginFailure:
        raise StartupError("DISCORD_TOKEN: Discord refused this token") from None
    finally:
        await app.close()
