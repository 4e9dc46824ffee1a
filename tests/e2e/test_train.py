"""/train end to end: the real bot on the Discord simulator, the real RunPod SDK on the RunPod simulator,
the real worker in the simulated pod, the sd-scripts stand-in as the trainer, and a local Hugging Face
file server for the base model (fetched with HF_TOKEN).

Runs are tiny (8 steps, a checkpoint and a round of samples every 4) so each test takes seconds; the
stand-in's step time is raised only where progress edits must be seen between steps.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.training.money import usd
from sim.discord import SimMessage, SimUser
from sim.harness import HARNESS_HF_TOKEN, BotHarness, confirm_button, confirm_job, quote_job

# tests/conftest.py (pytest puts tests/ on sys.path; pyright resolves the e2e one)
from sim.testdata import testdata_faces as faces_dir
from storage.models import Checkpoint, JobState, Sample, SpendEntry

from .helpers import (
    PRESET,
    bot_messages,
    create_dataset_with_photos,
    eventually,
    job_view,
    progress_of,
    summary_of,
    wait_message,
)

pytestmark = pytest.mark.slow

PROMPTS = 4  # sd15-local samples four prompts
OVERRIDES = "steps=8 save_every_n_steps=4 sample_every_n_steps=4"
STEP_OF = re.compile(r"(\d+)/(\d+) \(")


@asynccontextmanager
async def training_bot(tmp_path: Path, **standin_env: str) -> AsyncIterator[BotHarness]:
    """The bot with training configured, and a dataset ``elena`` of a few real photos."""
    async with BotHarness(tmp_path / "bot", with_training=True, standin_env=standin_env) as h:
        await create_dataset_with_photos(h, sorted((faces_dir() / "obama").glob("obama_[0-9].jpg"))[:3])
        yield h
        await h.assert_ledger_matches_meter()  # every test that rents a pod ends with the money right


async def start_job(
    h: BotHarness, *, user: SimUser | None = None, overrides: str = OVERRIDES
) -> tuple[int, SimMessage]:
    options = {"dataset": "elena", "preset": PRESET, "overrides": overrides}
    return await quote_job(h.sim, options, user or h.trainer)


async def confirm(h: BotHarness, job_id: int, quote: SimMessage) -> None:
    await confirm_job(h.sim, job_id, quote, h.trainer)


def steps_shown(h: BotHarness, message: SimMessage) -> list[int]:
    contents = [v.content for v in h.sim.message(message.id).versions]
    return [int(m[1]) for m in (STEP_OF.search(c) for c in contents) if m is not None]


async def test_start_confirm_train_collect_and_pay(tmp_path: Path) -> None:
    async with training_bot(tmp_path, SDSTANDIN_STEP_SECONDS="0.4") as h:
        assert h.trainer is not None and h.runpod is not None and h.hub is not None
        job_id, quote = await start_job(h)
        assert "GPU:" in quote.content and "Budget: $5.00 for this job" in quote.content
        assert "~$" in quote.content  # the cost estimate
        await confirm(h, job_id, quote)
        await h.sim.wait_until(lambda: "Confirmed by" in h.sim.message(quote.id).content)
        assert h.sim.message(quote.id).components == []  # no second confirmation possible

        progress = await wait_message(h, progress_of(job_id))
        assert (await job_view(h, job_id)).progress_message_id == progress.id
        done = await wait_message(h, summary_of(job_id), timeout=90)

        job = await job_view(h, job_id)
        assert job.state == JobState.SUCCEEDED.value, job.error
        # The requester is mentioned, and nobody else can be.
        assert done.content.startswith(f"<@{h.trainer.id}> training job #{job_id} for ")
        assert f"preset {PRESET}) finished." in done.content
        post = next(
            r
            for r in h.sim.requests
            if r.method == "POST" and r.json and r.json.get("content") == done.content
        )
        mentions = post.json["allowed_mentions"]
        assert [int(u) for u in mentions.get("users", [])] == [h.trainer.id]
        assert mentions.get("parse", []) == []

        # One message, edited in place while training: the step went up through several edits.
        assert len(bot_messages(h, progress_of(job_id))) == 1
        steps = steps_shown(h, progress)
        assert steps == sorted(steps) and steps[-1] == 8
        assert len(set(steps)) >= 3, steps
        # The final edit may wait for the channel's edit bucket while the announcement goes out.
        await h.sim.wait_until(lambda: "finished" in h.sim.message(progress.id).content, timeout=20)
        final = h.sim.message(progress.id).content
        assert "finished" in final and "8/8" in final

        # The pod: named after the job, given the dataset once, base model fetched with HF_TOKEN, gone now.
        (pod,) = h.runpod.pods.values()
        assert pod.name == f"loraops-{job_id}" and pod.id == job.pod_id
        assert pod.phase == "terminated" and h.runpod.live_pods() == []
        assert job.pod_terminated_at is not None
        uploads = [c for c in h.runpod.proxy_calls if c.method == "PUT" and c.path.endswith("/dataset")]
        assert len(uploads) == 1
        fetched = h.hub.downloads()
        assert fetched and all(
            r.authorization == f"Bearer {HARNESS_HF_TOKEN}" for r in h.hub.requests if "/resolve/" in r.path
        )

        # Checkpoints and samples are in the database and in the blob store, verified.
        services = h.bot_app.services
        async with services.sessions() as session:
            checkpoints = (
                await session.scalars(
                    select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
                )
            ).all()
            samples = (await session.scalars(select(Sample).where(Sample.job_id == job_id))).all()
            ledger = (await session.scalars(select(SpendEntry).where(SpendEntry.job_id == job_id))).all()
        assert [c.step for c in checkpoints] == [4, 8] and all(c.collected for c in checkpoints)
        for checkpoint in checkpoints:
            data = services.blobs.get(checkpoint.sha256)
            assert (
                hashlib.sha256(data).hexdigest() == checkpoint.sha256 and len(data) == checkpoint.size_bytes
            )
        assert {(s.step, s.prompt_index) for s in samples} == {
            (st, i) for st in (4, 8) for i in range(PROMPTS)
        }
        assert all(services.blobs.verify(s.blob_sha256) for s in samples)

        # Money: the pod's price from RunPod, the ledger adds up to the job's cost.
        assert job.price_per_hour is not None and job.price_per_hour > 0
        assert job.cost_usd > 0 and sum((e.amount_usd for e in ledger), Decimal(0)) == job.cost_usd
        assert f"cost {usd(job.cost_usd)}" in done.content

        status = await h.sim.invoke_slash("train status", {"job": job_id}, user=h.visitor)  # type: ignore[arg-type]
        shown = await status.response()
        assert shown is not None and status.ephemeral and "finished" in shown.content
        listing = await h.sim.invoke_slash("train list", {}, user=h.visitor)  # type: ignore[arg-type]
        listed = await listing.response()
        assert listed is not None and f"`#{job_id}` {PRESET} · succeeded 8/8" in listed.content


async def test_only_trainers_start_and_only_the_requester_confirms(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cogs.train")
    async with training_bot(tmp_path) as h:
        assert h.trainer is not None and h.visitor is not None and h.runpod is not None
        refused = await h.sim.invoke_slash(
            "train start", {"dataset": "elena", "preset": PRESET}, user=h.visitor
        )
        message = await refused.response()
        assert message is not None and refused.ephemeral and "needs the **trainer** role" in message.content

        too_rich = await h.sim.invoke_slash(
            "train start", {"dataset": "elena", "preset": PRESET, "budget": "40"}, user=h.trainer
        )
        message = await too_rich.response()
        assert message is not None and too_rich.ephemeral
        assert "above this server's default ($5.00) needs an admin" in message.content

        bad = await h.sim.invoke_slash(
            "train start", {"dataset": "elena", "preset": PRESET, "overrides": "stepz=8"}, user=h.trainer
        )
        message = await bad.response(timeout=20)
        assert message is not None and bad.ephemeral and "stepz" in message.content

        # An estimate rents nothing; a GPU named by the trainer is tried first.
        options = {"dataset": "elena", "preset": PRESET, "gpu": "NVIDIA A40"}
        estimate = await h.sim.invoke_slash("train estimate", options, user=h.trainer)
        shown = await estimate.response(timeout=20)
        assert (
            shown is not None and estimate.ephemeral and shown.content.splitlines()[1].startswith("GPU: A40")
        )
        unknown = await h.sim.invoke_slash("train estimate", {**options, "gpu": "Voodoo 2"}, user=h.trainer)
        shown = await unknown.response(timeout=20)
        assert shown is not None and unknown.ephemeral and "`Voodoo 2` is not offered" in shown.content

        job_id, quote = await start_job(h)
        click = await h.sim.invoke_component(quote.id, confirm_button(job_id), h.visitor)
        answer = await click.response()
        assert answer is not None and click.ephemeral
        assert f"Only <@{h.trainer.id}> or an admin" in answer.content

        await h.sim.react(quote.id, "✅", h.visitor)
        ignored = f"✅ on job {job_id} by {h.visitor.id} ignored"
        await eventually(lambda: any(ignored in r.getMessage() for r in caplog.records))
        cancel_other = await h.sim.invoke_slash("train cancel", {"job": job_id}, user=h.visitor)
        message = await cancel_other.response()
        assert message is not None and cancel_other.ephemeral and "Only" in message.content
        assert (await job_view(h, job_id)).state == JobState.PENDING.value

        cancel = await h.sim.invoke_component(quote.id, f"loraops:train:cancel:{job_id}", h.trainer)
        await cancel.ack()
        await h.sim.wait_until(lambda: "Cancelled by" in h.sim.message(quote.id).content)
        assert (await job_view(h, job_id)).state == JobState.CANCELLED.value
        assert h.runpod.calls_for("podFindAndDeployOnDemand") == []  # nothing was ever rented
        assert bot_messages(h, progress_of(job_id)) == []

        # Refusals known only after planning (the month's budget) are private too.
        budgets = await h.sim.invoke_slash("budget set", {"job": "0.01", "month": "0.01"}, user=h.admin)  # type: ignore[arg-type]
        assert (await budgets.response()) is not None
        broke = await h.sim.invoke_slash(
            "train start", {"dataset": "elena", "preset": PRESET}, user=h.trainer
        )
        (refusal,) = await broke.wait_followups(1, timeout=20)
        assert (
            refusal.ephemeral and refusal.content.startswith("Cannot start:") and "budget" in refusal.content
        )
        assert broke.original is not None and broke.original.deleted  # the public "thinking…" is gone


async def test_bot_restarts_resume_the_quote_and_the_same_pod(tmp_path: Path) -> None:
    async with training_bot(tmp_path, SDSTANDIN_STEP_SECONDS="0.25") as h:
        assert h.runpod is not None
        job_id, quote = await start_job(h, overrides="steps=16 save_every_n_steps=8 sample_every_n_steps=8")
        await h.restart_bot()  # the quote's buttons outlive the process that posted them
        await confirm(h, job_id, quote)
        await h.sim.wait_until(lambda: "Confirmed by" in h.sim.message(quote.id).content)
        progress = await wait_message(h, progress_of(job_id))
        await h.sim.wait_until(lambda: any(s >= 2 for s in steps_shown(h, progress)), timeout=60)

        await h.restart_bot()  # the bot dies mid-training; the pod goes on
        before = len(h.sim.message(progress.id).versions)
        done = await wait_message(h, summary_of(job_id), timeout=90)
        assert "finished" in done.content

        job = await job_view(h, job_id)
        assert job.state == JobState.SUCCEEDED.value and job.step == 16
        assert len(h.runpod.calls_for("podFindAndDeployOnDemand")) == 1
        assert h.runpod.live_pods() == []
        # The restarted bot kept editing the same message; it posted no second one.
        assert len(bot_messages(h, progress_of(job_id))) == 1
        assert len(h.sim.message(progress.id).versions) > before
        assert "16/16" in h.sim.message(progress.id).content


async def test_nan_loss_fails_and_the_channel_says_why(tmp_path: Path) -> None:
    async with training_bot(tmp_path, SDSTANDIN_NAN_AT_STEP="3") as h:
        assert h.runpod is not None
        job_id, quote = await start_job(h)
        await confirm(h, job_id, quote)
        done = await wait_message(h, summary_of(job_id), timeout=90)
        job = await job_view(h, job_id)
        assert job.state == JobState.FAILED.value and job.error is not None and "nan" in job.error.lower()
        assert "failed." in done.content and "nan" in done.content.lower()
        progress = await wait_message(h, progress_of(job_id))
        # Its final edit can queue behind the channel's edit bucket while the announcement goes out.
        await h.sim.wait_until(lambda: "Cause:" in h.sim.message(progress.id).content, timeout=20)
        assert "failed" in h.sim.message(progress.id).content
        await h.runpod.wait_for(lambda: h.runpod is not None and h.runpod.live_pods() == [], within=10)


async def test_no_capacity_falls_back_to_the_next_gpu(tmp_path: Path) -> None:
    async with training_bot(tmp_path) as h:
        assert h.runpod is not None and h.trainer is not None
        job_id, quote = await start_job(h, overrides="steps=4 save_every_n_steps=4 sample_every_n_steps=4")
        options = (await job_view(h, job_id)).estimate["options"]
        first, second = options[0]["gpu_type_id"], options[1]["gpu_type_id"]
        h.runpod.set_capacity(first, 0)
        await h.sim.react(quote.id, "✅", h.trainer)  # the requester's reaction confirms too
        await h.sim.wait_until(lambda: "Confirmed by" in h.sim.message(quote.id).content)

        progress = await wait_message(h, progress_of(job_id))
        await h.sim.wait_until(
            lambda: f"No {first} available: trying {second}." in h.sim.message(progress.id).content,
            timeout=30,
        )
        done = await wait_message(h, summary_of(job_id), timeout=90)
        assert "finished" in done.content
        job = await job_view(h, job_id)
        assert job.gpu_type == second and job.price_per_hour == Decimal(options[1]["price_per_hour"])
        assert [pod.gpu.id for pod in h.runpod.pods.values()] == [second]


async def test_the_requester_cancels_and_the_pod_is_terminated(tmp_path: Path) -> None:
    async with training_bot(tmp_path, SDSTANDIN_STEP_SECONDS="0.3") as h:
        assert h.runpod is not None and h.trainer is not None
        job_id, quote = await start_job(
            h, overrides="steps=200 save_every_n_steps=100 sample_every_n_steps=100"
        )
        await confirm(h, job_id, quote)
        progress = await wait_message(h, progress_of(job_id))
        await h.sim.wait_until(lambda: any(s >= 1 for s in steps_shown(h, progress)), timeout=60)

        cancel = await h.sim.invoke_slash("train cancel", {"job": job_id}, user=h.trainer)
        answer = await cancel.response(timeout=15)
        assert answer is not None and cancel.ephemeral
        assert answer.content == f"Job #{job_id} cancelled and its pod terminated."
        job = await job_view(h, job_id)
        assert job.state == JobState.CANCELLED.value and job.pod_terminated_at is not None
        pod = h.runpod.pods[job.pod_id]  # type: ignore[index]
        await h.runpod.wait_for(lambda: pod.phase == "terminated", within=10)
        done = await wait_message(h, summary_of(job_id))
        assert done.content.startswith(f"<@{h.trainer.id}> training job #{job_id}")
        assert f"was cancelled by <@{h.trainer.id}>" in done.content
        await h.sim.wait_until(lambda: "cancelled" in h.sim.message(progress.id).content, timeout=20)


async def test_a_pod_whose_host_dies_fails_the_job_and_the_channel_says_why(tmp_path: Path) -> None:
    async with training_bot(tmp_path, SDSTANDIN_STEP_SECONDS="0.3") as h:
        assert h.runpod is not None
        job_id, quote = await start_job(
            h, overrides="steps=200 save_every_n_steps=100 sample_every_n_steps=100"
        )
        await confirm(h, job_id, quote)
        progress = await wait_message(h, progress_of(job_id))
        await h.sim.wait_until(lambda: any(s >= 1 for s in steps_shown(h, progress)), timeout=60)
        # While RunPod pulled the image (minutes, runtime null), the progress message said so.
        assert any("pulling the image" in v.content for v in h.sim.message(progress.id).versions)
        pod_id = (await job_view(h, job_id)).pod_id
        assert pod_id is not None
        h.runpod.exit_pod(pod_id, dead=True)  # the host is gone; RunPod reports the pod DEAD

        done = await wait_message(h, summary_of(job_id), timeout=60)
        job = await job_view(h, job_id)
        assert job.state == JobState.FAILED.value and job.error is not None
        assert "failed." in done.content and "host failed" in done.content and "DEAD" in done.content
        # The progress message's final edit can queue behind the channel's edit bucket: wait for it.
        await h.sim.wait_until(lambda: "Cause:" in h.sim.message(progress.id).content, timeout=20)
        await h.runpod.wait_for(lambda: h.runpod is not None and h.runpod.pods[pod_id].phase == "terminated")


async def test_without_runpod_train_says_what_to_configure(harness: BotHarness) -> None:
    handle = await harness.sim.invoke_slash(
        "train start",
        {"dataset": "elena", "preset": PRESET},
        user=harness.trainer,  # type: ignore[arg-type]
    )
    message = await handle.response()
    assert message is not None and handle.ephemeral and "RUNPOD_API_KEY" in message.content
