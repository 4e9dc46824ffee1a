"""A crash at every step of a job: the real bot process SIGKILLs itself at an exact moment, and restarts.

Each test runs the bot as an OS process (``tests/e2e/process.py``) with one crash point armed
(:mod:`bot.crashpoints`, armed only by the test launcher ``python -m sim.crashing``): the process dies
there without any clean-up, exactly as under ``kill -9``. A second, unarmed process over the same
database and data directory must then bring the job to the right state with every message the team
would have seen posted exactly once (asserted on the Discord simulator's state), no pod left billing,
and the ledger equal to the RunPod simulator's meter.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.review.votes import APPROVE, DOWN, UP
from sim.discord import SimMessage
from sim.harness import confirm_job, quote_job
from sim.meter import assert_sqlite_ledger_matches_meter
from sim.testdata import testdata_faces as faces_dir
from storage.models import JobState

from .helpers import progress_of, row_of, summary_of
from .process import (
    BotProcess,
    ProcessRig,
    bot_messages,
    job_row,
    obama_photos,
    poll_until,
    query,
    steps_shown,
    wait_for_new_bot_session,
)

pytestmark = pytest.mark.slow

PRESET = "sd15-local"
STEPS = 40
CHECKPOINT_STEPS = [20, 40]
OVERRIDES = f"steps={STEPS} save_every_n_steps=20 sample_every_n_steps=20"
ENDED_WORDS = {JobState.SUCCEEDED: "finished", JobState.CANCELLED: "cancelled"}  # the progress message


@asynccontextmanager
async def rig_for(
    tmp_path: Path, *, faces: bool = False, standin_env: dict[str, str] | None = None
) -> AsyncIterator[ProcessRig]:
    """The simulators and the bot's environment. ``faces``: samples turn into the dataset's person, so
    checkpoints score and the summary can be approved with ✅. ``standin_env``: other stand-in settings."""
    standin = {"SDSTANDIN_FACE_FROM": str(faces_dir() / "kit_harington" / "kit_1.jpg")} if faces else {}
    standin |= standin_env or {}
    settings = {"COMFYUI_LORAS_DIR": str(tmp_path / "comfyui" / "loras"), "FACE_ENGINE": "dlib"}
    rig = ProcessRig(tmp_path, standin_env=standin, settings=settings)
    failed = True
    try:
        await rig.start()
        yield rig
        failed = False
    finally:
        await rig.close(failed)


async def first_bot(rig: ProcessRig, crash_at: str | None) -> BotProcess:
    bot = rig.bot(crash_at=crash_at)
    await rig.sim.wait_for_bot(timeout=120)
    await rig.sim.wait_until(lambda: rig.sim.commands(rig.sim.guild), timeout=60)  # synced at start-up
    return bot


async def dataset(rig: ProcessRig) -> None:
    sim, trainer = rig.sim, rig.trainer
    assert trainer is not None
    created = await sim.invoke_slash(
        "dataset create", {"name": "elena", "trigger": "ohwx", "class": "woman"}, user=trainer
    )
    assert (await created.response(timeout=20)) is not None and not created.ephemeral
    photos = obama_photos()
    added = await sim.invoke_slash(
        "dataset add", {"name": "elena"}, user=trainer, attachments=[(p.name, p.read_bytes()) for p in photos]
    )
    report = await added.response(timeout=120)
    assert report is not None and not added.ephemeral
    await sim.wait_until(lambda: "added 3 images" in sim.message(report.id).content, timeout=120)


async def quote_job_of(rig: ProcessRig) -> tuple[int, SimMessage]:
    """``/train start``: the pending job and its quote."""
    assert rig.trainer is not None
    options = {"dataset": "elena", "preset": PRESET, "overrides": OVERRIDES}
    return await quote_job(rig.sim, options, rig.trainer, within=60)


async def died_at(rig: ProcessRig, bot: BotProcess, point: str, timeout: float = 240) -> None:
    """Wait until the bot killed itself at ``point``."""
    async with asyncio.timeout(timeout):
        while bot.alive():
            await asyncio.sleep(0.1)
    bot.reap()
    assert bot.proc is not None
    assert bot.proc.returncode == -signal.SIGKILL, bot.proc.returncode
    assert f"CRASHPOINT {point}: SIGKILL" in rig.log_text()


async def restart(rig: ProcessRig) -> BotProcess:
    known = set(rig.sim.gateway.sessions)
    bot = rig.bot()
    await wait_for_new_bot_session(rig.sim, known, timeout=120)
    return bot


def chart_of(job_id: int) -> Callable[[SimMessage], bool]:
    return lambda m: m.content.startswith(f"Job #{job_id}: face similarity")


async def summary(rig: ProcessRig, job_id: int, timeout: float = 240) -> SimMessage:
    found: list[SimMessage] = await rig.sim.wait_until(
        lambda: bot_messages(rig.sim, summary_of(job_id)), timeout=timeout
    )
    return found[0]


async def settled(rig: ProcessRig, job_id: int, state: JobState, *, rows: list[int]) -> None:
    """The end every crash test must reach: the state, each message once, no pod, ledger == meter."""
    sim, runpod = rig.sim, rig.runpod
    assert runpod is not None
    job = job_row(rig.db, job_id)
    assert job["state"] == state.value, (job["state"], job["error"])
    await runpod.wait_for(lambda: runpod.live_pods() == [], within=30)
    assert job["pod_terminated_at"] is not None
    assert len(runpod.calls_for("podFindAndDeployOnDemand")) == 1  # no second pod

    # Exactly one progress message, showing how the job ended; one summary; one row per checkpoint.
    await asyncio.sleep(1.5)  # let edits and posts that are still owed land before counting
    (progress,) = bot_messages(sim, progress_of(job_id))
    assert progress.id == job["progress_message_id"]
    head = progress.content.splitlines()[0]
    assert f"· {ENDED_WORDS[state]}" in head, progress.content
    assert len(bot_messages(sim, summary_of(job_id))) == 1
    for step in rows:
        assert len(bot_messages(sim, row_of(step))) == 1, step
    assert len(bot_messages(sim, chart_of(job_id))) <= 1
    owed = query(rig.db, "SELECT key FROM owed_messages WHERE job_id = ? AND done_at IS NULL", job_id)
    assert [r["key"] for r in owed] == []

    # Money: the ledger holds what RunPod billed (compute and storage), to the cent.
    assert_sqlite_ledger_matches_meter(rig.db, runpod)


async def confirmed_job(rig: ProcessRig, crash_at: str | None) -> tuple[BotProcess, int, SimMessage]:
    """A first bot process (with ``crash_at`` armed), the dataset, and a job quoted and confirmed."""
    bot = await first_bot(rig, crash_at)
    await dataset(rig)
    job_id, quote = await quote_job_of(rig)
    assert rig.trainer is not None
    await confirm_job(rig.sim, job_id, quote, rig.trainer)
    return bot, job_id, quote


async def killed_at(rig: ProcessRig, point: str) -> tuple[int, SimMessage]:
    """A confirmed job whose bot process then killed itself at ``point``: the job and its quote."""
    bot, job_id, quote = await confirmed_job(rig, point)
    await died_at(rig, bot, point)
    return job_id, quote


async def restarted_to_the_end(
    rig: ProcessRig, job_id: int, state: JobState = JobState.SUCCEEDED, rows: list[int] = CHECKPOINT_STEPS
) -> SimMessage:
    """A second process brings the job to ``state`` and everything is :func:`settled`; the summary."""
    await restart(rig)
    done = await summary(rig, job_id)
    await settled(rig, job_id, state, rows=rows)
    return done


async def test_killed_after_posting_the_progress_message_before_storing_its_id(tmp_path: Path) -> None:
    async with rig_for(tmp_path) as rig:
        job_id, quote = await killed_at(rig, "outbox.sent:progress")
        (progress,) = bot_messages(rig.sim, progress_of(job_id))  # posted, its id never stored
        # Down longer than Discord remembers a nonce: only finding the message again avoids a second.
        rig.sim.nonce_window = timedelta(0)
        assert "Confirmed by" not in rig.sim.message(quote.id).content  # killed before the quote edit
        assert job_row(rig.db, job_id)["progress_message_id"] is None

        await restarted_to_the_end(rig, job_id)
        # The message found again is the one edited to the end (no second message).
        assert bot_messages(rig.sim, progress_of(job_id))[0].id == progress.id
        assert steps_shown(rig.sim, progress.id)[-1] == STEPS
        # The quote, never updated by the killed process, says it was confirmed (no buttons left).
        await rig.sim.wait_until(lambda: "Confirmed by" in rig.sim.message(quote.id).content, timeout=120)
        assert rig.sim.message(quote.id).components == []
        assert "within 15 minutes" not in rig.sim.message(quote.id).content


async def test_killed_after_marking_a_checkpoint_announced_before_its_row(tmp_path: Path) -> None:
    async with rig_for(tmp_path) as rig:
        job_id, _ = await killed_at(rig, "checkpoint.announced")
        assert bot_messages(rig.sim, row_of(CHECKPOINT_STEPS[0])) == []

        await restarted_to_the_end(rig, job_id)
        rows = query(rig.db, "SELECT step, row_message_id FROM checkpoints WHERE job_id = ?", job_id)
        for row in rows:  # the row appeared and reviewers' reactions on it are its votes
            (message,) = bot_messages(rig.sim, row_of(row["step"]))
            assert row["row_message_id"] == message.id
            assert {UP, DOWN} <= set(rig.sim.message(message.id).reactions)


async def test_acknowledged_then_the_pod_went_by_itself_while_the_bot_was_dead(tmp_path: Path) -> None:
    async with rig_for(tmp_path) as rig:
        job_id, _ = await killed_at(rig, "collect.acked")
        runpod = rig.runpod
        assert runpod is not None
        # The worker terminates its own pod once acknowledged; the bot is not there to see it.
        await runpod.wait_for(lambda: runpod.live_pods() == [], within=30)
        (pod,) = runpod.pods.values()
        assert pod.terminated_by == "pod"
        assert job_row(rig.db, job_id)["state"] == JobState.COLLECTING.value
        await asyncio.sleep(3)  # the gap a restart takes: it must not be billed
        restarted_at = datetime.now(UTC)

        await restarted_to_the_end(rig, job_id)
        # Billed until the pod went (the acknowledgement), not until the new process noticed.
        ended = datetime.fromisoformat(str(job_row(rig.db, job_id)["pod_terminated_at"]))
        assert ended.replace(tzinfo=ended.tzinfo or UTC) < restarted_at


async def test_killed_after_storing_succeeded_before_the_summary(tmp_path: Path) -> None:
    async with rig_for(tmp_path) as rig:
        job_id, _ = await killed_at(rig, "transition:succeeded")
        assert job_row(rig.db, job_id)["state"] == JobState.SUCCEEDED.value
        assert bot_messages(rig.sim, summary_of(job_id)) == []

        done = await restarted_to_the_end(rig, job_id)
        assert "finished" in done.content


async def test_killed_after_posting_the_summary_before_storing_its_id(tmp_path: Path) -> None:
    async with rig_for(tmp_path, faces=True) as rig:
        job_id, _ = await killed_at(rig, "outbox.sent:summary")
        posted = await summary(rig, job_id, timeout=5)
        assert job_row(rig.db, job_id)["summary_message_id"] is None

        await restart(rig)
        await rig.sim.wait_until(
            lambda: job_row(rig.db, job_id)["summary_message_id"] == posted.id, timeout=60
        )
        await settled(rig, job_id, JobState.SUCCEEDED, rows=CHECKPOINT_STEPS)
        assert APPROVE in rig.sim.message(posted.id).reactions

        # A reviewer's ✅ on it approves and delivers, once.
        assert rig.reviewer is not None
        await rig.sim.react(posted.id, APPROVE, rig.reviewer)
        delivered = await rig.sim.wait_until(
            lambda: bot_messages(rig.sim, lambda m: f"of job #{job_id} approved by" in m.content), timeout=60
        )
        await asyncio.sleep(1)
        assert len(bot_messages(rig.sim, lambda m: f"of job #{job_id} approved by" in m.content)) == 1
        assert f"<@{rig.reviewer.id}>" in delivered[0].content


async def test_cancel_stored_then_killed_at_the_terminate_call(tmp_path: Path) -> None:
    async with rig_for(tmp_path) as rig:
        bot, job_id, _ = await confirmed_job(rig, "stop:cancelled")
        progress: list[SimMessage] = await rig.sim.wait_until(
            lambda: bot_messages(rig.sim, progress_of(job_id)), timeout=60
        )
        await rig.sim.wait_until(
            lambda: any(s >= 2 for s in steps_shown(rig.sim, progress[0].id)), timeout=60
        )
        assert rig.trainer is not None
        await rig.sim.invoke_slash("train cancel", {"job": job_id}, user=rig.trainer)
        await died_at(rig, bot, "stop:cancelled")
        assert job_row(rig.db, job_id)["state"] == JobState.CANCELLED.value
        assert rig.runpod is not None and len(rig.runpod.live_pods()) == 1  # still billing

        cancelled = await restarted_to_the_end(rig, job_id, JobState.CANCELLED, rows=[])
        assert "was cancelled" in cancelled.content


async def test_reactions_made_while_the_bot_was_down_are_applied_once(tmp_path: Path) -> None:
    async with rig_for(tmp_path, faces=True) as rig:
        sim = rig.sim
        assert rig.trainer is not None and rig.reviewer is not None
        bot = await first_bot(rig, None)
        await dataset(rig)
        job_id, quote = await quote_job_of(rig)

        # The requester's ✅ on the quote while no bot runs (once the bot has recorded its quote).
        await poll_until(
            lambda: query(rig.db, "SELECT 1 FROM owed_messages WHERE key = 'quote' AND job_id = ?", job_id)
        )
        bot.sigkill()
        await sim.react(quote.id, APPROVE, rig.trainer)
        await restart(rig)
        await sim.wait_until(lambda: "Confirmed by" in sim.message(quote.id).content, timeout=120)
        posted = await summary(rig, job_id)
        await sim.wait_until(lambda: APPROVE in sim.message(posted.id).reactions, timeout=120)
        (row20,) = bot_messages(sim, row_of(20))
        (row40,) = bot_messages(sim, row_of(40))

        # While the bot is down again: a reviewer's 👍 on a row and ✅ on the summary, the trainer's 👍
        # (not a reviewer: never a vote).
        rig.bots[-1].sigkill()
        await sim.react(row20.id, UP, rig.reviewer)
        await sim.react(row40.id, UP, rig.trainer)
        await sim.react(posted.id, APPROVE, rig.reviewer)

        def delivered() -> list[SimMessage]:
            return bot_messages(sim, lambda m: f"of job #{job_id} approved by" in m.content)

        await restart(rig)
        await sim.wait_until(delivered, timeout=180)
        votes = query(rig.db, "SELECT message_id, user_id, emoji FROM votes WHERE job_id = ?", job_id)
        assert {(v["message_id"], v["user_id"], v["emoji"]) for v in votes} == {
            (row20.id, rig.reviewer.id, UP),
            (posted.id, rig.reviewer.id, APPROVE),
        }
        approved = query(rig.db, "SELECT step FROM checkpoints WHERE job_id = ? AND approved", job_id)
        assert len(approved) == 1

        # Once: a further restart reads the same reactions and changes nothing.
        rig.bots[-1].sigkill()
        await restart(rig)
        await asyncio.sleep(5)
        assert len(delivered()) == 1
        again = query(rig.db, "SELECT message_id, user_id, emoji FROM votes WHERE job_id = ?", job_id)
        assert len(again) == len(votes)
        await settled(rig, job_id, JobState.SUCCEEDED, rows=CHECKPOINT_STEPS)
