"""Two more crash points (issue 12's residual limits): the early-stop note, and the quote's message id.

As in ``test_crash_points.py``: the real bot process SIGKILLs itself at one armed point (armed only by the
test launcher ``python -m sim.crashing``), a second process restarts over the same database, and the job
must end in the right state with each message posted exactly once (counted in the Discord simulator), no
pod billing, and the ledger equal to the RunPod simulator's meter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from bot.review.notify import money
from bot.review.votes import APPROVE
from sim.harness import confirm_job, quoted_job_id
from sim.testdata import testdata_faces as faces_dir
from storage.models import JobState

from .process import ProcessRig, bot_messages, job_row, query
from .test_crash_points import (
    CHECKPOINT_STEPS,
    OVERRIDES,
    PRESET,
    dataset,
    died_at,
    first_bot,
    restart,
    rig_for,
    settled,
    summary,
)

pytestmark = pytest.mark.slow


@asynccontextmanager
async def face_lost_rig(tmp_path: Path) -> AsyncIterator[ProcessRig]:
    """A run that learns the body and loses the face (as in test_review's early-stop test): samples show
    the man's close-up fading out while the dataset is a full-body photo, so the review stops it early."""
    standin = {
        "SDSTANDIN_FACE_FROM": str(faces_dir() / "biden" / "biden_2.jpg"),
        "SDSTANDIN_STEP_SECONDS": "0.5",
    }
    async with rig_for(tmp_path, standin_env=standin) as rig:
        yield rig


async def full_body_dataset(rig: ProcessRig) -> None:
    sim, trainer = rig.sim, rig.trainer
    assert trainer is not None
    created = await sim.invoke_slash(
        "dataset create", {"name": "elena", "trigger": "ohwx", "class": "woman"}, user=trainer
    )
    assert (await created.response(timeout=20)) is not None and not created.ephemeral
    photo = faces_dir() / "biden" / "biden_1.jpg"
    added = await sim.invoke_slash(
        "dataset add", {"name": "elena"}, user=trainer, attachments=[(photo.name, photo.read_bytes())]
    )
    report = await added.response(timeout=120)
    assert report is not None and not added.ephemeral
    await sim.wait_until(lambda: "added 1 image" in sim.message(report.id).content, timeout=120)


def stop_notes(rig: ProcessRig, job_id: int) -> list[str]:
    return [
        m.content for m in bot_messages(rig.sim, lambda m: m.content.startswith(f"Job #{job_id} stops early"))
    ]


async def test_killed_after_the_review_stopped_the_run_before_its_note(tmp_path: Path) -> None:
    async with face_lost_rig(tmp_path) as rig:
        assert rig.trainer is not None
        bot = await first_bot(rig, "review.stopped_early")
        await full_body_dataset(rig)
        overrides = (
            "steps=40 save_every_n_steps=4 sample_every_n_steps=4 "
            "preset.early_stop_patience=1 face.crops_subset=false"
        )
        options = {
            "dataset": "elena",
            "preset": PRESET,
            "overrides": overrides,
            "gpu": "NVIDIA H100 80GB HBM3",
        }
        handle = await rig.sim.invoke_slash("train start", options, user=rig.trainer)
        quote = await handle.response(timeout=60)
        assert quote is not None
        job_id = quoted_job_id(quote)
        assert job_id is not None, quote.content
        await confirm_job(rig.sim, job_id, quote, rig.trainer)
        await died_at(rig, bot, "review.stopped_early")

        # The stop is stored (the run goes on to collecting what it made); nobody has been told.
        assert job_row(rig.db, job_id)["state"] == JobState.COLLECTING.value
        (event,) = query(
            rig.db, "SELECT payload FROM job_events WHERE job_id = ? AND kind = 'early_stop'", job_id
        )
        assert stop_notes(rig, job_id) == []

        await restart(rig)
        done = await summary(rig, job_id)
        steps = [r["step"] for r in query(rig.db, "SELECT step FROM checkpoints WHERE job_id = ?", job_id)]
        assert steps and max(steps) < 40
        await settled(rig, job_id, JobState.SUCCEEDED, rows=steps)

        # The note, posted once by the restarted process, says what stopping saved.
        (note,) = stop_notes(rig, job_id)
        assert "has not improved" in note
        saved = Decimal(str(json.loads(event["payload"])["saved_usd"]))
        assert saved > 0 and f"this saves about {money(saved)}" in note
        assert "Stopped early:" in done.content
        # Once: a further restart finds it posted and says nothing again.
        rig.bots[-1].sigkill()
        await restart(rig)
        await asyncio.sleep(5)
        assert len(stop_notes(rig, job_id)) == 1


async def test_killed_after_showing_the_quote_before_recording_it(tmp_path: Path) -> None:
    async with rig_for(tmp_path) as rig:
        sim, trainer = rig.sim, rig.trainer
        assert trainer is not None
        bot = await first_bot(rig, "quote.shown")
        await dataset(rig)
        options = {"dataset": "elena", "preset": PRESET, "overrides": OVERRIDES}
        handle = await sim.invoke_slash("train start", options, user=trainer)
        quote = await handle.response(timeout=60)
        assert quote is not None
        job_id = quoted_job_id(quote)
        assert job_id is not None, quote.content
        await died_at(rig, bot, "quote.shown")
        assert job_row(rig.db, job_id)["state"] == JobState.PENDING.value

        # The requester's ✅ on the quote while no bot runs: Discord will not replay it.
        await sim.react(quote.id, APPROVE, trainer)
        await restart(rig)
        await sim.wait_until(lambda: "Confirmed by" in sim.message(quote.id).content, timeout=120)
        await summary(rig, job_id)
        await settled(rig, job_id, JobState.SUCCEEDED, rows=CHECKPOINT_STEPS)
        assert sim.message(quote.id).content.count("Confirmed by") == 1
        assert sim.message(quote.id).components == []
        confirmed = query(
            rig.db, "SELECT payload FROM job_events WHERE job_id = ? AND to_state = 'provisioning'", job_id
        )
        assert len(confirmed) == 1
