"""Apply Alembic migrations programmatically (at start-up and by ``loraops migrate``).

The URL comes from our settings, never from an ini file, so there is one source of truth.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    """Blocking. The async env.py runs its own event loop, so inside a running loop this hops to a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        command.upgrade(alembic_config(database_url), "head")
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="migrate") as pool:
        pool.submit(command.upgrade, alembic_config(database_url), "head").result()


async def upgrade_to_head_async(database_url: str) -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "head")
