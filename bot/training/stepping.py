"""State stepping (design §5): moving a job from state to state, ending it, and telling the listeners.

Every move is committed (the row and its ``JobEvent``, :func:`bot.training.states.transition`) before
the side effect it announces; ending a job (failed, cancelled, budget-stopped) commits first and then
terminates its pod (:meth:`Stepper.finalize`), so a crash in between leaves a row from which the
reconciler finishes both. :meth:`Stepper.guard` is the money and deadline check made on every turn.

The other seams of the orchestrator (renting, transfer, collection) step jobs only through here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.clients.runpod import RunPodError
from bot.crashpoints import crashpoint
from bot.training.context import TrainingContext
from bot.training.pods import record_exit, stop_reason
from bot.training.progress import ProgressView
from bot.training.states import record_event, transition
from storage import jobs
from storage.db import unit_of_work
from storage.models import TERMINAL_STATES, Job, JobState

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Leave this step and come back after the poll interval."""


class Stepper:
    """Commits a job's moves and endings, and tells the listeners; one per orchestrator."""

    def __init__(self, ctx: TrainingContext, poll_interval_s: float) -> None:
        self.ctx = ctx
        self.poll_interval_s = poll_interval_s
        self._last_progress: dict[int, float] = {}
        self.terminated_pods: set[str] = set()  # pods this process terminated successfully

    async def load(self, job_id: int) -> Job:
        async with self.ctx.sessions() as session:
            job = await jobs.job(session, job_id)
        if job is None:
            raise LookupError(f"job {job_id} does not exist")
        return job

    async def emit_progress(self, job: Job, *, force: bool = False) -> None:
        """Tell the listeners where the job stands: at most once per edit interval unless ``force``."""
        loop_now = asyncio.get_running_loop().time()
        last = self._last_progress.get(job.id)
        interval = self.ctx.settings.progress_edit_interval_s
        if not force and last is not None and loop_now - last < interval:
            return
        self._last_progress[job.id] = loop_now
        await self.ctx.listeners.progress(ProgressView.from_job(job))

    async def event(self, job: Job, kind: str, payload: Mapping[str, Any]) -> None:
        """Commit a noteworthy event on the job's timeline, then tell the listeners."""
        await record_event(self.ctx.sessions, job.id, kind, payload, now=self.ctx.now())
        await self.ctx.listeners.event(job, kind, payload)

    async def advance(self, job_id: int, new: JobState, payload: Mapping[str, Any] | None = None) -> bool:
        """Commit a forward transition and tell the listeners. False if the job moved elsewhere."""
        result = await transition(self.ctx.sessions, job_id, new, payload=payload, now=self.ctx.now())
        if result.changed:
            crashpoint(f"transition:{new.value}")  # announced after a restart if not now (owed.py)
            await self.ctx.listeners.state(result.job, result.old, result.new, result.payload)
            await self.emit_progress(result.job, force=True)
        return result.changed

    # -- ending ---------------------------------------------------------------------------------------

    async def stop(
        self,
        job_id: int,
        new: JobState,
        cause: str,
        *,
        payload: Mapping[str, Any] | None = None,
        log_tail: Sequence[str] | None = None,
    ) -> Job:
        """Fail, cancel or budget-stop a job: commit the transition, then terminate its pod.

        Idempotent: on an already finished job it only makes sure the pod is gone.
        """
        if new not in TERMINAL_STATES or new == JobState.SUCCEEDED:
            raise ValueError(f"stop() is for failed/cancelled/budget_stopped, not {new.value}")

        def _update(job: Job) -> None:
            job.error = cause
            if log_tail is not None:
                job.last_log = list(log_tail)[-50:]

        data = {"cause": cause, **(payload or {})}
        result = await transition(
            self.ctx.sessions, job_id, new, payload=data, update=_update, now=self.ctx.now()
        )
        if result.changed:
            crashpoint(f"stop:{new.value}")  # before the terminate call: the reconciler finishes both
        job = await self.finalize(job_id)
        if result.changed:
            log.info("job %s → %s: %s", job_id, new.value, cause)
            await self.ctx.listeners.state(job, result.old, result.new, result.payload)
            await self.emit_progress(job, force=True)
        return job

    async def finalize(self, job_id: int, *, gone_at: datetime | None = None) -> Job:
        """Make sure the pod of a finishing job is terminated, stamp when, and bring cost up to date.

        ``gone_at``: the pod is already gone by itself (it terminates itself once acknowledged); it
        stopped billing then, not when we noticed. If RunPod cannot be reached the stamp stays empty and
        the reconciler tries again later.
        """
        job = await self.load(job_id)
        if job.pod_id and job.pod_terminated_at is None and gone_at is not None:
            async with unit_of_work(self.ctx.sessions) as session:
                row = await jobs.job(session, job_id)
                if row is not None and row.pod_terminated_at is None:
                    row.pod_terminated_at = max(gone_at, row.pod_created_at or gone_at)
                    jobs.add_event(
                        session,
                        job_id,
                        "pod_gone",
                        {"pod_id": job.pod_id, "since": gone_at.isoformat()},
                        at=self.ctx.now(),
                    )
        elif job.pod_id and job.pod_terminated_at is None:
            try:
                await self.ctx.runpod.terminate_pod(job.pod_id)
            except RunPodError as exc:
                log.warning("job %s: could not terminate pod %s yet: %s", job_id, job.pod_id, exc)
            else:
                self.terminated_pods.add(job.pod_id)
                now = self.ctx.now()
                async with unit_of_work(self.ctx.sessions) as session:
                    row = await jobs.job(session, job_id)
                    if row is not None and row.pod_terminated_at is None:
                        row.pod_terminated_at = now
                        jobs.add_event(session, job_id, "pod_terminated", {"pod_id": job.pod_id}, at=now)
        await self.ctx.money.accrue(job_id)
        return await self.load(job_id)

    async def pod_stopped(self, job: Job, pod: Any) -> None:
        """The pod left RUNNING on its own: bill up to then, say why, end the job (pod terminated)."""
        await record_exit(self.ctx, job, pod)
        why = stop_reason(pod)
        await self.stop(
            job.id,
            why.state,
            why.cause,
            payload={"reason": f"pod_{why.reason}", "pod_status": str(pod.desired_status)},
        )

    async def pod_vanished(self, job: Job) -> None:
        await self.stop(
            job.id,
            JobState.FAILED,
            "the pod disappeared (terminated outside loraops?)",
            payload={"reason": "pod_vanished"},
        )

    async def failed(self, job: Job, error: str | None, log_tail: Sequence[str]) -> None:
        """The trainer failed: end the job with its words and the log's tail."""
        cause = error or "the trainer failed without saying why"
        await self.stop(
            job.id, JobState.FAILED, cause, log_tail=log_tail, payload={"log_tail": list(log_tail)[-20:]}
        )

    # -- the check made on every turn -----------------------------------------------------------------

    async def guard(self, job: Job) -> bool:
        """Money and deadline, checked on every turn once a pod exists. True if the job was stopped."""
        if job.deadline_at is not None and self.ctx.now() >= job.deadline_at:
            await self.stop(
                job.id,
                JobState.FAILED,
                f"deadline passed ({job.deadline_at:%Y-%m-%d %H:%M} UTC): the pod was stopped",
                payload={"reason": "deadline"},
            )
            return True
        if job.pod_id is None:
            return False
        await self.ctx.money.accrue(job.id)
        verdict = await self.ctx.money.budget_stop(
            job.id, lookahead_s=self.poll_interval_s + self.ctx.money.min_period.total_seconds()
        )
        if verdict is not None:
            await self.stop(
                job.id,
                JobState.BUDGET_STOPPED,
                verdict.message,
                payload={"scope": verdict.scope, "spent": str(verdict.spent), "budget": str(verdict.budget)},
            )
            return True
        return False
