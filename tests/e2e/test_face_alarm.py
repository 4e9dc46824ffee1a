"""Is the face being learned? The alarm, stop now / let it run, retry with the suggested changes, and
memorisation — the real bot on the Discord simulator, the RunPod simulator running the real worker with
the sd-scripts stand-in, faces scored by the real dlib engine against a dataset of real photos.

The stand-in plays the studio's failure (``SDSTANDIN_SAMPLES=failing``: the samples take the dataset's
body, clothes and scene while the face stays another person's, and the loss falls as usual) and an
over-trained run (``memorising``: from 70 % of the run on, the samples are the training photos).
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.review.notify import money
from sim.harness import BotHarness, confirm_button, quoted_job_id
from sim.testdata import testdata_faces as faces_dir
from storage.models import Checkpoint, JobEvent, JobState

from .helpers import PRESET, bot_messages, faces_bot, job_view, posted, run_job, wait_message

pytestmark = pytest.mark.slow


async def events(h: BotHarness, job_id: int, kind: str) -> list[JobEvent]:
    async with h.bot_app.services.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == kind)
                )
            ).all()
        )


async def test_failing_run_alarms_at_the_second_checkpoint_stop_keeps_checkpoints_retry_quotes(
    tmp_path: Path,
) -> None:
    photos = sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:3]
    async with faces_bot(tmp_path, photos, SDSTANDIN_SAMPLES="failing", SDSTANDIN_STEP_SECONDS="0.5") as h:
        assert h.trainer is not None and h.visitor is not None and h.runpod is not None
        # An H100 at $2+/h: the seconds this short run saves are worth whole cents.
        job_id = await run_job(
            h, "steps=40 save_every_n_steps=4 sample_every_n_steps=4", gpu="NVIDIA H100 80GB HBM3"
        )

        # The alarm comes at the second checkpoint (step 8 of 40), with the row, pinging the requester only.
        alarm = await wait_message(h, lambda m: "the face is not being learned" in m.content, timeout=120)
        content = alarm.content
        assert f"<@{h.trainer.id}> job #{job_id}" in content
        assert "2nd checkpoint, step 8/40" in content
        assert "recognised as elena in 0 of 4 samples" in content
        assert "the loss is" in content
        assert re.search(r"Finishing the run would cost about \$\d+\.\d\d more \(32 steps to go\)", content)
        assert posted(h, content)["allowed_mentions"]["users"] == [h.trainer.id]
        ((name, data),) = h.sim.files_of(alarm.id)
        assert name == f"job{job_id}-step8-alarm.jpg" and data[:2] == b"\xff\xd8"
        ids = [b["custom_id"] for b in alarm.buttons]
        assert ids == [f"loraops:alarm:{a}:{job_id}" for a in ("stop", "run", "retry")]
        # What to change, from the report card and the job's settings (rank 8 is low for a face).
        assert "What to change:" in content and "network_dim 16" in content
        # The row itself carries the same verdict.
        row = await wait_message(h, lambda m: m.content.startswith("**Checkpoint step 8/40**"))
        assert "recognised as elena in 0 of 4 samples" in row.content
        assert (await job_view(h, job_id)).state == JobState.TRAINING.value

        # Someone without a role cannot press it; the requester stops the run now.
        refused = await h.sim.invoke_component(alarm.id, f"loraops:alarm:stop:{job_id}", h.visitor)
        answer = await refused.response()
        assert answer is not None and refused.ephemeral and "trainer" in answer.content
        stop = await h.sim.invoke_component(alarm.id, f"loraops:alarm:stop:{job_id}", h.trainer)
        await stop.ack()
        said = await wait_message(h, lambda m: m.content.startswith(f"🛑 Job #{job_id} stopped by"))
        summary = await wait_message(h, lambda m: f"training job #{job_id} for **elena**" in m.content, 120)

        job = await job_view(h, job_id)
        assert job.state == JobState.SUCCEEDED.value and job.step < 40
        assert job.pod_terminated_at is not None
        assert h.runpod.pods[job.pod_id].phase == "terminated"  # type: ignore[index]
        async with h.bot_app.services.sessions() as session:
            kept = (await session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id))).all()
        assert len(kept) >= 2 and all(c.collected for c in kept)
        (early,) = await events(h, job_id, "early_stop")
        saved = Decimal(str(early.payload["saved_usd"]))
        assert saved > 0 and early.payload["alarm"] is True and early.payload["by"] == h.trainer.id
        assert f"This saves about {money(saved)}" in said.content
        assert re.search(r"the \d+ checkpoints? saved so far are kept", said.content), said.content
        assert "Stopped early: stopped on request after the face alarm" in summary.content
        assert f"(saved about {money(saved)})" in summary.content
        assert "recognised as elena in 0 of 4 samples" in summary.content
        # The poor run's summary offers the retry as well; the alarm keeps only the retry button.
        assert [b["custom_id"] for b in summary.buttons] == [f"loraops:alarm:retry:{job_id}"]
        await h.sim.wait_until(lambda: len(h.sim.message(alarm.id).buttons) == 1)
        assert len(await events(h, job_id, "face_alarm")) == 1

        # Retry with these changes: a quote for a new job with the suggested preset and overrides.
        pods_before = len(h.runpod.pods)
        retry = await h.sim.invoke_component(alarm.id, f"loraops:alarm:retry:{job_id}", h.trainer)
        quote = await retry.response(timeout=60)
        assert quote is not None and not retry.ephemeral, quote and quote.content
        assert f"Retry of job #{job_id} with the suggested changes: preset `{PRESET}`" in quote.content
        assert "network_dim=16" in quote.content and "network_alpha=8" in quote.content
        new_id = quoted_job_id(quote)
        assert new_id is not None, quote.content
        new_job = await job_view(h, new_id)
        assert new_job.state == JobState.PENDING.value and new_job.preset == PRESET
        overrides = new_job.params["overrides"]
        assert overrides["network_dim"] == "16" and overrides["network_alpha"] == "8"
        assert overrides["steps"] == "40" and overrides["save_every_n_steps"] == "4"
        assert next(b["custom_id"] for b in quote.buttons) == confirm_button(new_job.id)
        assert len(h.runpod.pods) == pods_before  # nothing rented until confirmed


async def test_memorising_run_is_flagged_and_the_best_checkpoint_does_not_copy(tmp_path: Path) -> None:
    photos = sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:3]
    async with faces_bot(tmp_path, photos, SDSTANDIN_SAMPLES="memorising", SDSTANDIN_STEP_SECONDS="0.2") as h:
        job_id = await run_job(h, "steps=20 save_every_n_steps=4 sample_every_n_steps=4")
        summary = await wait_message(h, lambda m: f"training job #{job_id} for **elena**" in m.content, 180)
        scored = {int(e.payload["step"]): e.payload for e in await events(h, job_id, "checkpoint_scored")}
        memorising = sorted(step for step, p in scored.items() if p["memorising"])
        assert memorising == [16, 20], {s: p["copies"] for s, p in scored.items()}
        # The copies name the training photo each sample copies.
        assert all(len(scored[step]["copies"]) == 4 for step in memorising)
        async with h.bot_app.services.sessions() as session:
            checkpoints = {
                c.step: c
                for c in (await session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id))).all()
            }
        # The copies score highest, yet the best is the best likeness among the others.
        top = max(checkpoints.values(), key=lambda c: c.score_mean or 0)
        assert top.step in memorising
        candidates = [c for s, c in checkpoints.items() if s not in memorising and c.score_mean is not None]
        expected = max(candidates, key=lambda c: (round(c.score_mean or 0, 3), -c.step))
        assert f"Best checkpoint: **step {expected.step}**" in summary.content
        assert "Memorising at steps 16, 20" in summary.content
        row = bot_messages(h, lambda m: m.content.startswith("**Checkpoint step 20/20**"))[0]
        assert "memorising: 4 of 4 copy a training photo" in row.content


async def test_let_it_run_is_said_once_and_the_run_goes_to_its_end(tmp_path: Path) -> None:
    photos = sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:3]
    async with faces_bot(tmp_path, photos, SDSTANDIN_SAMPLES="failing", SDSTANDIN_STEP_SECONDS="0.3") as h:
        assert h.trainer is not None and h.reviewer is not None
        job_id = await run_job(h, "steps=16 save_every_n_steps=4 sample_every_n_steps=4")
        assert (await job_view(h, job_id)).params["face_alarm"] == {"checkpoint": 2, "fraction": 0.3}
        alarm = await wait_message(h, lambda m: "the face is not being learned" in m.content, timeout=120)
        # A reviewer without the trainer role (and not the requester) cannot decide for the requester.
        refused = await h.sim.invoke_component(alarm.id, f"loraops:alarm:run:{job_id}", h.reviewer)
        answer = await refused.response()
        assert answer is not None and refused.ephemeral
        go_on = await h.sim.invoke_component(alarm.id, f"loraops:alarm:run:{job_id}", h.trainer)
        await go_on.ack()
        said = await wait_message(
            h, lambda m: m.content.startswith(f"▶️ <@{h.trainer.id}> lets job #{job_id}")
        )
        assert said.content.endswith("run to the end.")
        await h.sim.wait_until(lambda: len(h.sim.message(alarm.id).buttons) == 1)
        summary = await wait_message(h, lambda m: f"training job #{job_id} for **elena**" in m.content, 120)
        job = await job_view(h, job_id)
        assert job.state == JobState.SUCCEEDED.value and job.step == 16
        assert "Stopped early" not in summary.content and "What to change:" in summary.content
        (choice,) = await events(h, job_id, "face_alarm_choice")
        assert choice.payload == {"choice": "run", "by": h.trainer.id}
