"""The outbox of owed messages (bot/outbox.py) on SQLite and PostgreSQL, and the crash points' guard."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.outbox import SUMMARY, Outbox, row_key
from storage.db import unit_of_work
from storage.models import Dataset, Job

REPO = Path(__file__).resolve().parents[2]


async def _job(db: async_sessionmaker[AsyncSession]) -> int:
    async with unit_of_work(db) as session:
        dataset = Dataset(guild_id=1, name="elena", trigger_word="ohwx", class_word="woman", owner_id=1)
        session.add(dataset)
        await session.flush()
        job = Job(
            guild_id=1, dataset_id=dataset.id, preset="sd15-local", budget_usd=Decimal(1), requested_by=1
        )
        session.add(job)
        await session.flush()
        return job.id


class FakeChannel:
    """Records sends; ``fail_after_making`` makes a send create the message and then raise (a 5xx)."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, str, str]] = []  # (id, nonce, content)
        self.fail_after_making = False
        self.fail_before_making = False
        self.content = ""
        self.finds: list[tuple[int, datetime, str]] = []

    async def send(self, nonce: str) -> int:
        if self.fail_before_making:
            raise RuntimeError("502 before")
        message_id = 1000 + len(self.messages)
        self.messages.append((message_id, nonce, self.content))
        if self.fail_after_making:
            raise RuntimeError("500 after")
        return message_id

    async def find(self, channel_id: int, since: datetime, content: str) -> int | None:
        self.finds.append((channel_id, since, content))
        return next((m for m, _, text in self.messages if text == content), None)


async def test_a_message_is_posted_once_and_its_id_kept(db: async_sessionmaker[AsyncSession]) -> None:
    job_id = await _job(db)
    outbox, channel = Outbox(db), FakeChannel()
    channel.content = "summary text"
    first = await outbox.deliver(
        job_id, SUMMARY, channel_id=5, content="summary text", send=channel.send, find=channel.find
    )
    assert first.fresh and first.message_id == 1000
    again = await Outbox(db).deliver(
        job_id, SUMMARY, channel_id=5, content="summary text", send=channel.send, find=channel.find
    )
    assert not again.fresh and again.message_id == 1000
    assert len(channel.messages) == 1 and channel.finds == []
    assert await outbox.done_keys(job_id) == {SUMMARY}
    assert [r.message_id for r in await outbox.posted([job_id])] == [1000]


async def test_a_post_answered_with_an_error_is_found_again_not_doubled(
    db: async_sessionmaker[AsyncSession],
) -> None:
    job_id = await _job(db)
    outbox, channel = Outbox(db), FakeChannel()
    channel.content = "row text"
    channel.fail_after_making = True
    with pytest.raises(RuntimeError):
        await outbox.deliver(
            job_id, row_key(20), channel_id=5, content="row text", send=channel.send, find=channel.find
        )
    assert await outbox.done_keys(job_id) == set()  # owed: the intent and the content are recorded
    channel.fail_after_making = False
    found = await Outbox(db).deliver(
        job_id, row_key(20), channel_id=5, content="row text", send=channel.send, find=channel.find
    )
    assert found.recovered and found.message_id == 1000
    assert len(channel.messages) == 1
    ((channel_id, _since, content),) = channel.finds
    assert (channel_id, content) == (5, "row text")


async def test_a_post_that_never_happened_is_made_with_the_same_nonce(
    db: async_sessionmaker[AsyncSession],
) -> None:
    job_id = await _job(db)
    outbox, channel = Outbox(db), FakeChannel()
    channel.fail_before_making = True
    with pytest.raises(RuntimeError):
        await outbox.deliver(job_id, SUMMARY, channel_id=5, content="a", send=channel.send, find=channel.find)
    nonce = (await outbox.get(job_id, SUMMARY)).nonce  # type: ignore[union-attr]
    assert 0 < len(nonce) <= 25  # Discord's limit
    channel.fail_before_making = False
    channel.content = "b"
    posted = await outbox.deliver(
        job_id, SUMMARY, channel_id=5, content="b", send=channel.send, find=channel.find
    )
    assert posted.fresh and channel.messages == [(1000, nonce, "b")]


async def test_settled_forgotten_and_recorded_messages(db: async_sessionmaker[AsyncSession]) -> None:
    job_id = await _job(db)
    outbox, channel = Outbox(db), FakeChannel()
    await outbox.settle(job_id, SUMMARY)  # nowhere to post: owed no more
    assert await outbox.done_keys(job_id) == {SUMMARY}
    posted = await outbox.deliver(
        job_id, SUMMARY, channel_id=5, content="x", send=channel.send, find=channel.find
    )
    assert posted.message_id is None and channel.messages == []

    await outbox.record(job_id, "quote", channel_id=5, message_id=77)
    assert await outbox.message_id(job_id, "quote") == 77
    await outbox.forget(job_id, "quote", 77)  # deleted in Discord: the next deliver posts anew
    assert await outbox.get(job_id, "quote") is None


def test_an_armed_crash_point_kills_the_process_and_an_unarmed_one_does_nothing() -> None:
    code = (
        "from bot import crashpoints\n"
        "crashpoints.crashpoint('x')\n"
        "crashpoints.arm(['x'])\n"
        "crashpoints.crashpoint('y')\n"
        "print('alive', flush=True)\n"
        "crashpoints.crashpoint('x')\n"
        "print('not reached', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done
    assert done.stdout == "alive\n" and "CRASHPOINT x: SIGKILL" in done.stderr


def test_production_code_never_arms_a_crash_point() -> None:
    # Only the test launcher (sim/crashing.py) reads the variable or arms points.
    for folder in ("bot", "cogs", "storage", "worker"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            assert "LORAOPS_TEST_CRASH_AT" not in text, path
            assert "crashpoints.arm(" not in text and "import arm" not in text, path
