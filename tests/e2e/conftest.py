from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sim.harness import BotHarness


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path / "bot") as running:
        yield running
