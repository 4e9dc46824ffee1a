"""Discord misbehaving while a job runs: 5xx answers to posts and edits, gateway drops with a resume or
with an invalidated session. Every message lands exactly once and nothing the team did is lost.

The real bot (in this process) against the Discord simulator, whose failures are Discord's own: a 5xx
may come *after* the message was made (the client cannot tell), discord.py retries 5xx answers itself,
a RESUME replays the events missed, an invalidated session (op 9) does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.review.votes import APPROVE, UP
from sim.discord import SimMessage
from sim.harness import BotHarness
from sim.testdata import testdata_faces as faces_dir
from storage.models import Job, JobState, OwedMessage, Vote

from .helpers import bot_messages, eventually, faces_bot, progress_of, row_of, run_job, summary_of

pytestmark = pytest.mark.slow

MESSAGES = r"^/channels/\d+/messages$"
ONE_MESSAGE = r"^/channels/\d+/messages/\d+$"
OVERRIDES = "steps=12 save_every_n_steps=4 sample_every_n_steps=4"


@asynccontextmanager
async def bot_with_job_sims(tmp_path: Path, **standin_env: str) -> AsyncIterator[BotHarness]:
    photos = sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:3]
    async with faces_bot(tmp_path, photos, **standin_env) as h:
        yield h


async def job_row(h: BotHarness, job_id: int) -> Job:
    async with h.bot_app.services.sessions() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    return job


async def owed_open(h: BotHarness, job_id: int) -> list[str]:
    async with h.bot_app.services.sessions() as session:
        rows = await session.scalars(
            select(OwedMessage.key).where(OwedMessage.job_id == job_id, OwedMessage.done_at.is_(None))
        )
        return list(rows.all())


async def test_5xx_on_posts_and_edits_never_lose_or_double_a_message(tmp_path: Path) -> None:
    async with bot_with_job_sims(tmp_path) as h:
        sim = h.sim
        # Every job post and edit meets a 5xx first: the progress post gets a 500 *after* Discord made
        # the message (discord.py retries with the same nonce: Discord returns the message it made),
        # the next posts a 502 before, the edits a 503 and a 500 after the edit was made.
        sim.inject_error("POST", MESSAGES, 500, after=True)
        sim.inject_error("POST", MESSAGES, 502, times=2)
        sim.inject_error("PATCH", ONE_MESSAGE, 503)
        sim.inject_error("PATCH", ONE_MESSAGE, 500, after=True)
        job_id = await run_job(h, OVERRIDES)
        await sim.wait_until(lambda: bot_messages(h, summary_of(job_id)), timeout=240)
        job = await job_row(h, job_id)
        assert job.state == JobState.SUCCEEDED.value, job.error
        failed = [r for r in sim.requests if r.status >= 500]
        assert len(failed) == 5, [(r.method, r.path, r.status) for r in failed]

        (progress,) = bot_messages(h, progress_of(job_id))
        assert progress.id == job.progress_message_id
        # Its final edit can queue behind the channel's edit bucket (and a 5xx retry) after the summary.
        await sim.wait_until(lambda: "· finished" in sim.message(progress.id).content, timeout=90)
        assert len(bot_messages(h, progress_of(job_id))) == 1
        assert len(bot_messages(h, summary_of(job_id))) == 1
        for step in (4, 8, 12):
            assert len(bot_messages(h, row_of(step))) == 1, step
        # A post that met a 5xx after Discord made it is done once discord.py's retry (same nonce) returns.
        async with asyncio.timeout(60):
            while await owed_open(h, job_id):
                await asyncio.sleep(0.2)
        await h.assert_ledger_matches_meter()


async def test_a_post_that_keeps_failing_is_owed_and_posted_once_later(tmp_path: Path) -> None:
    async with bot_with_job_sims(tmp_path) as h:
        sim = h.sim
        job_id = await run_job(h, OVERRIDES)
        await sim.wait_until(lambda: bot_messages(h, row_of(12)), timeout=240)
        # discord.py gives up after five 5xx answers: the summary post fails for good (for now) …
        sim.inject_error("POST", MESSAGES, 500, times=5, after=True)
        await eventually(lambda: not [i for i in sim.ratelimiter.injections if i.times > 0], timeout=240)
        await eventually(lambda: h.bot_app.services.training is not None, timeout=1)
        training = h.bot_app.services.training
        assert training is not None
        await eventually(lambda: training.orchestrator.is_driving(job_id) is False, timeout=60)
        job = await job_row(h, job_id)
        assert job.state == JobState.SUCCEEDED.value, job.error
        made = bot_messages(h, summary_of(job_id))  # Discord made it (and answered 500 five times)
        assert len(made) == 1
        assert "summary" in await owed_open(h, job_id)

        # … until the reconciler's next pass announces what is owed: it finds the message Discord made.
        report = await training.reconciler.owed.finish(startup=True)
        assert job_id in report.endings
        assert await owed_open(h, job_id) == []
        assert len(bot_messages(h, summary_of(job_id))) == 1
        assert (await job_row(h, job_id)).summary_message_id == made[0].id
        await sim.wait_until(lambda: APPROVE in sim.message(made[0].id).reactions)
        await h.assert_ledger_matches_meter()


async def test_gateway_drops_while_a_job_runs_lose_nothing_the_team_did(tmp_path: Path) -> None:
    async with bot_with_job_sims(tmp_path, SDSTANDIN_STEP_SECONDS="0.3") as h:
        sim = h.sim
        job_id = await run_job(h, OVERRIDES)
        row4: list[SimMessage] = await sim.wait_until(lambda: bot_messages(h, row_of(4)), timeout=240)

        # A drop with a resume: the 👍 made in the gap is replayed with the missed events.
        sim.gateway.hold_resumes()
        await sim.drop_gateway(4000)
        await sim.react(row4[0].id, UP, h.reviewer)
        sim.gateway.release_resumes()
        await sim.wait_for_frame(t="RESUMED", timeout=90)

        # A drop whose session is invalidated: Discord replays nothing; the bot, identified anew,
        # reads the reactions of its open review messages.
        row8: list[SimMessage] = await sim.wait_until(lambda: bot_messages(h, row_of(8)), timeout=240)
        sim.gateway.hold_resumes()
        await sim.drop_gateway(4000)
        await sim.react(row8[0].id, UP, h.reviewer)
        await sim.react(row8[0].id, UP, h.visitor)  # not a reviewer: never counts
        sim.gateway.invalidate_sessions()  # the events of the gap go with the session
        sim.gateway.release_resumes()
        await sim.wait_for_frame(op=9, timeout=90)  # INVALID_SESSION: the bot must IDENTIFY anew
        await sim.wait_for_bot(timeout=90)

        async def votes() -> set[tuple[int, int, str]]:
            async with h.bot_app.services.sessions() as session:
                rows = (await session.scalars(select(Vote).where(Vote.job_id == job_id))).all()
            return {(v.message_id, v.user_id, v.emoji) for v in rows}

        expected = {(row4[0].id, h.reviewer.id, UP), (row8[0].id, h.reviewer.id, UP)}
        async with asyncio.timeout(30):
            while await votes() != expected:
                await asyncio.sleep(0.1)

        summary: list[SimMessage] = await sim.wait_until(
            lambda: bot_messages(h, summary_of(job_id)), timeout=120
        )
        await sim.wait_until(lambda: APPROVE in sim.message(summary[0].id).reactions, timeout=90)
        job = await job_row(h, job_id)
        assert job.state == JobState.SUCCEEDED.value, job.error
        assert len(bot_messages(h, summary_of(job_id))) == 1 and summary[0].id == job.summary_message_id
        (progress,) = bot_messages(h, progress_of(job_id))
        await sim.wait_until(lambda: "· finished" in sim.message(progress.id).content, timeout=90)
        assert await votes() == expected
        await h.assert_ledger_matches_meter()
