"""The real bot through the Discord simulator: commands, roles, errors, rate limits, deadlines."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from sim.harness import BotHarness
from storage.db import unit_of_work
from storage.models import Dataset


async def _dataset_count(h: BotHarness) -> int:
    async with unit_of_work(h.bot_app.services.sessions) as session:
        return int(await session.scalar(select(func.count(Dataset.id))) or 0)


async def test_commands_synced_to_the_guild(harness: BotHarness) -> None:
    names = {c["name"] for c in harness.sim.commands(harness.sim.guild)}
    assert {"dataset", "budget", "faces"} <= names
    dataset = next(c for c in harness.sim.commands(harness.sim.guild) if c["name"] == "dataset")
    assert {"create", "list", "show"} <= {o["name"] for o in dataset["options"]}


async def test_create_dataset_writes_a_row_and_replies(harness: BotHarness) -> None:
    h = await harness.sim.invoke_slash(
        "dataset create", {"name": "elena", "trigger": "ohwx", "class": "woman"}, user=harness.trainer
    )
    message = await h.response()
    assert message is not None
    assert "Created dataset **elena**" in message.content
    assert not h.ephemeral
    async with unit_of_work(harness.bot_app.services.sessions) as session:
        dataset = await session.scalar(select(Dataset))
    assert dataset is not None
    assert (dataset.name, dataset.trigger_word, dataset.class_word) == ("elena", "ohwx", "woman")
    assert dataset.guild_id == harness.sim.guild.id
    assert dataset.owner_id == harness.trainer.id

    listing = await harness.sim.invoke_slash("dataset list", {}, user=harness.visitor)
    listed = await listing.response()
    assert listed is not None and "elena" in listed.content

    shown = await harness.sim.invoke_slash("dataset show", {"name": "elena"}, user=harness.visitor)
    empty = await shown.response()
    assert empty is not None
    assert "No images yet" in empty.content
    assert empty.embeds[0]["title"] == "Dataset elena"


async def test_bad_name_gets_a_private_error_and_writes_nothing(harness: BotHarness) -> None:
    h = await harness.sim.invoke_slash(
        "dataset create", {"name": "Elena Smith!", "trigger": "ohwx", "class": "woman"}, user=harness.trainer
    )
    message = await h.response()
    assert message is not None
    assert h.ephemeral
    assert "Dataset names are 2-32 characters" in message.content
    assert await _dataset_count(harness) == 0


async def test_duplicate_name_is_refused(harness: BotHarness) -> None:
    for expected in ("Created", "already exists"):
        h = await harness.sim.invoke_slash(
            "dataset create", {"name": "elena", "trigger": "ohwx", "class": "woman"}, user=harness.trainer
        )
        message = await h.response()
        assert message is not None and expected in message.content
    assert await _dataset_count(harness) == 1


async def test_member_without_trainer_role_is_refused(harness: BotHarness) -> None:
    h = await harness.sim.invoke_slash(
        "dataset create", {"name": "elena", "trigger": "ohwx", "class": "woman"}, user=harness.visitor
    )
    message = await h.response()
    assert message is not None
    assert h.ephemeral
    assert "needs the **trainer** role" in message.content
    assert await _dataset_count(harness) == 0


async def test_429_is_retried_and_the_message_still_arrives(harness: BotHarness) -> None:
    # The create reply is the interaction callback; a channel message from the bot goes through the
    # per-route buckets. Inject a 429 on the callback route: discord.py's webhook adapter retries it.
    harness.sim.inject_429("POST", r"/interactions/\d+/[^/]+/callback", retry_after=0.2, times=1)
    h = await harness.sim.invoke_slash(
        "dataset create", {"name": "elena", "trigger": "ohwx", "class": "woman"}, user=harness.trainer
    )
    message = await h.response()
    assert message is not None and "Created dataset" in message.content
    statuses = [r.status for r in harness.sim.requests if "/callback" in r.path]
    assert statuses == [429, 200]


async def test_a_reply_later_than_3_s_is_rejected(harness: BotHarness) -> None:
    # Hold the bot's database work so that its first response misses Discord's 3 s deadline.
    services = harness.bot_app.services
    original = services.datasets.list
    release = asyncio.Event()

    async def slow_list(**kwargs: object) -> object:
        harness.sim.clock.advance(3.5)
        release.set()
        return await original(**kwargs)  # type: ignore[arg-type]

    services.datasets.list = slow_list  # type: ignore[method-assign]
    h = await harness.sim.invoke_slash("dataset list", {}, user=harness.trainer)
    await release.wait()
    request = await harness.sim.wait_for_request("POST", r"/interactions/\d+/[^/]+/callback")
    assert request.status == 404
    assert h.original is None
