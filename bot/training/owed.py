"""What a job still owes its channel after a crash or a failed post, announced again (outbox, part 2).

A transition or a checkpoint is committed (``state`` / ``checkpoint_announced`` job events) *before* the
listeners announce it, so a bot killed in between leaves a job whose announcement never happened: a
finished job without its summary or final progress edit, a checkpoint without its grid row. The
messages themselves are recorded in the outbox (``bot/outbox.py``) when posted; :class:`OwedAnnouncements`
compares the two and announces again, through the same listeners, what has no posted message:

- a job that ended after being confirmed, without a settled ``summary`` or ``progress:final``: its last
  terminal transition is announced again (the progress board makes its final edit, the review posts the
  summary);
- a checkpoint marked announced without a settled ``row:<step>``: announced again (the review scores it
  and posts its row).

Every message goes through the outbox, so announcing again never posts anything twice. At start-up
everything owed is announced; later passes leave alone what is younger than ``grace`` (a live listener
may be posting it right now).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from bot.outbox import PROGRESS, SUMMARY, Outbox, row_key
from bot.training.context import TrainingContext
from storage.models import TERMINAL_STATES, Checkpoint, Job, JobEvent, JobState, Sample

log = logging.getLogger(__name__)

ANNOUNCED_EVENT = "checkpoint_announced"
PROGRESS_FINAL = f"{PROGRESS}:final"


@dataclass
class OwedReport:
    endings: list[int] = field(default_factory=list)  # job ids whose end was announced again
    rows: list[tuple[int, int]] = field(default_factory=list)  # (job id, step)


class OwedAnnouncements:
    def __init__(self, ctx: TrainingContext, *, grace: timedelta = timedelta(minutes=3)) -> None:
        self.ctx = ctx
        self.outbox = Outbox(ctx.sessions)
        self.grace = grace

    async def finish(self, *, startup: bool = False) -> OwedReport:
        report = OwedReport()
        cutoff = self.ctx.now() - (timedelta(0) if startup else self.grace)
        async with self.ctx.sessions() as session:
            announced = (
                await session.scalars(
                    select(JobEvent).where(JobEvent.kind == ANNOUNCED_EVENT).order_by(JobEvent.id)
                )
            ).all()
            endings = (
                await session.scalars(
                    select(JobEvent)
                    .where(
                        JobEvent.kind == "state",
                        JobEvent.to_state.in_([s.value for s in TERMINAL_STATES]),
                        JobEvent.from_state != JobState.PENDING.value,
                    )
                    .order_by(JobEvent.id)
                )
            ).all()
        done: dict[int, set[str]] = {}

        async def keys(job_id: int) -> set[str]:
            if job_id not in done:
                done[job_id] = await self.outbox.done_keys(job_id)
            return done[job_id]

        for event in announced:
            step = int((event.payload or {}).get("step", -1))
            if step < 0 or event.at > cutoff or row_key(step) in await keys(event.job_id):
                continue
            try:
                if await self._announce_checkpoint(event.job_id, step):
                    report.rows.append((event.job_id, step))
            except Exception:
                log.exception("job %s: announcing checkpoint %s again failed", event.job_id, step)
        for event in endings:
            if event.at > cutoff or {SUMMARY, PROGRESS_FINAL} <= await keys(event.job_id):
                continue
            try:
                await self._announce_end(event)
                report.endings.append(event.job_id)
            except Exception:
                log.exception("job %s: announcing its end again failed", event.job_id)
        if report.rows or report.endings:
            log.info("announced again: rows %s, endings %s", report.rows, report.endings)
        return report

    async def _announce_checkpoint(self, job_id: int, step: int) -> bool:
        async with self.ctx.sessions() as session:
            job = await session.get(Job, job_id)
            checkpoint = await session.scalar(
                select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)
            )
            samples = (
                await session.scalars(
                    select(Sample)
                    .where(Sample.job_id == job_id, Sample.step == step)
                    .order_by(Sample.prompt_index)
                )
            ).all()
        if job is None or checkpoint is None:
            return False
        await self.ctx.listeners.checkpoint(job, checkpoint, samples)
        return True

    async def _announce_end(self, event: JobEvent) -> None:
        async with self.ctx.sessions() as session:
            job = await session.get(Job, event.job_id)
        if job is None or job.state != event.to_state:
            return
        assert event.from_state is not None and event.to_state is not None
        await self.ctx.listeners.state(
            job, JobState(event.from_state), JobState(event.to_state), dict(event.payload or {})
        )
