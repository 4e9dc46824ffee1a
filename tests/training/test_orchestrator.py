"""The orchestrator driving jobs through the RunPod simulator, whose pods run the real worker with the
sd-scripts stand-in (tests/training/conftest.py): one test per path of a job's life."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.errors import BudgetExceededError, ConflictError, InvalidInputError, NotFoundError
from bot.training.context import build_spec
from bot.training.progress import ProgressView, render_progress
from bot.training.tokens import worker_token
from sim.testdata import TESTDATA_FACES
from storage.db import unit_of_work
from storage.models import Checkpoint, GuildSettings, JobEvent, JobState, Sample, SpendEntry
from worker.protocol import ENV_JOB_SPEC, ENV_WORKER_TOKEN, JobSpec

from .conftest import GUILD, USER, Harness

HAPPY = [
    JobState.PROVISIONING,
    JobState.UPLOADING,
    JobState.TRAINING,
    JobState.COLLECTING,
    JobState.SUCCEEDED,
]
SLOW = "0.15"  # seconds a stand-in step takes when a test acts while the pod trains


async def _events(h: Harness, job_id: int) -> list[JobEvent]:
    async with h.sessions() as session:
        return list(
            (
                await session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
            ).all()
        )


def _env(created: dict[str, object]) -> dict[str, str]:
    return {str(item["key"]): str(item["value"]) for item in created["env"]}  # type: ignore[attr-defined]


async def test_happy_path(harness: Harness) -> None:
    h = harness
    job_id = await h.start(steps=10)
    assert await h.finish(job_id) == JobState.SUCCEEDED
    job = await h.job(job_id)
    assert h.listener.new_states() == HAPPY
    # One pod, named after the job, with the spec and token in its environment; then terminated.
    (created,) = h.created()
    assert created["name"] == f"loraops-{job_id}" == job.pod_name
    assert created["gpuTypeId"] == "NVIDIA RTX A5000" and created["ports"] == "8000/http"
    env = _env(created)
    spec = JobSpec.from_env(env[ENV_JOB_SPEC])
    assert (
        spec.job_id == job_id and spec.total_steps == 10 and spec.dataset_sha256 == h.planner.archive_sha256
    )
    assert job.deadline_at is not None and spec.deadline_unix == job.deadline_at.timestamp()
    # The token is derived from a stored nonce and a key from the environment; the row holds no token.
    token = worker_token(h.settings, job_id, job.worker_token_nonce)
    assert token is not None and token.startswith("lwt_") and len(token) >= 40
    assert env[ENV_WORKER_TOKEN] == token and token not in repr(job.__dict__)
    assert job.pod_id is not None and h.sim.pods[job.pod_id].phase == "terminated"
    assert job.pod_terminated_at is not None
    # Checkpoints and samples are in the blob store and verified, with rows.
    async with h.sessions() as session:
        checkpoints = (await session.scalars(select(Checkpoint).order_by(Checkpoint.step))).all()
        samples = (await session.scalars(select(Sample).order_by(Sample.step, Sample.prompt_index))).all()
        ledger = (await session.scalars(select(SpendEntry).where(SpendEntry.job_id == job_id))).all()
    assert [(c.step, c.file_name, c.collected) for c in checkpoints] == [
        (4, "elena-step00000004.safetensors", True),
        (8, "elena-step00000008.safetensors", True),
        (10, "elena.safetensors", True),
    ]
    for checkpoint in checkpoints:
        assert h.blobs.verify(checkpoint.sha256)
        assert checkpoint.size_bytes == len(h.blobs.get(checkpoint.sha256)) > 0
    assert {(s.step, s.prompt_index) for s in samples} >= {(4, 0), (4, 1), (8, 0), (8, 1)}
    assert all(h.blobs.verify(s.blob_sha256) for s in samples)
    assert [(s.prompt, s.seed) for s in samples[:2]] == [
        ("ohwx man, portrait --w 128 --h 128 --d 42", 42),
        ("ohwx man, beach --w 128 --h 128 --d 7", 7),
    ]
    # Each checkpoint announced once, with its step's samples.
    announced = [(c.step, sorted(s.prompt_index for s in ss)) for c, ss in h.listener.checkpoints]
    assert [step for step, _ in announced] == [4, 8, 10]
    assert announced[:2] == [(4, [0, 1]), (8, [0, 1])]
    # The worker got the dataset once and the acknowledgement, through RunPod's proxy.
    calls = [(c.pod_id, c.method, c.path.rsplit("/", 1)[-1]) for c in h.sim.proxy_calls]
    assert [c for c in calls if c[2] == "dataset" and c[1] == "PUT"] == [(job.pod_id, "PUT", "dataset")]
    assert (job.pod_id, "POST", "ack") in calls
    # Money: price from the pod, cost = ledger.
    assert job.price_per_hour == Decimal("0.27")
    assert job.cost_usd > 0 and job.cost_usd == sum(e.amount_usd for e in ledger)
    assert job.step == 10 and job.finished_at is not None
    # Order on the timeline: the transition to provisioning and the pod request before the pod exists.
    kinds = [(e.kind, e.to_state) for e in await _events(h, job_id)]
    assert (
        kinds.index(("state", "provisioning"))
        < kinds.index(("pod_requested", None))
        < kinds.index(("pod_created", None))
        < kinds.index(("state", "uploading"))
    )
    assert (
        kinds.index(("acked", None))
        < kinds.index(("pod_terminated", None))
        < kinds.index(("state", "succeeded"))
    )
    (final,) = [p for _, _, new, p in h.listener.states if new == JobState.SUCCEEDED]
    assert final["checkpoints"] == 3 and final["cost_usd"] == str(job.cost_usd)
    assert h.listener.progress and h.listener.progress[-1].state == JobState.SUCCEEDED


async def test_nan_fails_with_worker_error_and_log(harness: Harness) -> None:
    h = harness
    h.standin(SDSTANDIN_NAN_AT_STEP="6")
    job_id = await h.start(steps=12)
    assert await h.finish(job_id) == JobState.FAILED
    job = await h.job(job_id)
    assert job.error == "loss became NaN at step 6 (avr_loss=nan); training stopped"  # the worker's words
    assert any("failed: loss became NaN at step 6" in line for line in job.last_log)
    assert job.pod_id is not None and h.sim.pods[job.pod_id].phase == "terminated"
    (stop,) = [p for _, _, new, p in h.listener.states if new == JobState.FAILED]
    assert stop["cause"] == job.error and stop["log_tail"]
    # The checkpoint saved before the failure was still collected.
    async with h.sessions() as session:
        steps = (await session.scalars(select(Checkpoint.step).where(Checkpoint.collected.is_(True)))).all()
    assert list(steps) == [4]


async def test_no_capacity_tries_the_next_gpu(harness: Harness) -> None:
    h = harness
    job_id = await h.start(before_confirm=lambda: h.sim.set_capacity("NVIDIA RTX A5000", 0))
    assert await h.finish(job_id) == JobState.SUCCEEDED
    job = await h.job(job_id)
    order = [o["gpu_type_id"] for o in job.estimate["options"]]
    assert order[0] == "NVIDIA RTX A5000"
    attempts = [c["gpuTypeId"] for c in h.created()]
    assert attempts == order[:2]  # the next cheapest run
    assert job.gpu_type == order[1]
    assert job.price_per_hour == Decimal(job.estimate["options"][1]["price_per_hour"])
    (event,) = [e for e in await _events(h, job_id) if e.kind == "no_capacity"]
    assert event.payload == {"gpu_type": "NVIDIA RTX A5000", "next": order[1]}
    assert (job_id, "no_capacity", event.payload) in h.listener.events


async def test_no_capacity_anywhere_fails(harness: Harness) -> None:
    h = harness

    def none_free() -> None:
        for gpu in h.sim.gpus:
            h.sim.set_capacity(gpu, 0)

    job_id = await h.start(before_confirm=none_free)
    assert await h.finish(job_id) == JobState.FAILED
    job = await h.job(job_id)
    assert job.error is not None and job.error.startswith("no GPU available")
    assert job.pod_id is None and h.sim.pods == {}
    assert len(h.created()) == len(job.estimate["options"])  # every option was tried once


async def test_cancel_mid_training(harness: Harness) -> None:
    h = harness
    h.standin(SDSTANDIN_STEP_SECONDS=SLOW)
    job_id = await h.start(steps=200)
    await h.wait_step(job_id, 3)
    job = await h.service.cancel(job_id, user_id=USER)
    assert job.state == JobState.CANCELLED.value and job.pod_terminated_at is not None
    assert await h.finish(job_id) == JobState.CANCELLED
    assert h.sim.live_pods() == [] and h.sim.pods[job.pod_id].phase == "terminated"  # type: ignore[index]
    with pytest.raises(ConflictError):
        await h.service.cancel(job_id, user_id=USER)
    (event,) = [e for e in await _events(h, job_id) if e.to_state == "cancelled"]
    assert event.payload["by"] == USER


async def test_budget_crossed_mid_run_stops_the_pod(harness: Harness) -> None:
    h = harness
    h.standin(SDSTANDIN_STEP_SECONDS=SLOW)
    h.planner.total_steps = 200
    quote = await h.service.start(
        guild_id=GUILD, dataset="elena", preset="p", user_id=USER, budget_usd=Decimal("0.05")
    )
    assert quote.job_id is not None and quote.estimate.cost_usd < Decimal("0.05")
    job_id = quote.job_id
    await h.service.confirm(job_id, user_id=USER)
    await h.wait_step(job_id, 5)
    h.advance(minutes=15)  # 15 min at $0.27/h = $0.0675 > $0.05
    assert await h.finish(job_id) == JobState.BUDGET_STOPPED
    job = await h.job(job_id)
    assert job.cost_usd >= job.budget_usd == Decimal("0.05")
    assert job.step < 200
    await h.sim.wait_for(lambda: h.sim.live_pods() == [])
    (stop,) = [p for _, _, new, p in h.listener.states if new == JobState.BUDGET_STOPPED]
    assert stop["scope"] == "job" and "job budget $0.05 reached" in stop["cause"]


async def test_restart_resumes_same_pod(harness: Harness) -> None:
    h = harness
    h.standin(SDSTANDIN_STEP_SECONDS=SLOW)
    job_id = await h.start(steps=16)
    await h.wait_step(job_id, 5)
    await h.orchestrator.close()  # the bot process dies
    h.new_process()
    report = await h.reconciler.reconcile_once()
    assert report.resumed == [job_id] and report.orphans == []
    assert (await h.reconciler.reconcile_once()).resumed == []  # already driven: not twice
    assert await h.finish(job_id) == JobState.SUCCEEDED
    assert len(h.created()) == 1
    assert (await h.service.status(job_id)).step == 16


async def test_crash_between_create_and_store_adopts_the_pod(harness: Harness) -> None:
    h = harness
    quote = await h.service.start(
        guild_id=GUILD, dataset="elena", preset="test-sdxl", user_id=USER, params={"steps": 8}
    )
    assert quote.job_id is not None
    job_id = quote.job_id
    await h.orchestrator.close()  # nothing drives; we play the crashed process by hand
    h.new_process()
    h.orchestrator._closed = True  # confirm must not drive yet
    await h.service.confirm(job_id, user_id=USER)
    job = await h.job(job_id)
    # RunPod created the pod, then the process died before storing its id.
    await h.client.create_pod(
        name=job.pod_name,
        gpu_type_id="NVIDIA RTX A5000",
        image="x",
        env={
            ENV_JOB_SPEC: build_spec(job).to_env(),
            ENV_WORKER_TOKEN: worker_token(h.settings, job.id, job.worker_token_nonce) or "",
        },
        cloud_type="SECURE",
        volume_in_gb=0,
        container_disk_in_gb=60,
        ports="8000/http",
    )
    h.orchestrator._closed = False
    report = await h.reconciler.reconcile_once()
    assert report.resumed == [job_id] and report.orphans == []  # owned by name, not an orphan
    assert await h.finish(job_id) == JobState.SUCCEEDED
    assert len(h.created()) == 1
    assert [e.kind for e in await _events(h, job_id)].count("pod_adopted") == 1


async def test_wrong_token_fails_the_job(harness: Harness) -> None:
    h = harness
    # The pod's worker expects another token than the one the bot derives for the job.
    h.standin(**{ENV_WORKER_TOKEN: "lwt_something-else-entirely-0123456789abcdef"})
    job_id = await h.start()
    assert await h.finish(job_id) == JobState.FAILED
    job = await h.job(job_id)
    assert job.error == "the worker refused this job's token"
    assert any(c.status == 401 for c in h.sim.proxy_calls)
    assert h.sim.live_pods() == []


async def test_start_refusals(harness: Harness) -> None:
    h = harness
    with pytest.raises(BudgetExceededError, match="more than the job budget"):
        await h.service.start(
            guild_id=GUILD,
            dataset="elena",
            preset="p",
            user_id=USER,
            budget_usd=Decimal("0.01"),
            params={"steps": 20000},
        )
    quote = await h.service.estimate(
        guild_id=GUILD,
        dataset="elena",
        preset="p",
        user_id=USER,
        budget_usd=Decimal("0.01"),
        params={"steps": 20000},
    )
    assert not quote.ok and "more than the job budget" in quote.render()
    async with unit_of_work(h.sessions) as session:
        session.add(GuildSettings(guild_id=GUILD, monthly_budget_usd=Decimal("0.02")))
    with pytest.raises(BudgetExceededError, match="past its budget"):
        await h.service.start(guild_id=GUILD, dataset="elena", preset="p", user_id=USER)
    async with unit_of_work(h.sessions) as session:
        guild = await session.get(GuildSettings, GUILD)
        assert guild is not None
        guild.monthly_budget_usd = Decimal(100)
    first = await h.service.start(guild_id=GUILD, dataset="elena", preset="p", user_id=USER)
    second = await h.service.start(guild_id=GUILD, dataset="elena", preset="p", user_id=USER)
    assert first.ok and second.ok and first.job_id != second.job_id
    with pytest.raises(ConflictError, match="most allowed is 2"):
        await h.service.start(guild_id=GUILD, dataset="elena", preset="p", user_id=USER)
    assert h.created() == []  # nothing rented before confirmation
    assert [v.job_id for v in await h.service.list_jobs(GUILD)] == [second.job_id, first.job_id]


async def test_progress_view_renders() -> None:
    view = ProgressView(
        job_id=7,
        guild_id=1,
        state=JobState.TRAINING,
        preset="sdxl-face",
        gpu_type="RTX A5000",
        step=600,
        total_steps=1500,
        loss=0.0912,
        rate=1.52,
        eta_s=592,
        cost_usd=Decimal("0.061"),
        budget_usd=Decimal(5),
        price_per_hour=Decimal("0.27"),
        channel_id=None,
        progress_message_id=None,
    )
    text = render_progress(view)
    assert "Job #7 · sdxl-face · training on RTX A5000" in text
    assert "600/1500 (40%)" in text and "████████░░░░" in text
    assert "loss 0.0912 · 1.52 it/s · ETA 9m 52s" in text
    assert "$0.06 of $5.00 budget ($0.27/h)" in text
    assert hashlib.sha256(text.encode()).hexdigest()  # plain str
    renting = replace(view, state=JobState.PROVISIONING, step=0, gpu_type=None)
    assert "renting a GPU pod" in render_progress(renting)
    # RunPod has the pod but reports no runtime for minutes while it pulls the worker image.
    assert "pod rented, pulling the image" in render_progress(replace(renting, has_pod=True))


async def test_dataset_planner_freezes_a_snapshot_and_quotes_it(harness: Harness) -> None:
    """The production planner: dataset rows → rendered sdxl-face configs → snapshot zip → a quote."""

    from PIL import Image as PILImage

    from bot.training.jobs import DatasetRunPlanner, JobService
    from storage.models import Caption, DatasetSnapshot, Image

    h = harness
    faces = TESTDATA_FACES / "obama"
    async with unit_of_work(h.sessions) as session:
        for position, photo in enumerate(sorted(faces.glob("*.jpg"))[:3], start=1):
            sha = h.blobs.put(photo.read_bytes())
            with PILImage.open(photo) as picture:
                width, height = picture.size
            image = Image(
                dataset_id=h.planner.dataset_id,
                position=position,
                sha256=sha,
                width=width,
                height=height,
                format="JPEG",
                byte_size=photo.stat().st_size,
                source_kind="attachment",
                added_by=USER,
            )
            session.add(image)
            await session.flush()
            session.add(Caption(image_id=image.id, text="ohwx woman, portrait"))
    service = JobService(h.ctx, h.orchestrator, DatasetRunPlanner(h.sessions, h.blobs))
    quote = await service.start(guild_id=GUILD, dataset="elena", preset="sdxl-face", user_id=USER)
    assert quote.ok and quote.job_id is not None
    job = await h.job(quote.job_id)
    async with h.sessions() as session:
        snapshot = await session.get(DatasetSnapshot, job.snapshot_id)
    assert snapshot is not None and snapshot.archive_sha256 == job.params["spec"]["dataset_sha256"]
    assert h.blobs.verify(snapshot.archive_sha256)
    assert job.params["spec"]["model_family"] == "sdxl" and job.total_steps > 0
    a5000 = next(o for o in quote.estimate.options if o.gpu_type_id == "NVIDIA RTX A5000")
    assert a5000.its == pytest.approx(1 / 1.1) and a5000.speed_source == "preset"
    assert all(o.memory_gb >= 24 for o in quote.estimate.options)
    with pytest.raises(NotFoundError, match="no dataset named"):
        await service.estimate(guild_id=GUILD, dataset="nobody", preset="sdxl-face", user_id=USER)


async def test_worker_client_ranges_and_verification(harness: Harness, tmp_path: Path) -> None:
    """The bot's worker client against a running pod's worker, through RunPod's proxy."""
    from bot.training.worker_client import IntegrityError, WorkerAuthError, WorkerClient
    from storage.blobs import BlobStore
    from worker.protocol import FileInfo

    h = harness
    blobs = BlobStore(tmp_path / "elsewhere")  # the orchestrator collects into h.blobs meanwhile
    h.standin(SDSTANDIN_STEP_SECONDS=SLOW)
    job_id = await h.start(steps=200)
    await h.wait_step(job_id, 5)  # a checkpoint and its samples are on the worker
    await h.sim.wait_for(lambda: any(c.step == 4 for c, _ in h.listener.checkpoints))  # and collected
    job = await h.job(job_id)
    assert job.pod_id is not None
    base = h.client.worker_base_url(job.pod_id)
    token = worker_token(h.settings, job_id, job.worker_token_nonce)
    assert token is not None
    client = WorkerClient(h.http, base, token, chunk_size=4096)
    status = await client.status()
    # A sample picture of the collected checkpoint (the orchestrator fetches it no more): many ranges.
    info = max((f for f in status.samples if f.step == 4), key=lambda f: f.size)
    assert info.size > 2 * 4096
    before = len(h.sim.proxy_calls)
    sha = await client.download("samples", info, blobs)
    assert sha == info.sha256 and blobs.verify(info.sha256)
    ranges = [c for c in h.sim.proxy_calls[before:] if c.path.endswith(f"/files/samples/{info.name}")]
    assert len(ranges) == math.ceil(info.size / 4096) and all(c.status == 206 for c in ranges)
    wrong = dataclasses.replace(info, sha256="f" * 64)
    with pytest.raises(IntegrityError):
        await client.download("samples", wrong, blobs)
    assert not blobs.exists("f" * 64)
    with pytest.raises(IntegrityError):  # announced size larger than the file
        await client.download("samples", FileInfo(info.name, info.step, info.size + 2000, "e" * 64), blobs)
    with pytest.raises(WorkerAuthError):
        await WorkerClient(h.http, base, "wrong").status()
    assert await WorkerClient(h.http, base, "wrong").health()  # /health needs no token
    assert token not in repr(client)
    await h.service.cancel(job_id, user_id=USER)


