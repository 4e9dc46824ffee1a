"""Collection (design §5, §6): the ``training`` and ``collecting`` steps, which record progress and
bring every sample and checkpoint into the blob store, and the hand-off to scoring.

- While training, each turn records the worker's progress and collects what is new, so a crash loses
  nothing already downloaded.
- A checkpoint is announced to the listeners (the review scores it) once its step's samples are in or
  no more will come; a ``checkpoint_announced`` event is committed first, so each is announced once
  (and one owed after a crash is announced by ``bot/training/owed.py``).
- Collecting downloads the rest, records ``acked`` and acknowledges the worker (which lets the pod
  terminate itself), then terminates the pod; only then is the job ``succeeded``.
- A run stopped early on purpose (an ``early_stop`` event) goes on to collecting rather than ending as
  cancelled.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from bot.crashpoints import crashpoint
from bot.training.context import prompt_lines
from bot.training.money import usd
from bot.training.pods import record_exit
from bot.training.states import record_event
from bot.training.stepping import RetryLater, Stepper
from bot.training.transfer import Transfer
from bot.training.worker_client import WorkerAuthError, WorkerClient, WorkerUnavailableError
from storage import jobs
from storage.db import unit_of_work
from storage.models import Checkpoint, Job, JobState, Sample

log = logging.getLogger(__name__)

# The job event that records a deliberate "stop early, keep results" (the review decides it).
EARLY_STOP_EVENT = "early_stop"
# The seed of a sample prompt line (sd-scripts' "--d 42").
_SEED = re.compile(r"--d\s+(\d+)")


class Collector:
    """Records training progress and collects a job's samples and checkpoints."""

    def __init__(self, steps: Stepper, transfer: Transfer) -> None:
        self.steps = steps
        self.transfer = transfer
        self.ctx = steps.ctx

    # -- training -------------------------------------------------------------------------------------

    async def train(self, job: Job) -> None:
        """The ``training`` step: record progress, collect what is new, follow the worker's state."""
        worker = self.transfer.worker(job)
        status = await self.transfer.status(job, worker)
        if status is None:
            raise RetryLater
        job = await self._record_progress(job, status)
        await self.collect_files(job, worker, status)
        if status.state == "finished":
            await self.steps.advance(job.id, JobState.COLLECTING, {"step": status.step})
            return
        if status.state == "failed":
            await self.steps.failed(job, status.error, status.log_tail)
            return
        if status.state == "cancelled":
            if await self.early_stopped(job.id):  # we stopped it on purpose: keep what was made
                await self.steps.advance(
                    job.id, JobState.COLLECTING, {"step": status.step, "early_stop": True}
                )
                return
            await self.steps.stop(job.id, JobState.CANCELLED, status.error or "the worker stopped training")
            return
        if status.state == "waiting_dataset":
            # The container restarted and lost the dataset: give it again.
            await self.transfer.put_dataset(job, worker)
        await self.steps.emit_progress(job)
        raise RetryLater

    async def _record_progress(self, job: Job, status: Any) -> Job:
        async with unit_of_work(self.ctx.sessions) as session:
            row = await jobs.job(session, job.id)
            assert row is not None
            row.step = int(status.step)
            if status.total_steps:
                row.total_steps = int(status.total_steps)
            row.loss = status.loss
            row.rate = status.rate
            row.eta_s = status.eta_s
            if status.log_tail:
                row.last_log = list(status.log_tail)[-50:]
        return row

    async def early_stopped(self, job_id: int) -> bool:
        """Whether the job was stopped early on purpose (keep its results)."""
        async with self.ctx.sessions() as session:
            return await jobs.has_event(session, job_id, EARLY_STOP_EVENT)

    # -- collecting -----------------------------------------------------------------------------------

    async def acked_at(self, job_id: int) -> datetime | None:
        """When the bot told the worker it had everything (the pod terminates itself after that)."""
        async with self.ctx.sessions() as session:
            return await jobs.event_at(session, job_id, "acked")

    async def collect(self, job: Job) -> None:
        """The ``collecting`` step: everything in, worker acknowledged, pod gone, then ``succeeded``."""
        if job.pod_terminated_at is None:
            acked = await self.acked_at(job.id) is not None
            worker = self.transfer.worker(job)
            try:
                status = await worker.status()
            except WorkerAuthError:
                await self.steps.stop(job.id, JobState.FAILED, "the worker refused this job's token")
                return
            except WorkerUnavailableError:
                pod = await self.ctx.runpod.get_pod(job.pod_id or "")
                stopped = pod is not None and getattr(pod, "stopped", False)
                if pod is not None and not stopped:
                    raise RetryLater from None
                if stopped:
                    await record_exit(self.ctx, job, pod)  # billing ends there whatever comes next
                if not acked:
                    if stopped:
                        await self.steps.pod_stopped(job, pod)
                    else:
                        await self.steps.pod_vanished(job)
                    return
                if pod is None:
                    # Acknowledged, so everything is here, and the pod terminated itself: finished,
                    # and billed until it went (not until we noticed).
                    job = await self.steps.finalize(job.id, gone_at=await self.acked_at(job.id))
                status = None
            if status is not None and status.state != "acknowledged":
                complete = await self.collect_files(job, worker, status, final=True)
                if not complete:
                    raise RetryLater
                if not acked:
                    await record_event(self.ctx.sessions, job.id, "acked", {}, now=self.ctx.now())
                try:
                    await worker.ack()
                except WorkerUnavailableError:
                    pass  # it may already be exiting; terminating the pod settles it
                crashpoint("collect.acked")
            job = await self.steps.finalize(job.id)
            if job.pod_terminated_at is None:
                raise RetryLater  # RunPod unreachable: do not call it done while the meter may run
        async with self.ctx.sessions() as session:
            checkpoints = await jobs.checkpoints(session, job.id)
        payload = {
            "cost_usd": str(job.cost_usd),
            "cost": usd(job.cost_usd),
            "steps": job.step,
            "checkpoints": len(checkpoints),
        }
        await self.steps.advance(job.id, JobState.SUCCEEDED, payload)

    # -- files ----------------------------------------------------------------------------------------

    async def collect_files(
        self, job: Job, worker: WorkerClient, status: Any, *, final: bool = False
    ) -> bool:
        """Download and record every sample and checkpoint not yet collected. True when all are in."""
        spec = job.params.get("spec") or {}
        prompts = prompt_lines(str(spec.get("prompts_txt", "")))
        async with self.ctx.sessions() as session:
            have_samples = {
                (sample.step, sample.prompt_index) for sample in await jobs.samples(session, job.id)
            }
            have_ckpts = {ckpt.step: ckpt for ckpt in await jobs.checkpoints(session, job.id)}
        complete = True
        new_samples: list[Sample] = []
        for info in status.samples:
            index = info.prompt_index if info.prompt_index is not None else 0
            if (info.step, index) in have_samples:
                continue
            if not await self.transfer.download(job, worker, "samples", info):
                complete = False
                continue
            prompt = prompts[index] if 0 <= index < len(prompts) else ""
            seed_match = _SEED.search(prompt)
            sample = Sample(
                job_id=job.id,
                step=info.step,
                prompt_index=index,
                prompt=prompt,
                seed=int(seed_match.group(1)) if seed_match else None,
                file_name=info.name,
                blob_sha256=info.sha256,
                created_at=self.ctx.now(),
            )
            async with unit_of_work(self.ctx.sessions) as session:
                jobs.add_row(session, sample)
            have_samples.add((info.step, index))
            new_samples.append(sample)
        if new_samples:
            await self.ctx.listeners.samples(job, new_samples)
        for info in status.checkpoints:
            existing = have_ckpts.get(info.step)
            if existing is not None and existing.collected:
                continue
            if existing is not None and existing.file_name != info.name:
                log.warning("job %s: second checkpoint %s at step %s ignored", job.id, info.name, info.step)
                continue
            if existing is None:
                async with unit_of_work(self.ctx.sessions) as session:
                    existing = Checkpoint(
                        job_id=job.id,
                        step=info.step,
                        file_name=info.name,
                        sha256=info.sha256,
                        size_bytes=info.size,
                        collected=False,
                        created_at=self.ctx.now(),
                    )
                    jobs.add_row(session, existing)
                have_ckpts[info.step] = existing
            if not await self.transfer.download(job, worker, "checkpoints", info):
                complete = False
                continue
            async with unit_of_work(self.ctx.sessions) as session:
                row = await jobs.checkpoint(session, existing.id)
                assert row is not None
                row.collected = True
            existing.collected = True
        await self._announce_checkpoints(job, len(prompts), final=final or status.state != "training")
        return complete

    async def _announce_checkpoints(self, job: Job, prompt_count: int, *, final: bool) -> None:
        """Tell listeners about collected checkpoints once their step's samples are in (or no more
        will come). Recorded as a ``checkpoint_announced`` event first, so each is announced once."""
        async with self.ctx.sessions() as session:
            announced = {
                int(event.payload.get("step", -1))
                for event in await jobs.events(session, job.id, "checkpoint_announced")
            }
            checkpoints = await jobs.checkpoints(session, job.id, collected_only=True)
            samples = await jobs.samples(session, job.id)
        latest_step = max((s.step for s in samples), default=-1)
        for checkpoint in checkpoints:
            if checkpoint.step in announced:
                continue
            at_step = sorted((s for s in samples if s.step == checkpoint.step), key=lambda s: s.prompt_index)
            # Samples come right after the save in sd-scripts: wait for them unless none will come.
            ready = final or len(at_step) >= prompt_count or latest_step > checkpoint.step
            if not ready:
                continue
            await record_event(
                self.ctx.sessions,
                job.id,
                "checkpoint_announced",
                {"step": checkpoint.step, "checkpoint_id": checkpoint.id},
                now=self.ctx.now(),
            )
            crashpoint("checkpoint.announced")  # the row is owed now (bot/training/owed.py posts it)
            await self.ctx.listeners.checkpoint(job, checkpoint, at_step)
