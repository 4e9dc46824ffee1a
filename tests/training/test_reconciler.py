"""The reconciler: orphans, vanished pods, deadlines, budgets, unconfirmed jobs, unfinished stops."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from storage.db import unit_of_work
from storage.models import Job, JobEvent, JobState

from .conftest import GUILD, USER, Harness


async def _pending(h: Harness) -> int:
    quote = await h.service.start(guild_id=GUILD, dataset="elena", preset="p", user_id=USER)
    assert quote.job_id is not None
    return quote.job_id


async def _long_running(h: Harness) -> int:
    h.planner.total_steps = 100_000
    h.runpod.worker_options = {"steps_per_poll": 1}
    quote = await h.service.start(
        guild_id=GUILD,
        dataset="elena",
        preset="p",
        user_id=USER,
        budget_usd=Decimal(1000),
        params={"steps": 100},
    )
    assert quote.job_id is not None
    await h.service.confirm(quote.job_id, user_id=USER)

    async def running() -> None:
        while (await h.job(quote.job_id)).step < 2:  # type: ignore[arg-type]
            await asyncio.sleep(0.02)

    await asyncio.wait_for(running(), 10)
    return quote.job_id


async def test_orphans_terminated_others_left_alone(harness: Harness) -> None:
    h = harness
    orphan = h.runpod.add_stray_pod("loraops-999")
    stranger = h.runpod.add_stray_pod("someone-elses-notebook")
    owned_job = await _long_running(h)
    owned_pod = (await h.job(owned_job)).pod_id
    report = await h.reconciler.reconcile_once()
    assert report.orphans == [orphan.id]
    assert set(h.runpod.pods) == {stranger.id, owned_pod}
    # Idempotent: a second pass finds nothing to do.
    again = await h.reconciler.reconcile_once()
    assert again.orphans == [] and again.resumed == []


async def test_orphan_of_a_finished_job_is_recorded_on_it(harness: Harness) -> None:
    h = harness
    job_id = await _pending(h)
    await h.service.cancel(job_id, user_id=USER)
    stray = h.runpod.add_stray_pod(f"loraops-{job_id}")
    report = await h.reconciler.reconcile_once()
    assert report.orphans == [stray.id]
    ((_, _, payload),) = [e for e in h.listener.events if e[:2] == (job_id, "orphan_terminated")]
    assert payload["pod_id"] == stray.id and payload["pod_name"] == f"loraops-{job_id}"
    assert payload["why"] == "an orphan pod" and "charged" in payload  # the time it ran is the job's


async def test_vanished_pod_fails_the_job(harness: Harness) -> None:
    h = harness
    job_id = await _long_running(h)
    await h.orchestrator.close()  # nobody driving, as after a crash
    pod_id = (await h.job(job_id)).pod_id
    assert pod_id is not None
    h.runpod.pods.pop(pod_id)  # terminated from the RunPod console
    report = await h.reconciler.reconcile_once()
    assert report.vanished == [job_id]
    job = await h.job(job_id)
    assert job.state == JobState.FAILED.value and "disappeared" in (job.error or "")


async def test_deadline_enforced(harness: Harness) -> None:
    h = harness
    job_id = await _long_running(h)
    await h.orchestrator.close()
    job = await h.job(job_id)
    assert job.deadline_at is not None
    h.clock.offset = job.deadline_at - h.clock() + timedelta(seconds=1)
    report = await h.reconciler.reconcile_once()
    assert report.deadlines == [job_id]
    job = await h.job(job_id)
    assert (
        job.state == JobState.FAILED.value
        and job.error is not None
        and job.error.startswith("deadline passed")
    )
    assert h.runpod.pods == {} and job.pod_terminated_at is not None


async def test_budget_enforced_by_the_sweep(harness: Harness) -> None:
    h = harness
    job_id = await _long_running(h)
    await h.orchestrator.close()
    async with unit_of_work(h.sessions) as session:
        job = await session.get(Job, job_id)
        assert job is not None
        job.budget_usd = Decimal("0.01")
    h.clock.advance(minutes=5)  # 0.27 $/h × 5 min = 0.0225
    report = await h.reconciler.reconcile_once()
    assert report.budget_stopped == [job_id]
    job = await h.job(job_id)
    assert job.state == JobState.BUDGET_STOPPED.value and job.cost_usd >= Decimal("0.0225")
    assert h.runpod.pods == {}


async def test_unconfirmed_pending_jobs_expire(harness: Harness) -> None:
    h = harness
    job_id = await _pending(h)
    assert (await h.reconciler.reconcile_once()).expired == []
    h.clock.advance(minutes=16)
    report = await h.reconciler.reconcile_once()
    assert report.expired == [job_id]
    assert (await h.job(job_id)).state == JobState.CANCELLED.value
    assert h.runpod.created() == []


async def test_stopped_job_whose_pod_survived_is_finalized(harness: Harness) -> None:
    h = harness
    job_id = await _long_running(h)
    await h.orchestrator.close()
    pod_id = (await h.job(job_id)).pod_id
    # The process committed "cancelled" and died before terminating the pod.
    async with unit_of_work(h.sessions) as session:
        job = await session.get(Job, job_id)
        assert job is not None
        job.state = JobState.CANCELLED.value
    report = await h.reconciler.reconcile_once()
    assert report.finalized == [job_id] and report.orphans == []
    assert pod_id in h.runpod.terminated
    job = await h.job(job_id)
    assert job.pod_terminated_at is not None and job.cost_usd > 0
    async with h.sessions() as session:
        kinds = (await session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job_id))).all()
    assert "pod_terminated" in kinds


async def test_runpod_down_skips_pod_checks(harness: Harness) -> None:
    h = harness
    h.runpod.add_stray_pod("loraops-999")
    h.runpod.fail_list_pods = True
    report = await h.reconciler.reconcile_once()
    assert report.orphans == [] and report.errors and "list_pods" in report.errors[0]
    assert len(h.runpod.pods) == 1
