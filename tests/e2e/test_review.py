"""Review end to end: scored grid rows, the chart, votes by reaction, the summary, approval and delivery,
and early stop — the real bot on the Discord simulator, the RunPod simulator running the real worker with
the sd-scripts stand-in, and faces scored by the real dlib engine against a dataset of real photos.

The stand-in draws samples that fade from another picture (``SDSTANDIN_FACE_FROM``) into the dataset's
photos as the step grows, so face similarity rises through a run. Runs are tiny (12 steps, a checkpoint
and four samples every 4) to keep each test within seconds of scoring.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.review.notify import money
from bot.review.votes import APPROVE, DOWN, UP
from sim.harness import BotHarness

# tests/conftest.py (pytest puts tests/ on sys.path; pyright resolves the e2e one)
from sim.testdata import testdata_faces as faces_dir
from storage.models import Checkpoint, JobEvent, JobState, Vote

from .helpers import (
    PRESET,
    bot_messages,
    eventually,
    faces_bot,
    job_view,
    posted,
    row_of,
    run_job,
    summary_of,
    wait_message,
)

pytestmark = pytest.mark.slow

PROMPTS = 4  # sd15-local samples four prompts


@asynccontextmanager
async def review_bot(
    tmp_path: Path, photos: Sequence[Path], face_from: Path, **standin_env: str
) -> AsyncIterator[BotHarness]:
    """:func:`faces_bot`, and every test that rents a pod ends with the money right."""
    async with faces_bot(tmp_path, photos, face_from=face_from, **standin_env) as h:
        yield h
        await h.assert_ledger_matches_meter()


async def checkpoints_of(h: BotHarness, job_id: int) -> list[Checkpoint]:
    async with h.bot_app.services.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
                )
            ).all()
        )


async def votes_on(h: BotHarness, message_id: int) -> list[tuple[int, str]]:
    async with h.bot_app.services.sessions() as session:
        rows = (await session.scalars(select(Vote).where(Vote.message_id == message_id))).all()
    return [(v.user_id, v.emoji) for v in rows]


async def test_scores_rise_grid_chart_summary_votes_and_approval_delivers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cogs.review")
    photos = sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:3]
    other = faces_dir() / "kit_harington" / "kit_1.jpg"  # early samples show someone else
    async with review_bot(tmp_path, photos, other) as h:
        assert h.trainer is not None and h.reviewer is not None and h.visitor is not None
        job_id = await run_job(h, "steps=12 save_every_n_steps=4 sample_every_n_steps=4")
        summary = await wait_message(h, summary_of(job_id, "elena"), timeout=120)
        job = await job_view(h, job_id)
        assert job.state == JobState.SUCCEEDED.value, job.error

        # Scores rise as the samples turn from another person into the dataset's.
        checkpoints = await checkpoints_of(h, job_id)
        assert [c.step for c in checkpoints] == [4, 8, 12]
        scores = [c.score_mean for c in checkpoints]
        assert all(s is not None for s in scores), scores
        assert scores[0] < scores[1] < scores[2], scores  # type: ignore[operator]
        assert all(c.engine == "dlib-resnet128-v1" and c.face_share for c in checkpoints)

        # One grid row per checkpoint: a JPEG with 👍 👎, remembered as that checkpoint's vote message.
        rows = {c.step: (await wait_message(h, row_of(c.step))) for c in checkpoints}
        for checkpoint in checkpoints:
            row = rows[checkpoint.step]
            assert checkpoint.row_message_id == row.id
            ((name, data),) = h.sim.files_of(row.id)
            assert name.endswith(".jpg") and data[:2] == b"\xff\xd8"
            assert f"face similarity mean {checkpoint.score_mean:.3f}" in row.content
            assert "\n1. ohwx woman, close-up portrait" in row.content and " --n " not in row.content
            await h.sim.wait_until(lambda: {UP, DOWN} <= set(h.sim.message(row.id).reactions))  # noqa: B023

        # The chart: one message, edited with a new PNG at each checkpoint.
        (chart,) = bot_messages(h, lambda m: m.content.startswith(f"Job #{job_id}: face similarity"))
        edits = h.sim.edits_of(chart.id)
        assert "as of step 12/12" in chart.content and len(edits) == len(checkpoints) - 1
        assert all(edit.attachments == [f"job{job_id}-chart.png"] for edit in edits)
        ((name, data),) = h.sim.files_of(chart.id)
        assert name.endswith(".png") and data[:8] == b"\x89PNG\r\n\x1a\n"

        # The summary names the best (highest-scoring) checkpoint and pings the requester and reviewers only.
        best = max(checkpoints, key=lambda c: (round(c.score_mean or 0, 3), -c.step))
        assert f"Best checkpoint: **step {best.step}**" in summary.content
        role = h.sim.role("reviewer")
        assert f"<@{h.trainer.id}>" in summary.content and f"<@&{role.id}>" in summary.content
        mentions = posted(h, summary.content)["allowed_mentions"]
        assert mentions == {"parse": [], "users": [h.trainer.id], "roles": [role.id]}, mentions
        names = [name for name, _ in h.sim.files_of(summary.id)]
        assert names == [f"job{job_id}-grid.jpg", f"job{job_id}-chart.png"]
        # ✅ is added once the message is the job's summary: reactions on it approve from then on.
        await h.sim.wait_until(lambda: APPROVE in h.sim.message(summary.id).reactions)

        # A non-reviewer's 👍 does not count; a reviewer's does, and taking it back removes the vote.
        first = rows[4]
        await h.sim.react(first.id, UP, h.visitor)
        ignored = f"{UP} on job {job_id} by {h.visitor.id} not counted"
        await eventually(lambda: any(ignored in r.getMessage() for r in caplog.records))
        assert await votes_on(h, first.id) == []
        await h.sim.react(first.id, UP, h.reviewer)
        await eventually_async(lambda: votes_on(h, first.id), [(h.reviewer.id, UP)])
        await h.sim.unreact(first.id, UP, h.reviewer)
        await eventually_async(lambda: votes_on(h, first.id), [])

        # The bot restarts: rows and summary are known by their stored message ids.
        await h.restart_bot()

        # ✅ on the summary: a non-reviewer's is not an approval; a reviewer's approves and delivers.
        await h.sim.react(summary.id, APPROVE, h.visitor)
        ignored = f"{APPROVE} on job {job_id} by {h.visitor.id} not counted"
        await eventually(lambda: any(ignored in r.getMessage() for r in caplog.records))
        await h.sim.react(summary.id, APPROVE, h.reviewer)
        delivered = await wait_message(h, lambda m: "delivered:" in m.content, timeout=30)
        assert (
            f"Checkpoint step {best.step} of job #{job_id} approved by <@{h.reviewer.id}>"
            in delivered.content
        )
        assert posted(h, delivered.content)["allowed_mentions"] == {
            "parse": []
        }  # approvers named, not pinged
        loras = tmp_path / "comfyui" / "loras"
        lora = loras / f"elena-ohwx-s{best.step}.safetensors"
        assert lora.is_file() and str(lora) in delivered.content
        approved = next(c for c in await checkpoints_of(h, job_id) if c.step == best.step)
        assert approved.approved and lora.read_bytes() == h.bot_app.services.blobs.get(approved.sha256)
        sidecar = json.loads(lora.with_suffix(".json").read_text())
        assert sidecar["activation text"] == "ohwx" and sidecar["preferred weight"] == 0.8
        assert "Trigger word: `ohwx`" in delivered.content and "recommended weight 0.8" in delivered.content
        assert f"<lora:elena-ohwx-s{best.step}:0.8>" in delivered.content
        assert "Sample prompts:" in delivered.content and "1. ohwx woman" in delivered.content

        # /train samples re-posts a row (anyone may look); /train promote is for trainers.
        look = await h.sim.invoke_slash("train samples", {"job": job_id, "step": 8}, user=h.visitor)
        shown = await look.response(timeout=20)
        assert shown is not None and not look.ephemeral and "Checkpoint step 8/12" in shown.content
        ((name, data),) = h.sim.files_of(shown.id)
        assert name == f"job{job_id}-step8.jpg" and data[:2] == b"\xff\xd8"
        refused = await h.sim.invoke_slash("train promote", {"job": job_id, "step": 4}, user=h.visitor)
        answer = await refused.response()
        assert answer is not None and refused.ephemeral and "trainer" in answer.content
        promote = await h.sim.invoke_slash("train promote", {"job": job_id, "step": 4}, user=h.trainer)
        done = await promote.response(timeout=30)
        assert done is not None and f"Checkpoint step 4 of job #{job_id} promoted by" in done.content
        assert (loras / "elena-ohwx-s4.safetensors").is_file()
        assert (loras / "elena-ohwx-s4.json").is_file()


async def eventually_async(read: Callable[[], object], expected: object, timeout: float = 10) -> None:
    """Poll an async read until it returns ``expected``."""
    async with asyncio.timeout(timeout):
        while True:
            value = await read()  # type: ignore[misc]
            if value == expected:
                return
            await asyncio.sleep(0.05)


async def test_early_stop_when_the_face_is_lost_stops_the_pod_and_says_what_it_saved(
    tmp_path: Path,
) -> None:
    # The run learns the body and loses the face: the dataset is a full-body photo whose face is too
    # small to find in a sample, early samples show the same man's close-up fading out.
    photos = [faces_dir() / "biden" / "biden_1.jpg"]
    close_up = faces_dir() / "biden" / "biden_2.jpg"
    async with review_bot(tmp_path, photos, close_up, SDSTANDIN_STEP_SECONDS="0.5") as h:
        assert h.runpod is not None
        overrides = (
            "steps=40 save_every_n_steps=4 sample_every_n_steps=4 "
            "preset.early_stop_patience=1 face.crops_subset=false"
        )
        job_id = await run_job(h, overrides, gpu="NVIDIA H100 80GB HBM3")
        stopped = await wait_message(h, lambda m: m.content.startswith(f"Job #{job_id} stops early"))
        summary = await wait_message(h, summary_of(job_id, "elena"), timeout=120)

        job = await job_view(h, job_id)
        assert job.state == JobState.SUCCEEDED.value, job.error
        assert job.early_stop_patience == 1 and job.total_steps == 40
        # The pod was stopped before the run's end, and is gone.
        assert job.step < job.total_steps and job.pod_terminated_at is not None
        pod = h.runpod.pods[job.pod_id]  # type: ignore[index]
        assert pod.phase == "terminated"
        checkpoints = await checkpoints_of(h, job_id)
        assert checkpoints and max(c.step for c in checkpoints) < 40

        async with h.bot_app.services.sessions() as session:
            events = (
                await session.scalars(
                    select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "early_stop")
                )
            ).all()
            states = (
                await session.scalars(
                    select(JobEvent.to_state).where(JobEvent.job_id == job_id, JobEvent.kind == "state")
                )
            ).all()
        (event,) = events
        assert states[-2:] == [JobState.COLLECTING.value, JobState.SUCCEEDED.value]
        assert JobState.CANCELLED.value not in states

        # The message says how much stopping saved: the steps not run, at the run's rate and the pod's price.
        assert "has not improved" in stopped.content
        said = bot_messages(h, lambda m: m.content.startswith(f"Job #{job_id} stops early"))
        assert said == [stopped]  # said once, though later checkpoints reach the same decision
        saved = Decimal(str(event.payload["saved_usd"]))
        assert saved > 0 and f"this saves about {money(saved)}" in stopped.content
        assert job.price_per_hour is not None and job.price_per_hour > 2  # the H100's price
        assert f"Stopped early: {event.payload['reason']} (saved about {money(saved)})" in summary.content


async def test_early_stop_is_carried_out_by_the_domain_with_no_review_cog_loaded(tmp_path: Path) -> None:
    """Early stop is money: it must not depend on a Discord cog being there to call it."""
    photos = [faces_dir() / "biden" / "biden_1.jpg"]
    close_up = faces_dir() / "biden" / "biden_2.jpg"
    async with review_bot(tmp_path, photos, close_up, SDSTANDIN_STEP_SECONDS="0.5") as h:
        assert h.runpod is not None
        await h.bot_app.bot.unload_extension("cogs.review")
        overrides = (
            "steps=40 save_every_n_steps=4 sample_every_n_steps=4 "
            "preset.early_stop_patience=1 face.crops_subset=false"
        )
        job_id = await run_job(h, overrides, gpu="NVIDIA H100 80GB HBM3")

        async with asyncio.timeout(120):
            while not JobState((job := await job_view(h, job_id)).state).is_terminal:
                await asyncio.sleep(0.2)
        assert job.state == JobState.SUCCEEDED.value, job.error
        assert job.step < job.total_steps and job.pod_terminated_at is not None
        assert h.runpod.pods[job.pod_id].phase == "terminated"  # type: ignore[index]
        async with h.bot_app.services.sessions() as session:
            early = (
                await session.scalars(
                    select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "early_stop")
                )
            ).all()
        assert len(early) == 1 and Decimal(str(early[0].payload["saved_usd"])) > 0
        # Nobody published the review: no rows, no "stops early" message, yet the run stopped.
        assert not bot_messages(h, lambda m: m.content.startswith(f"Job #{job_id} stops early"))
        assert not bot_messages(h, lambda m: m.content.startswith("**Checkpoint step"))


async def test_a_failed_run_is_summarised_with_its_cause_and_log_and_pings_only_the_requester(
    tmp_path: Path,
) -> None:
    photos = sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:2]
    other = faces_dir() / "kit_harington" / "kit_1.jpg"
    async with review_bot(tmp_path, photos, other, SDSTANDIN_NAN_AT_STEP="3") as h:
        assert h.trainer is not None
        job_id = await run_job(h, "steps=8 save_every_n_steps=4 sample_every_n_steps=4")
        summary = await wait_message(h, summary_of(job_id, "elena"), timeout=120)
        job = await job_view(h, job_id)
        assert job.state == JobState.FAILED.value and job.error is not None
        assert (
            f"training job #{job_id} for **elena** (trigger `ohwx`, preset {PRESET}) failed."
            in summary.content
        )
        assert "Cause: loss became NaN" in summary.content
        assert "Last log lines:\n```" in summary.content and "avr_loss=nan" in summary.content
        mentions = posted(h, summary.content)["allowed_mentions"]
        assert mentions["parse"] == [] and mentions["users"] == [h.trainer.id]  # type: ignore[index]
        assert not mentions.get("roles")  # type: ignore[union-attr]
        assert job.summary_message_id is None and APPROVE not in h.sim.message(summary.id).reactions
