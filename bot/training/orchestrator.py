"""Drives one training job through its states (design §5), resumable from whatever the row says.

The database is the source of truth: :meth:`Orchestrator.drive` reads the job row, does the next
step for its state, and loops. Every transition is committed (row + ``JobEvent``) before the side
effect it announces, the pod is requested under the name ``loraops-<job id>`` which is committed
first, and the pod id is stored the moment RunPod returns it; so a crash at any point leaves a row
from which a fresh process (the reconciler) resumes the same job on the same pod.

The orchestrator is the coordinator: it keeps one driving task per job and hands each state to its
seam —

- :mod:`bot.training.stepping`: committing moves and endings, the money and deadline guard;
- :mod:`bot.training.renting`: ``provisioning`` (renting a pod, adopting ghost pods);
- :mod:`bot.training.transfer`: ``uploading`` (the dataset), reaching the worker, downloads;
- :mod:`bot.training.collection`: ``training`` and ``collecting`` (samples, checkpoints, scoring hand-off).

It tells the outside world what happens through :class:`JobListener` callbacks (the Discord cog
subscribes); it never imports discord.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.background import TaskGroup
from bot.training.collection import EARLY_STOP_EVENT, Collector
from bot.training.context import TrainingContext
from bot.training.renting import PodRenter
from bot.training.stepping import RetryLater, Stepper
from bot.training.transfer import Transfer
from bot.training.worker_client import WorkerClient, WorkerError
from storage import jobs
from storage.db import unit_of_work
from storage.models import TERMINAL_STATES, Job, JobState

log = logging.getLogger(__name__)

# Consecutive unexpected errors (bugs, database hiccups) before a job is failed rather than retried.
MAX_INTERNAL_ERRORS = 5


class Orchestrator:
    """Drives jobs; keeps at most one driving task per job in this process."""

    def __init__(self, ctx: TrainingContext, *, poll_interval_s: float | None = None) -> None:
        self.ctx = ctx
        self.poll_interval_s = (
            poll_interval_s if poll_interval_s is not None else ctx.settings.poll_interval_s
        )
        self.steps = Stepper(ctx, self.poll_interval_s)
        self.transfer = Transfer(self.steps)
        self.renter = PodRenter(self.steps, self.transfer)
        self.collector = Collector(self.steps, self.transfer)
        self._tasks = TaskGroup("training")
        self._driving: dict[int, asyncio.Task[JobState]] = {}
        self._closed = False

    @property
    def terminated_pods(self) -> set[str]:
        """Pods this process terminated successfully (the reconciler tells them from orphans)."""
        return self.steps.terminated_pods

    # -- task management ----------------------------------------------------------------------------

    def is_driving(self, job_id: int) -> bool:
        task = self._driving.get(job_id)
        return task is not None and not task.done()

    def ensure_driving(self, job_id: int) -> asyncio.Task[JobState] | None:
        """Start a background driver for the job unless one is already running here."""
        if self._closed:
            return None
        task = self._driving.get(job_id)
        if task is not None and not task.done():
            return task
        task = self._tasks.spawn(self.drive(job_id), name=f"job-{job_id}")
        self._driving[job_id] = task
        return task

    async def wait(self, job_id: int) -> JobState | None:
        """Wait for this process's driver of the job to finish (tests, shutdown)."""
        task = self._driving.get(job_id)
        return None if task is None else await task

    async def close(self) -> None:
        """Stop driving (the jobs themselves continue: the next process resumes them)."""
        self._closed = True
        await self._tasks.close()
        self._driving.clear()

    # -- what the service and the reconciler ask of it ---------------------------------------------

    async def load(self, job_id: int) -> Job:
        return await self.steps.load(job_id)

    def worker(self, job: Job) -> WorkerClient:
        return self.transfer.worker(job)

    async def stop(
        self,
        job_id: int,
        new: JobState,
        cause: str,
        *,
        payload: Mapping[str, Any] | None = None,
        log_tail: Sequence[str] | None = None,
    ) -> Job:
        """Fail, cancel or budget-stop a job: commit the transition, then terminate its pod
        (:meth:`bot.training.stepping.Stepper.stop`)."""
        return await self.steps.stop(job_id, new, cause, payload=payload, log_tail=log_tail)

    async def finalize(self, job_id: int, *, gone_at: datetime | None = None) -> Job:
        """Make sure a finishing job's pod is terminated and its cost is up to date."""
        return await self.steps.finalize(job_id, gone_at=gone_at)

    async def pod_stopped(self, job: Job, pod: Any) -> None:
        """The pod left RUNNING on its own: bill up to then, say why, end the job."""
        await self.steps.pod_stopped(job, pod)

    async def acked_at(self, job_id: int) -> datetime | None:
        """When the bot told the worker it had everything (the pod terminates itself after that)."""
        return await self.collector.acked_at(job_id)

    async def stop_early(
        self, job_id: int, reason: str, *, payload: Mapping[str, Any] | None = None
    ) -> tuple[Job, bool]:
        """Stop training now and keep what was made: the job goes on to ``collecting`` and ends as
        ``succeeded`` with the checkpoints it has (an ``early_stop`` event says why).

        Committed first (the event and ``training → collecting``), then the worker is told to stop the
        trainer; collecting downloads what is there, acknowledges, and the pod is terminated. Returns
        the job and whether this call stopped it (False when it was not training any more: idempotent).
        """
        job = await self.load(job_id)
        if JobState(job.state) != JobState.TRAINING:
            return job, False
        async with unit_of_work(self.ctx.sessions) as session:
            if not await jobs.has_event(session, job_id, EARLY_STOP_EVENT):
                # (the reviewer may have recorded its decision already)
                jobs.add_event(
                    session,
                    job_id,
                    EARLY_STOP_EVENT,
                    {"reason": reason, "step": job.step, **(payload or {})},
                    at=self.ctx.now(),
                )
        if not await self.steps.advance(job_id, JobState.COLLECTING, {"early_stop": True, "reason": reason}):
            return await self.load(job_id), False
        log.info("job %s stops early at step %s: %s", job_id, job.step, reason)
        try:
            await self.worker(job).cancel()
        except (WorkerError, ValueError) as exc:
            # Collecting acknowledges the worker, which stops the trainer too; the pod ends either way.
            log.warning("job %s: could not tell the worker to stop early: %s", job_id, exc)
        self.ensure_driving(job_id)
        return await self.load(job_id), True

    # -- the loop -----------------------------------------------------------------------------------

    async def drive(self, job_id: int) -> JobState:
        """Run the job until it is terminal (or pending: it waits for a confirmation)."""
        errors = 0
        while True:
            job = await self.load(job_id)
            state = JobState(job.state)
            if state in TERMINAL_STATES:
                if job.pod_id and job.pod_terminated_at is None:
                    await self.finalize(job_id)
                return state
            if state == JobState.PENDING:
                return state
            try:
                if await self.steps.guard(job):
                    continue
                await self._step(job, state)
                errors = 0
            except RetryLater:
                await asyncio.sleep(self.poll_interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors += 1
                log.exception("job %s: error in %s (%d in a row)", job_id, state.value, errors)
                if errors >= MAX_INTERNAL_ERRORS:
                    await self.stop(job_id, JobState.FAILED, f"internal error in {state.value}: {exc}")
                    continue
                await asyncio.sleep(self.poll_interval_s)

    async def _step(self, job: Job, state: JobState) -> None:
        if state == JobState.PROVISIONING:
            await self.renter.provision(job)
        elif state == JobState.UPLOADING:
            await self.transfer.upload(job)
        elif state == JobState.TRAINING:
            await self.collector.train(job)
        elif state == JobState.COLLECTING:
            await self.collector.collect(job)
