"""The reconciler (design §5): at start-up and on a timer, make the world agree with the database.

- live jobs get a driver in this process again (after a crash or restart: the same job, the same pod);
- a live job whose pod no longer exists is failed, with that cause;
- deadlines and budgets are enforced (terminate, then say why);
- jobs that ended but whose pod was never confirmed terminated get their pod terminated now;
- pods named ``loraops-*`` that no live job owns are terminated (a pod must never run unowned), and
  so is a second pod of a live job's name (a ghost from a create that answered with an error); a
  pod that is not its job's own is charged to the job for the time it ran;
- a live job whose pod exited or died on its own is ended with the reason, billed up to the stop;
- pending jobs nobody confirmed in time are cancelled;
- cost is accrued for every job that has a pod, and the network volume's storage for the guilds;
- messages a job still owes its channel (a summary, a grid row) are announced again, after the pods are
  settled (``bot/training/owed.py``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bot.clients.runpod import RunPodError
from bot.training.context import POD_PREFIX, job_id_from_pod_name
from bot.training.orchestrator import Orchestrator
from bot.training.owed import OwedAnnouncements
from bot.training.pods import EXTRA_POD_EVENT, retire_extra_pod
from bot.training.states import record_event
from storage import jobs
from storage.models import LIVE_STATES, Job, JobState

log = logging.getLogger(__name__)

LIVE_VALUES = frozenset(state.value for state in LIVE_STATES)


@dataclass
class ReconcileReport:
    """What one pass did (job ids, pod ids)."""

    resumed: list[int] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)
    deadlines: list[int] = field(default_factory=list)
    budget_stopped: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    finalized: list[int] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)  # jobs whose pod had exited or died
    ghosts: list[str] = field(default_factory=list)  # extra pods of a live job's name, terminated
    errors: list[str] = field(default_factory=list)


class Reconciler:
    """One per process. ``reconcile_once`` is safe to run at any time and any number of times."""

    def __init__(
        self, orchestrator: Orchestrator, *, confirm_within: timedelta = timedelta(minutes=15)
    ) -> None:
        self.orchestrator = orchestrator
        self.ctx = orchestrator.ctx
        self.confirm_within = confirm_within
        self.owed = OwedAnnouncements(self.ctx)
        # Owed messages are announced once the chat connection is up (their text names roles that
        # only the connected client knows) and after the first pass has settled the pods.
        self.chat_ready = asyncio.Event()
        self._first_pass = asyncio.Event()
        self._owed_started = False
        self.owed_settled = asyncio.Event()  # the start-up announcements are done (or failed)

    async def reconcile_once(self) -> ReconcileReport:
        report = ReconcileReport()
        terminated_before = set(self.orchestrator.terminated_pods)
        try:
            pods: list[Any] | None = list(await self.ctx.runpod.list_pods())
        except RunPodError as exc:
            # Without the pod list we cannot judge vanished pods or orphans; the rest still runs.
            report.errors.append(f"list_pods: {exc}")
            pods = None
        pod_ids = {pod.id for pod in pods} if pods is not None else set()

        async with self.ctx.sessions() as session:
            live = await jobs.live_jobs(session)
            unfinished = await jobs.ended_jobs_with_pod_running(session)

        for job in live:
            try:
                await self._reconcile_live(job, pods, pod_ids, report)
            except Exception as exc:  # one bad job must not stop the sweep
                log.exception("reconciler: job %s", job.id)
                report.errors.append(f"job {job.id}: {exc}")

        for job in unfinished:
            try:
                finished = await self.orchestrator.finalize(job.id)
                if finished.pod_terminated_at is not None:
                    report.finalized.append(job.id)
            except Exception as exc:
                log.exception("reconciler: finalizing job %s", job.id)
                report.errors.append(f"job {job.id}: {exc}")

        volume_id = self.ctx.settings.runpod_network_volume_id
        if volume_id:
            try:
                await self._bill_network_volume(volume_id)
            except Exception as exc:
                log.exception("reconciler: network volume %s", volume_id)
                report.errors.append(f"network volume {volume_id}: {exc}")

        if pods is not None:
            # Pods this pass terminated itself are still in the (earlier) list: not orphans.
            gone = set(self.orchestrator.terminated_pods) - terminated_before
            await self._terminate_orphans(pods, report, gone)
        # Last, so that a summary announced again tells the final cost of a pod just terminated.
        self._first_pass.set()
        if self._owed_started:
            try:
                await self.owed.finish()
            except Exception as exc:
                log.exception("reconciler: owed messages")
                report.errors.append(f"owed messages: {exc}")
        return report

    async def finish_owed_at_start(self) -> None:
        """Once the chat is connected and the first pass is done: announce everything still owed."""
        await self.chat_ready.wait()
        await self._first_pass.wait()
        if self._owed_started:
            return
        self._owed_started = True
        try:
            await self.owed.finish(startup=True)
        finally:
            self.owed_settled.set()

    async def _reconcile_live(
        self, job: Job, pods: list[Any] | None, pod_ids: set[str], report: ReconcileReport
    ) -> None:
        now = self.ctx.now()
        state = JobState(job.state)
        if state == JobState.PENDING:
            if job.created_at + self.confirm_within < now:
                await self.orchestrator.stop(
                    job.id, JobState.CANCELLED, "not confirmed in time", payload={"reason": "unconfirmed"}
                )
                report.expired.append(job.id)
            return
        if job.deadline_at is not None and now >= job.deadline_at:
            await self.orchestrator.stop(
                job.id,
                JobState.FAILED,
                f"deadline passed ({job.deadline_at:%Y-%m-%d %H:%M} UTC): the pod was stopped",
                payload={"reason": "deadline"},
            )
            report.deadlines.append(job.id)
            return
        if (
            state == JobState.COLLECTING
            and job.pod_id
            and job.pod_terminated_at is None
            and pods is not None
            and job.pod_id not in pod_ids
        ):
            # Everything collected and acknowledged, then the pod terminated itself (while no bot was
            # running): settle it at the acknowledgement, before accruing would bill the gap.
            acked_at = await self.orchestrator.acked_at(job.id)
            if acked_at is not None and await self.ctx.runpod.get_pod(job.pod_id) is None:
                await self.orchestrator.finalize(job.id, gone_at=acked_at)
        # A pod missing from the list is double-checked: it may have been created after we listed.
        # In ``collecting`` a pod that terminated itself after our acknowledgement is expected; the
        # orchestrator settles that case.
        if (
            job.pod_id
            and pods is not None
            and job.pod_id not in pod_ids
            and state != JobState.COLLECTING
            and await self.ctx.runpod.get_pod(job.pod_id) is None
        ):
            await self.orchestrator.stop(
                job.id,
                JobState.FAILED,
                "the pod disappeared (terminated outside loraops?)",
                payload={"reason": "pod_vanished"},
            )
            report.vanished.append(job.id)
            return
        listed = next((pod for pod in pods or () if pod.id == job.pod_id), None)
        collected = state == JobState.COLLECTING and await self.orchestrator.acked_at(job.id) is not None
        if listed is not None and getattr(listed, "stopped", False) and not collected:
            # Exited or dead while nobody watched (a restart, a host fault, the balance ran out). A job
            # whose results are all in is finished whatever its pod does: the orchestrator ends it.
            await self.orchestrator.pod_stopped(job, listed)
            report.stopped.append(job.id)
            return
        if job.pod_id:
            await self.ctx.money.accrue(job.id)
            verdict = await self.ctx.money.budget_stop(job.id)
            if verdict is not None:
                await self.orchestrator.stop(
                    job.id,
                    JobState.BUDGET_STOPPED,
                    verdict.message,
                    payload={
                        "scope": verdict.scope,
                        "spent": str(verdict.spent),
                        "budget": str(verdict.budget),
                    },
                )
                report.budget_stopped.append(job.id)
                return
        if not self.orchestrator.is_driving(job.id):
            self.orchestrator.ensure_driving(job.id)
            report.resumed.append(job.id)

    async def _terminate_orphans(self, pods: list[Any], report: ReconcileReport, gone: set[str]) -> None:
        # Read ownership again: the live pass above may have stopped jobs (their pods are now orphans
        # unless already terminated) and drivers may have stored new pod ids meanwhile.
        async with self.ctx.sessions() as session:
            owners = await jobs.live_pod_owners(session)
        owned_ids = {row.pod_id for row in owners if row.pod_id}
        # A live job's name protects a pod only while the job has no pod yet (it may be adopting it);
        # once the job has its pod, another pod of that name is a ghost that bills for nothing.
        adopting_names = {row.pod_name for row in owners if row.pod_name and not row.pod_id}
        for pod in pods:
            name = pod.name or ""
            if (
                not name.startswith(POD_PREFIX)
                or pod.id in owned_ids
                or name in adopting_names
                or pod.id in gone
            ):
                continue
            job_id = job_id_from_pod_name(name)
            job = await self._maybe_job(job_id) if job_id is not None else None
            if job is not None and job.pod_id != pod.id:
                # Not the job's own pod (that one is finalized above): charge it to the job.
                live = job.state in LIVE_VALUES
                why = "a second pod of this job's name" if live else "an orphan pod"
                event = EXTRA_POD_EVENT if live else "orphan_terminated"
                if await retire_extra_pod(self.ctx, job, pod, why=why, event=event):
                    (report.ghosts if live else report.orphans).append(pod.id)
                else:
                    report.errors.append(f"terminate extra pod {pod.id}: RunPod did not answer")
                continue
            try:
                await self.ctx.runpod.terminate_pod(pod.id)
            except RunPodError as exc:
                report.errors.append(f"terminate orphan {pod.id}: {exc}")
                continue
            log.warning("reconciler: terminated orphan pod %s (%s)", pod.id, name)
            report.orphans.append(pod.id)
            if job is not None:
                payload = {"pod_id": pod.id, "pod_name": name}
                now = self.ctx.now()
                await record_event(self.ctx.sessions, job.id, "orphan_terminated", payload, now=now)
                await self.ctx.listeners.event(job, "orphan_terminated", payload)

    async def _bill_network_volume(self, volume_id: str) -> None:
        """RunPod bills the network volume every hour: put it in the ledger, shared by the guilds
        (those configured, else those with jobs), so each month's budget counts it."""
        volume = await self.ctx.runpod.get_network_volume(volume_id)  # type: ignore[attr-defined]
        if volume is None:
            return
        guilds = list(self.ctx.settings.discord_guild_ids)
        if not guilds:
            async with self.ctx.sessions() as session:
                guilds = await jobs.guilds_with_jobs(session)
        await self.ctx.money.accrue_network_volume(volume.id, volume.size_gb, guilds)

    async def _maybe_job(self, job_id: int) -> Job | None:
        async with self.ctx.sessions() as session:
            return await jobs.job(session, job_id)

    async def run(self, interval_s: float = 60.0) -> None:
        """Reconcile now and then every ``interval_s`` seconds, until cancelled."""
        while True:
            try:
                report = await self.reconcile_once()
                if report.errors:
                    log.warning("reconciler: %d problem(s): %s", len(report.errors), "; ".join(report.errors))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciler pass failed")
            await asyncio.sleep(interval_s)
