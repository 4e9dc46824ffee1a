"""The job's pods as RunPod has them: one kept, every other one terminated and paid for, and pods that
left RUNNING on their own noticed.

RunPod has answered a create with a server error (or "Something went wrong") after making a billing
pod. The job's pods all carry its name (``loraops-<job id>``), so after any such answer the pods of that
name are listed: one is adopted, the others are terminated and charged to the job (the time they ran
at their price, disks included). The reconciler does the same for a pod of a live job's name that is
not the job's pod, so a ghost found late is never spared.

A pod can also leave RUNNING without us: ``EXITED`` (a host restart, a stop from the console, RunPod
stopping every pod when the account's balance runs out) or ``DEAD`` (the host is gone); ``runtime``
stays null for good. The moment it stopped (from RunPod's ``lastStatusChange`` when it says, else
when we saw it) is recorded as a ``pod_exited`` event, where the ledger stops GPU billing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bot.clients.runpod import RunPodError
from bot.training.context import TrainingContext
from bot.training.money import POD_EXITED_EVENT
from bot.training.pricing import PodDisks, gpu_price
from bot.training.states import record_event
from storage import jobs
from storage.models import Job, JobState

log = logging.getLogger(__name__)

EXTRA_POD_EVENT = "extra_pod_terminated"
# "Rented by User: Sun Dec 06 2026 09:10:50 GMT+0000 (Coordinated Universal Time)" and the like.
_STATUS_TIME = re.compile(r":\s*\w{3} (\w{3} \d{2} \d{4} \d{2}:\d{2}:\d{2}) GMT([+-]\d{4})")


def status_time(text: str | None) -> datetime | None:
    """The moment in RunPod's ``lastStatusChange`` (``"<what>: <JavaScript date>"``), if it has one."""
    match = _STATUS_TIME.search(text or "")
    if match is None:
        return None
    try:
        moment = datetime.strptime(f"{match[1]} {match[2]}", "%b %d %Y %H:%M:%S %z")
    except ValueError:
        return None
    return moment.astimezone(UTC)


def rented_at(pod: Any) -> datetime | None:
    """When RunPod says the pod was rented (its ``lastStatusChange`` while it has not changed since)."""
    change = str(getattr(pod, "last_status_change", "") or "")
    return status_time(change) if change.lower().startswith("rented") else None


@dataclass(frozen=True)
class StopReason:
    """Why a pod left RUNNING, in words for the channel, and what the job becomes."""

    cause: str
    state: JobState
    reason: str  # short key for the event payload


def stop_reason(pod: Any) -> StopReason:
    """Read RunPod's status for why the pod stopped (the wording of ``lastStatusChange`` varies)."""
    status = str(getattr(pod, "desired_status", "") or "")
    change = str(getattr(pod, "last_status_change", "") or "")
    lowered = change.lower()
    if any(word in lowered for word in ("balance", "credit", "funds")):
        return StopReason(
            "RunPod stopped the pod because the account ran out of credit; add credit, then start "
            "the job again",
            JobState.FAILED,
            "balance",
        )
    if status == "DEAD":
        return StopReason(
            "the pod's host failed (RunPod reports the pod DEAD); start the job again to train on "
            "another machine",
            JobState.FAILED,
            "dead",
        )
    if "by user" in lowered:
        return StopReason(
            "the pod was stopped outside loraops (RunPod console or API)", JobState.CANCELLED, "stopped"
        )
    return StopReason(
        f"the pod stopped on its own (RunPod reports {status or 'it not running'}"
        + (f": {change[:120]}" if change else "")
        + "); start the job again",
        JobState.FAILED,
        "exited",
    )


async def record_exit(ctx: TrainingContext, job: Job, pod: Any) -> datetime:
    """Record (once) when the job's pod left RUNNING; the ledger bills GPU time up to then."""
    async with ctx.sessions() as session:
        existing = await jobs.first_payload(session, job.id, POD_EXITED_EVENT)
    if existing:
        return datetime.fromisoformat(str(existing["at"]))
    now = ctx.now()
    at = status_time(getattr(pod, "last_status_change", None)) or now
    # Never before the pod was ours, never after we saw it stopped.
    if job.pod_created_at is not None:
        at = max(at, job.pod_created_at)
    at = min(at, now)
    payload = {
        "at": at.isoformat(),
        "pod_id": pod.id,
        "status": str(getattr(pod, "desired_status", "")),
        "status_change": str(getattr(pod, "last_status_change", "") or "")[:200],
    }
    await record_event(ctx.sessions, job.id, POD_EXITED_EVENT, payload, now=now)
    log.warning("job %s: pod %s left RUNNING (%s)", job.id, pod.id, payload["status"])
    return at


