"""What several end-to-end tests share: waiting for the bot's messages and a dataset of real photos."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from sim.discord import SimMessage
from sim.harness import BotHarness


async def eventually(check: Callable[[], object], timeout: float = 10) -> None:
    """Poll a condition that no Discord request signals (database, logs, RunPod)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def bot_messages(h: BotHarness, predicate: Callable[[SimMessage], bool]) -> list[SimMessage]:
    """The bot's public messages in the main channel that match ``predicate``, oldest first."""
    return [
        m
        for m in h.sim.messages_in(h.sim.channel)
        if m.author.id == h.sim.bot_user.id and not m.ephemeral and predicate(m)
    ]


async def wait_message(
    h: BotHarness, predicate: Callable[[SimMessage], bool], timeout: float = 60
) -> SimMessage:
    found: list[SimMessage] = await h.sim.wait_until(lambda: bot_messages(h, predicate), timeout=timeout)
    return found[0]


async def create_dataset_with_photos(h: BotHarness, photos: Sequence[Path], name: str = "elena") -> int:
    """``/dataset create`` through Discord, then the photos added straight through the gather service."""
    assert h.trainer is not None
    created = await h.sim.invoke_slash(
        "dataset create", {"name": name, "trigger": "ohwx", "class": "woman"}, user=h.trainer
    )
    assert (await created.response()) is not None
    services = h.bot_app.services
    info = await services.datasets.get(guild_id=h.sim.guild.id, name=name)
    report = await services.gather.from_attachments(
        info.id, [(p.name, p.read_bytes()) for p in photos], added_by=h.trainer.id
    )
    assert len(report.added) == len(photos)
    return info.id
