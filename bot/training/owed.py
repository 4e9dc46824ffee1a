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
  and posts its row);
- a run the review stopped early (its ``early_stop`` event, and the transition to ``collecting`` that
  stop made) without a settled ``early_stop`` message: the ``early_stop`` event is announced again (the
  review says the run stopped and what it saved). A stop answered from the face alarm is not: its own
  reply to the button said so.

Every message goes through the outbox, so announcing again never posts anything twice. At start-up
everything owed is announced; later passes leave alone what is younger than ``grace`` (a live listener
may be posting it right now).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from bot.outbox import EARLY_STOP, PROGRESS, SUMMARY, Outbox, row_key
from bot.training.collection import EARLY_STOP_EVENT
from bot.training.context import TrainingContext
from storage import jobs
from storage.models import JobEvent, JobState

log = logging.getLogger(__name__)

ANNOUNCED_EVENT = "checkpoint_announced"
PROGRESS_FINAL = f"{PROGRESS}:final"
# Announcing the same thing again this many times in one process without it getting posted means it
# cannot be (e.g. its channel is gone): stop retrying until the next start, which tries again.
MAX_TRIES = 5


@dataclass
class OwedReport:
    endings: list[int] = field(default_factory=list)  # job ids whose end was announced again
    rows: list[tuple[int, int]] = field(default_factory=list)  # (job id, step)
    early_stops: list[int] = field(default_factory=list)  # job ids whose early-stop note was owed


class OwedAnnouncements:
    def __init__(self, ctx: TrainingContext, *, grace: timedelta = timedelta(minutes=3)) -> None:
        self.ctx = ctx
        self.outbox = Outbox(ctx.sessions)
        self.grace = grace
        self._tries: dict[tuple[int, str], int] = {}

    def _try(self, job_id: int, what: str) -> bool:
        tries = self._tries.get((job_id, what), 0)
        if tries >= MAX_TRIES:
            return False
        self._tries[(job_id, what)] = tries + 1
        if tries + 1 == MAX_TRIES:
            log.warning(
                "job %s: %s still owed after %d tries; not trying again before a restart",
                job_id,
                what,
                tries + 1,
            )
        return True

    async def finish(self, *, startup: bool = False) -> OwedReport:
        report = OwedReport()
        cutoff = self.ctx.now() - (timedelta(0) if startup else self.grace)
        async with self.ctx.sessions() as session:
            announced = await jobs.events_of_kind(session, ANNOUNCED_EVENT)
            endings = await jobs.endings_after_start(session)
            early_stops = await jobs.events_of_kind(session, EARLY_STOP_EVENT)
        done: dict[int, set[str]] = {}

        async def keys(job_id: int) -> set[str]:
            if job_id not in done:
                done[job_id] = await self.outbox.done_keys(job_id)
            return done[job_id]

        for event in announced:
            step = int((event.payload or {}).get("step", -1))
            if step < 0 or event.at > cutoff or row_key(step) in await keys(event.job_id):
                continue
            if not self._try(event.job_id, row_key(step)):
                continue
            try:
                if await self._announce_checkpoint(event.job_id, step):
                    report.rows.append((event.job_id, step))
            except Exception:
                log.exception("job %s: announcing checkpoint %s again failed", event.job_id, step)
        for event in early_stops:
            if (
                event.at > cutoff
                or (event.payload or {}).get("alarm")
                or EARLY_STOP in await keys(event.job_id)
            ):
                continue
            if not self._try(event.job_id, EARLY_STOP):
                continue
            try:
                if await self._announce_early_stop(event):
                    report.early_stops.append(event.job_id)
            except Exception:
                log.exception("job %s: announcing its early stop again failed", event.job_id)
        for event in endings:
            if event.at > cutoff or {SUMMARY, PROGRESS_FINAL} <= await keys(event.job_id):
                continue
            if not self._try(event.job_id, SUMMARY):
                continue
            try:
                await self._announce_end(event)
                report.endings.append(event.job_id)
            except Exception:
                log.exception("job %s: announcing its end again failed", event.job_id)
        if report.rows or report.endings or report.early_stops:
            log.info(
                "announced again: rows %s, early stops %s, endings %s",
                report.rows,
                report.early_stops,
                report.endings,
            )
        return report

    async def _announce_checkpoint(self, job_id: int, step: int) -> bool:
        async with self.ctx.sessions() as session:
            job = await jobs.job(session, job_id)
            checkpoint = await jobs.checkpoint_at(session, job_id, step)
            samples = await jobs.samples(session, job_id, step=step)
        if job is None or checkpoint is None:
            return False
        await self.ctx.listeners.checkpoint(job, checkpoint, samples)
        return True

    async def _announce_early_stop(self, event: JobEvent) -> bool:
        # The review records its decision before it stops the run; only a run that stop did leave
        # training (``training → collecting`` with ``early_stop``) owes the note.
        async with self.ctx.sessions() as session:
            job = await jobs.job(session, event.job_id)
            states = await jobs.events(session, event.job_id, "state")
        stopped = any(
            e.to_state == JobState.COLLECTING.value and (e.payload or {}).get("early_stop") for e in states
        )
        if job is None or not stopped:
            return False
        await self.ctx.listeners.event(job, EARLY_STOP_EVENT, dict(event.payload or {}))
        return True

    async def _announce_end(self, event: JobEvent) -> None:
        async with self.ctx.sessions() as session:
            job = await jobs.job(session, event.job_id)
        if job is None or job.state != event.to_state:
            return
        assert event.from_state is not None and event.to_state is not None
        await self.ctx.listeners.state(
            job, JobState(event.from_state), JobState(event.to_state), dict(event.payload or {})
        )