async def catalogue_price(ctx: TrainingContext, job: Job, gpu_type_id: str | None) -> Decimal | None:
    """The price RunPod lists for the GPU in our cloud, else what the job's estimate quoted for it."""
    quoted = next(
        (
            Decimal(str(option["price_per_hour"]))
            for option in job.estimate.get("options", [])
            if option.get("gpu_type_id") == gpu_type_id and option.get("price_per_hour") is not None
        ),
        None,
    )
    listed: Decimal | None = None
    try:
        for gpu in await ctx.runpod.list_gpu_types():
            if gpu.id == gpu_type_id:
                listed = gpu.price(ctx.settings.runpod_cloud_type)
                break
    except RunPodError as exc:
        log.info("job %s: no GPU catalogue for pricing right now: %s", job.id, exc)
    return gpu_price(None, catalogue=listed, quoted=quoted)


async def pod_price(ctx: TrainingContext, job: Job, pod: Any) -> Decimal | None:
    """What the pod bills per hour for its GPU: RunPod's ``costPerHr``, never a missing or zero one."""
    reported = getattr(pod, "cost_per_hr", None)
    if reported is not None and reported > 0:
        return Decimal(str(reported))
    return await catalogue_price(ctx, job, getattr(pod, "gpu_type_id", None) or job.gpu_type)


def budget_stop_at(job: Job, price_per_hour: Decimal, now: datetime) -> datetime:
    """When the job's budget runs out if a pod rented now bills ``price_per_hour`` plus its disks:
    the pod stops itself then (``JobSpec.budget_stop_unix``), should the bot not be there to."""
    rate = price_per_hour + PodDisks.of(job.params).running_per_hour()
    left = max(job.budget_usd - job.cost_usd, Decimal(0))
    return now + timedelta(hours=float(left / rate)) if rate > 0 else now


async def _first_request(ctx: TrainingContext, job_id: int) -> datetime | None:
    async with ctx.sessions() as session:
        return await jobs.event_at(session, job_id, "pod_requested")


async def retire_extra_pod(
    ctx: TrainingContext, job: Job, pod: Any, *, why: str, event: str = EXTRA_POD_EVENT
) -> bool:
    """Terminate a pod of the job's that it does not keep, and charge the job for the time it ran.

    False when RunPod could not be reached (the reconciler tries again: the pod still carries the
    job's name). The charge runs from when RunPod says it rented the pod (else the job's first
    request for one) to the terminate call.
    """
    try:
        await ctx.runpod.terminate_pod(pod.id)
    except RunPodError as exc:
        log.warning("job %s: could not terminate extra pod %s yet: %s", job.id, pod.id, exc)
        return False
    end = ctx.now()
    start = min(rented_at(pod) or await _first_request(ctx, job.id) or job.pod_created_at or end, end)
    price = await pod_price(ctx, job, pod)
    disks = PodDisks(
        container_gb=int(getattr(pod, "container_disk_gb", 0) or PodDisks.of(job.params).container_gb),
        volume_gb=int(getattr(pod, "volume_gb", 0) or 0),
    )
    charged = await ctx.money.charge_extra_pod(
        job.id,
        pod_id=pod.id,
        price_per_hour=price if price is not None else Decimal(0),
        disks=disks,
        start=start,
        end=end,
    )
    payload = {
        "pod_id": pod.id,
        "pod_name": str(getattr(pod, "name", "") or ""),
        "why": why,
        "charged": str(charged),
        "since": start.isoformat(),
    }
    await record_event(ctx.sessions, job.id, event, payload, now=end)
    await ctx.listeners.event(job, event, payload)
    log.warning("job %s: terminated extra pod %s (%s), charged %s", job.id, pod.id, why, charged)
    return True


def pick_keeper(pods: Sequence[Any], current_id: str | None = None) -> Any:
    """Which of several pods of one name to keep: the one the job has, else one already running,
    else the oldest (the furthest along pulling its image)."""
    for pod in pods:
        if pod.id == current_id:
            return pod
    live = [pod for pod in pods if not getattr(pod, "stopped", False)]
    pool = live or list(pods)
    running = [pod for pod in pool if getattr(pod, "running", False)]
    if running:
        return running[0]
    never = datetime.max.replace(tzinfo=UTC)
    return min(pool, key=lambda pod: status_time(getattr(pod, "last_status_change", None)) or never)


async def pods_named(ctx: TrainingContext, name: str) -> list[Any]:
    return [pod for pod in await ctx.runpod.list_pods() if pod.name == name]
