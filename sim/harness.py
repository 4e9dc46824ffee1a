"""The real loraops bot connected to the Discord simulator (and, on request, the other simulators).

Used by the end-to-end tests and by ``loraops sandbox``. It builds the application through the same
``build_application`` the production start-up uses; only base URLs differ.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.app import Application, build_application
from bot.config import Settings
from sim.discord import BOT_KWARGS, DiscordSimulator, SimUser


@dataclass
class BotHarness:
    """Start with ``async with BotHarness(tmp_path) as h:``; ``h.sim`` drives Discord."""

    data_dir: Path
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    sim: DiscordSimulator = field(default_factory=DiscordSimulator)
    app: Application | None = None
    trainer: SimUser | None = None
    reviewer: SimUser | None = None
    admin: SimUser | None = None
    visitor: SimUser | None = None
    _task: asyncio.Task[None] | None = None
    _restore: Callable[[], None] | None = None

    @property
    def bot_app(self) -> Application:
        assert self.app is not None, "start the harness first"
        return self.app

    async def __aenter__(self) -> BotHarness:
        await self.sim.start()
        self._restore = self.sim.patch_discord()
        self.trainer = self.sim.add_member("alice", roles=["trainer"])
        self.reviewer = self.sim.add_member("bob", roles=["reviewer"])
        self.admin = self.sim.add_member("erin", roles=["admin"])
        self.visitor = self.sim.add_member("carol")
        overrides: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{self.data_dir / 'loraops.db'}",
            "data_dir": self.data_dir,
            "discord_token": self.sim.bot_token,
            "discord_guild_ids": [self.sim.guild.id],
            "discord_api_base": self.sim.api_url,
            "discord_gateway_url": self.sim.gateway_url,
            "allow_private_urls": True,
            "progress_edit_interval_s": 1.0,
            "poll_interval_s": 0.2,
        }
        overrides.update(self.settings_overrides)
        settings = Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
        self.app = await build_application(settings, **BOT_KWARGS)
        token = self.sim.bot_token
        self._task = asyncio.create_task(self.app.bot.start(token), name="harness-bot")
        ready = asyncio.create_task(self.app.bot.wait_until_ready())
        done, _ = await asyncio.wait({ready, self._task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if self._task in done:
                self._task.result()  # raises the bot's start-up error
            raise TimeoutError("the bot did not become ready against the simulator")
        # setup_hook synced the commands before the gateway connected.
        await self.sim.wait_until(lambda: self.sim.commands(self.sim.guild))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.app is not None:
            await self.app.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
        await self.sim.close()
        if self._restore is not None:
            self._restore()
            self._restore = None
