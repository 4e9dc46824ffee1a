from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sim.harness import BotHarness


@pytest.fixture
async def harness(tmp_path: Path, database_url: str) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path / "bot", settings_overrides={"database_url": database_url}) as running:
        yield running
