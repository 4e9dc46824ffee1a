"""End to end: JobService → RunPodClient → RunPod simulator → real worker → sd-scripts stand-in, and
what RunPod does on its own (ambiguous creates, ghosts, exits, the balance, network volumes). The harness
is tests/training/conftest.py's."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from bot.training.worker_client import WorkerAuthError, WorkerClient
from storage.models import Checkpoint, JobEvent, JobState, Sample, SpendEntry
from worker.protocol import ENV_JOB_SPEC, JobSpec

from .conftest import GUILD, KEY, PROFILE, USER, Harness, make_harness, snapshot_zip

pytestmark = pytest.mark.slow

e2e = make_harness()
e2e_nan = make_harness(SDSTANDIN_NAN_AT_STEP="6")
e2e_slow = make_harness(SDSTANDIN_STEP_SECONDS="0.15")


async def test_trains_collects_and_terminates(e2e: Harness) -> None:
    stray = await e2e.client.create_pod(
        name="loraops-999",
        gpu_type_id="NVIDIA RTX A5000",
        image="ghcr.io/loraops/worker:0.1.0",
        env={},
        cloud_type="SECURE",
    )
    e2e.outside_pods.add(stray.id)
    job_id = await e2e.start(steps=8)
    # While it runs: the public proxy refuses a wrong token; the reconciler kills the orphan only.
    await e2e.wait_step(job_id, 1)
    job = await e2e.service.get(job_id)
    assert job.pod_id is not None
    with pytest.raises(WorkerAuthError):
        await WorkerClient(e2e.http, e2e.client.worker_base_url(job.pod_id), "wrong-token").status()
    report = await e2e.reconciler.reconcile_once()
    assert report.orphans == [stray.id] and report.resumed == []

    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    job = await e2e.service.get(job_id)
    assert e2e.listener.new_states() == [
        JobState.PROVISIONING,
        JobState.UPLOADING,
        JobState.TRAINING,
        JobState.COLLECTING,
        JobState.SUCCEEDED,
    ]
    pod = e2e.sim.pods[job.pod_id]  # type: ignore[index]
    assert pod.name == f"loraops-{job_id}" and pod.phase == "terminated"
    assert await e2e.client.get_pod(job.pod_id) is None  # type: ignore[arg-type]
    async with e2e.sessions() as session:
        checkpoints = (await session.scalars(select(Checkpoint).order_by(Checkpoint.step))).all()
        samples = (await session.scalars(select(Sample))).all()
        ledger = (await session.scalars(select(SpendEntry))).all()
    assert [c.step for c in checkpoints] == [4, 8] and all(c.collected for c in checkpoints)
    for checkpoint in checkpoints:
        data = e2e.blobs.get(checkpoint.sha256)
        assert hashlib.sha256(data).hexdigest() == checkpoint.sha256 and len(data) == checkpoint.size_bytes
    assert {(s.step, s.prompt_index) for s in samples} >= {(4, 0), (4, 1), (8, 0), (8, 1)}
    assert all(e2e.blobs.verify(s.blob_sha256) for s in samples)
    assert [c.step for c, _ in e2e.listener.checkpoints] == [4, 8]
    assert job.price_per_hour == Decimal("0.27") and job.cost_usd > 0
    assert job.cost_usd == sum(e.amount_usd for e in ledger) and job.pod_terminated_at is not None
    # The bot sent one create for its pod (plus the stray) and the dataset once through the proxy.
    assert len(e2e.sim.calls_for("podFindAndDeployOnDemand")) == 2
    uploads = [c for c in e2e.sim.proxy_calls if c.method == "PUT" and c.path.endswith("/dataset")]
    assert len(uploads) == 1


async def test_nan_is_failed_and_reported(e2e_nan: Harness) -> None:
    job_id = await e2e_nan.start(steps=12)
    assert await e2e_nan.finish(job_id) == JobState.FAILED
    job = await e2e_nan.service.get(job_id)
    assert job.error is not None and "nan" in job.error.lower()
    assert job.last_log
    assert e2e_nan.sim.pods[job.pod_id].phase == "terminated"  # type: ignore[index]
    ((_, _, _, payload),) = [s for s in e2e_nan.listener.states if s[2] == JobState.FAILED]
    assert payload["cause"] == job.error and payload["log_tail"]


async def test_no_capacity_on_first_gpu_uses_the_next(e2e: Harness) -> None:
    job_id = await e2e.start(steps=4, before_confirm=lambda: e2e.sim.set_capacity("NVIDIA RTX A5000", 0))
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    job = await e2e.service.get(job_id)
    second = job.estimate["options"][1]["gpu_type_id"]
    assert job.gpu_type == second and job.price_per_hour == Decimal(
        job.estimate["options"][1]["price_per_hour"]
    )
    async with e2e.sessions() as session:
        kinds = (await session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job_id))).all()
    assert kinds.count("no_capacity") == 1 and kinds.count("pod_created") == 1


async def test_restart_mid_training_resumes_without_a_second_pod(e2e_slow: Harness) -> None:
    e = e2e_slow
    job_id = await e.start(steps=24)
    await e.wait_step(job_id, 3)
    await e.orchestrator.close()  # the bot dies; the pod keeps training
    e.new_process()
    report = await e.reconciler.reconcile_once()
    assert report.resumed == [job_id] and report.orphans == []
    assert await e.finish(job_id) == JobState.SUCCEEDED
    assert len(e.sim.calls_for("podFindAndDeployOnDemand")) == 1
    job = await e.service.get(job_id)
    assert job.step == 24 and job.pod_terminated_at is not None


async def test_budget_crossed_mid_run_terminates_the_pod(e2e_slow: Harness) -> None:
    e = e2e_slow
    job_id = await e.start(steps=200, budget=Decimal("0.05"))
    await e.wait_step(job_id, 2)
    e.advance(minutes=15)  # 15 min at $0.27/h = $0.0675 > $0.05
    assert await e.finish(job_id) == JobState.BUDGET_STOPPED
    job = await e.service.get(job_id)
    assert job.step < 200 and job.cost_usd >= Decimal("0.05")
    await e.sim.wait_for(lambda: e.sim.pods[job.pod_id].phase == "terminated", within=10)  # type: ignore[index]
    ((_, _, _, payload),) = [s for s in e.listener.states if s[2] == JobState.BUDGET_STOPPED]
    assert payload["scope"] == "job" and "budget" in payload["cause"]


# ---------------------------------------------------------------------- what RunPod does on its own


async def _events_of(e: Harness, job_id: int, kind: str) -> list[JobEvent]:
    async with e.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == kind)
                )
            ).all()
        )


async def test_a_create_that_errors_but_made_a_pod_adopts_that_pod(e2e: Harness) -> None:
    e2e.sim.fail_create_after_creating()  # "Something went wrong", yet the pod exists and bills
    job_id = await e2e.start(steps=4)
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    job = await e2e.service.get(job_id)
    (pod,) = e2e.sim.pods.values()  # no second pod was rented
    assert job.pod_id == pod.id and pod.phase == "terminated"
    assert len(e2e.sim.calls_for("podFindAndDeployOnDemand")) == 1
    assert [e.kind for e in await _events_of(e2e, job_id, "create_ambiguous")] == ["create_ambiguous"]
    assert len(await _events_of(e2e, job_id, "pod_adopted")) == 1


async def test_an_error_page_after_creating_is_ambiguous_too(e2e: Harness) -> None:
    e2e.sim.fail_create_after_creating(None, http_status=502, html=True)
    job_id = await e2e.start(steps=4)
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    assert len(e2e.sim.pods) == 1 and len(e2e.sim.calls_for("podFindAndDeployOnDemand")) == 1


async def test_two_pods_of_the_jobs_name_one_is_kept_the_other_terminated_and_charged(e2e: Harness) -> None:
    e = e2e
    e.planner.total_steps = 4
    quote = await e.service.start(
        guild_id=GUILD, dataset="obama", preset=PROFILE.preset, user_id=USER, channel_id=1
    )
    job_id = quote.job_id
    assert job_id is not None
    # Two pods already carry the job's name (two creates that answered with errors, a crash between).
    made = [
        await e.client.create_pod(
            name=f"loraops-{job_id}", gpu_type_id="NVIDIA RTX A5000", image="img:1", env={}
        )
        for _ in range(2)
    ]
    e.advance(minutes=5)  # they bill meanwhile
    await e.service.confirm(job_id, user_id=USER)

    async def settled() -> None:
        while not await _events_of(e, job_id, "extra_pod_terminated"):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(settled(), 30)
    # Those pods were not made with this job's spec (the test made them): end the job here.
    await e.orchestrator.stop(job_id, JobState.CANCELLED, "test over")
    job = await e.service.get(job_id)
    assert job.pod_id in {pod.id for pod in made}
    (extra,) = await _events_of(e, job_id, "extra_pod_terminated")
    assert extra.payload["pod_id"] in {pod.id for pod in made} - {job.pod_id}
    assert Decimal(extra.payload["charged"]) > Decimal("0.02")  # five minutes and more at $0.27/h
    assert len(e.sim.calls_for("podFindAndDeployOnDemand")) == 2  # the bot rented nothing itself


async def test_a_ghost_found_late_is_terminated_and_charged_by_the_reconciler(e2e_slow: Harness) -> None:
    e = e2e_slow
    job_id = await e.start(steps=40)
    await e.wait_step(job_id, 2)
    ghost = await e.client.create_pod(
        name=f"loraops-{job_id}", gpu_type_id="NVIDIA RTX A5000", image="img:1", env={}
    )
    report = await e.reconciler.reconcile_once()
    assert report.ghosts == [ghost.id] and report.orphans == []
    assert e.sim.pods[ghost.id].phase == "terminated"
    await e.orchestrator.stop(job_id, JobState.CANCELLED, "test over")
    assert (await e.service.get(job_id)).pod_terminated_at is not None


async def _exits(e: Harness, **how: Any) -> tuple[int, Any]:
    job_id = await e.start(steps=200)
    await e.wait_step(job_id, 2)
    job = await e.service.get(job_id)
    assert job.pod_id is not None
    e.sim.exit_pod(job.pod_id, **how)
    assert await e.finish(job_id, timeout=30) in (JobState.FAILED, JobState.CANCELLED)
    return job_id, await e.service.get(job_id)


async def test_a_pod_that_exits_on_its_own_ends_the_job_and_billing_stops_there(e2e_slow: Harness) -> None:
    e = e2e_slow
    job_id, job = await _exits(e, reason="host restart")
    assert job.state == JobState.FAILED.value and job.step < 200
    assert job.error is not None and "stopped on its own" in job.error and "host restart" in job.error
    (exited,) = await _events_of(e, job_id, "pod_exited")
    assert exited.payload["status"] == "EXITED"
    ((_, _, _, payload),) = [s for s in e.listener.states if s[2] == JobState.FAILED]
    assert payload["reason"] == "pod_exited" and payload["cause"] == job.error  # the channel is told


async def test_a_dead_pod_fails_the_job_with_its_cause(e2e_slow: Harness) -> None:
    _, job = await _exits(e2e_slow, dead=True)
    assert job.state == JobState.FAILED.value and job.error is not None and "DEAD" in job.error


async def test_a_pod_stopped_from_the_console_cancels_the_job(e2e_slow: Harness) -> None:
    e = e2e_slow
    job_id = await e.start(steps=200)
    await e.wait_step(job_id, 2)
    pod_id = (await e.service.get(job_id)).pod_id
    assert pod_id is not None
    import requests

    def stop() -> None:  # someone clicks Stop in the RunPod console (the API call it makes)
        query = 'mutation { podStop(input: {podId: "' + pod_id + '"}) { id desiredStatus } }'
        answer = requests.post(
            f"{e.sim.base_url}/graphql",
            json={"query": query},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=10,
        )
        assert answer.json()["data"]["podStop"]["desiredStatus"] == "EXITED"

    await asyncio.to_thread(stop)
    assert await e.finish(job_id, timeout=30) == JobState.CANCELLED
    job = await e.service.get(job_id)
    assert job.error is not None and "stopped outside loraops" in job.error


async def test_the_balance_running_out_stops_the_pod_and_the_job_says_so(e2e_slow: Harness) -> None:
    e = e2e_slow
    e.sim.balance = Decimal("0.28")  # RunPod deploys with an hour of credit left
    job_id = await e.start(steps=4000, budget=Decimal("5"))  # a deadline hours away
    await e.wait_step(job_id, 2)
    e.advance(minutes=62)  # $0.28 at $0.27/h plus disks: RunPod stops every pod of the account
    assert await e.finish(job_id, timeout=30) == JobState.FAILED
    job = await e.service.get(job_id)
    assert job.error is not None and "ran out of credit" in job.error


async def test_a_pod_reported_at_zero_per_hour_is_billed_at_the_catalogue_price(e2e: Harness) -> None:
    e2e.sim.cost_per_hr_shown = "zero"
    job_id = await e2e.start(steps=4)
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    job = await e2e.service.get(job_id)
    assert job.price_per_hour == Decimal("0.27") and job.cost_usd > 0


async def test_the_pod_is_told_when_to_stop_itself_if_the_bot_is_gone(e2e: Harness) -> None:
    job_id = await e2e.start(steps=4, budget=Decimal("2.00"))
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    (pod,) = e2e.sim.pods.values()
    spec = JobSpec.from_env(pod.env[ENV_JOB_SPEC])
    assert spec.unattended_stop_s == e2e.settings.worker_unattended_stop_s
    # $2.00 at $0.27/h plus 60 GB of container disk ($0.10/GB-month): about 7.2 hours after renting.
    hours = (spec.budget_stop_unix - pod.created_at) / 3600
    assert abs(hours - 2.00 / (0.27 + 60 * 0.10 / 730)) < 0.01


async def test_a_dataset_over_the_proxys_body_limit_goes_up_in_parts(e2e: Harness) -> None:
    e2e.sim.proxy_max_body_bytes = 40_000  # Cloudflare's 100 MB, scaled down to the test's zip
    assert len(snapshot_zip()) > 2 * 40_000
    job_id = await e2e.start(steps=4)
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    puts = [c for c in e2e.sim.proxy_calls if c.method == "PUT" and c.path.endswith("/dataset")]
    statuses = [c.status for c in puts]
    assert statuses[0] == 413 and statuses[-1] == 201 and statuses.count(202) >= 2, statuses


async def test_a_pod_that_exited_while_the_bot_was_down_is_found_at_start_up(e2e_slow: Harness) -> None:
    e = e2e_slow
    job_id = await e.start(steps=200)
    await e.wait_step(job_id, 2)
    await e.orchestrator.close()  # the bot dies
    pod_id = (await e.service.get(job_id)).pod_id
    assert pod_id is not None
    e.sim.exit_pod(pod_id, reason="host restart")
    e.advance(minutes=30)  # nobody noticed for half an hour: the GPU was not billed meanwhile
    e.new_process()
    report = await e.reconciler.reconcile_once()
    assert report.stopped == [job_id] and report.resumed == []
    job = await e.service.get(job_id)
    assert job.state == JobState.FAILED.value and job.pod_terminated_at is not None
    (exited,) = await _events_of(e, job_id, "pod_exited")
    # Billing stopped when RunPod says the pod exited, not when the bot came back.
    assert datetime.fromisoformat(exited.payload["at"]) < job.pod_terminated_at - timedelta(minutes=29)


async def test_too_little_credit_to_rent_fails_at_once_and_says_so(e2e: Harness) -> None:
    e2e.sim.balance = Decimal("0.10")  # RunPod wants an hour of the pod's price in credit
    job_id = await e2e.start(steps=4)
    assert await e2e.finish(job_id) == JobState.FAILED
    job = await e2e.service.get(job_id)
    assert job.error is not None and "balance is too low" in job.error
    assert e2e.sim.pods == {}  # nothing rented, no other GPU type tried
    assert len(e2e.sim.calls_for("podFindAndDeployOnDemand")) == 1


async def test_the_network_volume_bills_every_month_budget_with_or_without_jobs(e2e: Harness) -> None:
    e = e2e
    volume = e.sim.add_network_volume("models", 500, "EU-RO-1")
    e.settings.runpod_network_volume_id = volume
    e.settings.discord_guild_ids = [GUILD, GUILD + 1]
    report = await e.reconciler.reconcile_once()  # first sight: billing starts
    assert report.errors == []
    e.advance(days=10)
    assert (await e.reconciler.reconcile_once()).errors == []
    # 500 GB at $0.07/GB-month for 240 of 730 hours is $11.51, half for each guild.
    spent = await e.orchestrator.ctx.money.month_spent(GUILD)
    assert abs(spent - Decimal("5.753")) < Decimal("0.01")
    # Halves of an odd number of micro-dollars: the last guild takes the remainder, so the two
    # shares differ by at most one micro-dollar and always add up to what RunPod billed.
    other = await e.orchestrator.ctx.money.month_spent(GUILD + 1)
    assert abs(other - spent) <= Decimal("0.000001")
    assert abs(spent + other - Decimal("11.506849")) < Decimal("0.00001")
