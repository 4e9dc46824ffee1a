"""The one wiring point: settings → sessions → HTTP session → clients → services.

``build_services`` is called once by the start-up function (``bot/app.py``); cogs reach services
through ``bot.services``. Nothing here connects at import time.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.background import TaskGroup
from bot.config import Settings
from bot.datasets.manage import DatasetService
from bot.guilds import GuildConfigService
from bot.roles import RoleNames
from bot.training.money import Money
from storage.blobs import BlobStore


@dataclass
class Services:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    http: aiohttp.ClientSession
    blobs: BlobStore
    tasks: TaskGroup
    roles: RoleNames
    datasets: DatasetService
    guilds: GuildConfigService
    money: Money

    async def close(self) -> None:
        """Stop background work; the start-up function closes the HTTP session and engine."""
        await self.tasks.close()


def build_services(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], http: aiohttp.ClientSession
) -> Services:
    blobs = BlobStore(settings.blob_dir)
    tasks = TaskGroup()
    return Services(
        settings=settings,
        sessions=sessions,
        http=http,
        blobs=blobs,
        tasks=tasks,
        roles=RoleNames(settings.trainer_role, settings.reviewer_role, settings.admin_role),
        datasets=DatasetService(sessions),
        guilds=GuildConfigService(sessions, settings),
        money=Money(sessions, settings),
    )