async def test_build_training_wiring(harness: Harness) -> None:
    from bot.training.jobs import build_training

    h = harness
    keyless = h.settings.model_copy(update={"runpod_api_key": None})
    assert build_training(keyless, h.sessions, h.http, h.blobs, h.ctx.money) is None  # no RunPod key
    training = build_training(h.settings, h.sessions, h.http, h.blobs, h.ctx.money, runpod=h.client)
    assert training is not None
    training.listeners.add(h.listener)
    assert h.listener in training.listeners._listeners
    # The real planner is wired in: it reads the dataset (which has no images here).
    with pytest.raises(InvalidInputError, match="no images"):
        await training.service.start(guild_id=GUILD, dataset="elena", preset="sdxl-face", user_id=USER)
    await training.close()


async def test_pod_created_but_not_read_back_is_kept(harness: Harness) -> None:
    h = harness

    def renting_changes() -> None:
        # What RunPod really charges differs from the listing the quote used, and the pod, once
        # created, cannot be read back at first.
        a5000 = h.sim.gpus["NVIDIA RTX A5000"]
        h.sim.gpus[a5000.id] = dataclasses.replace(a5000, secure_price=Decimal("0.31"))
        h.sim.fail_next("pod", "Something went wrong. Please try again later or contact support.")

    job_id = await h.start(before_confirm=renting_changes)
    assert await h.finish(job_id) == JobState.SUCCEEDED
    job = await h.job(job_id)
    assert len(h.created()) == 1 and job.pod_id is not None
    assert h.sim.pods[job.pod_id].phase == "terminated"
    assert job.price_per_hour == Decimal("0.31")  # corrected from the pod once it could be read
    (created,) = [e for e in await _events(h, job_id) if e.kind == "pod_created"]
    assert created.payload["read_back"] is False and created.payload["pod_id"] == job.pod_id
