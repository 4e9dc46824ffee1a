"""The face alarm and what can be done about it: stop now, let it run, retry with the suggested changes.

The review decides (``bot.review.verdict.alarm_due``) and records a ``face_alarm`` job event once per
job; :class:`FaceAlarm` is the message the cog posts with three buttons. :class:`AlarmActions` does what
the buttons ask, in the domain:

- **stop now** stops training and keeps what was saved (the job is collected and ends ``succeeded``
  with an ``early_stop`` event), and says what it saved: the steps not run at the run's rate and the
  pod's price;
- **let it run** records who chose to go on (said once);
- **retry with these changes** applies the dataset changes it can (face crops, exclusions of the
  photos curation flagged) and opens the quote of a new job with the suggested preset and overrides;
  nothing is rented until the requester confirms, as with any quote.

The cog checks who pressed (requester, trainer or admin) and renders; nothing here knows Discord.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import ConflictError, NotFoundError
from bot.outbox import FACE_ALARM
from bot.review.notify import clip, inline, money
from bot.review.ranking import money_saved
from bot.review.suggest import DatasetFacts, JobFacts, Suggestions, suggest
from bot.review.verdict import AlarmDecision, CheckpointVerdict, verdicts
from bot.text import plural
from bot.training.presets import OverrideError, apply_overrides, load_preset
from bot.training.triggers import check_trigger
from storage import datasets as dataset_store
from storage import jobs as job_store
from storage import outbox as outbox_store
from storage import review as store
from storage.db import unit_of_work
from storage.models import JobState
from storage.types import utcnow
from storage.views import JobView

if TYPE_CHECKING:
    from bot.datasets.curation import CurationService
    from bot.training.jobs import JobService, Quote

log = logging.getLogger(__name__)

ALARM_EVENT = "face_alarm"
ALARM_CHOICE_EVENT = "face_alarm_choice"


@dataclass(frozen=True)
class FaceAlarm:
    """The alarm message: what the review sees, what finishing would cost, what to change."""

    job_id: int
    requester_id: int
    dataset_name: str
    step: int
    total_steps: int
    verdict: CheckpointVerdict
    loss_text: str
    remaining_cost: Decimal | None
    suggestions: Suggestions | None
    checkpoints: int

    def content(self) -> str:
        name = inline(self.dataset_name, 40)
        nth = f"{self.checkpoints}{_ordinal(self.checkpoints)}"
        where = f"{nth} checkpoint, step {self.step}/{self.total_steps}"
        lines = [
            f"⚠️ <@{self.requester_id}> job #{self.job_id}: **the face is not being learned.** "
            f"At the {where} the samples are {self.verdict.text(name)}, while {self.loss_text}: "
            "training is learning the rest of the pictures (body, clothes, scene), not the face.",
            f"Finishing the run would cost about {money(self.remaining_cost)} more "
            f"({self.total_steps - self.step} steps to go).",
        ]
        if self.suggestions:
            lines.extend(self.suggestions.lines())
        lines.append("**Stop now** keeps the checkpoints saved so far; **Let it run** goes on to the end.")
        return clip("\n".join(lines))


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


@dataclass(frozen=True)
class StopOutcome:
    stopped: bool
    step: int
    total_steps: int
    saved: Decimal | None
    checkpoints: int

    def text(self, job_id: int, who: str) -> str:
        if not self.stopped:
            return f"Job #{job_id} is no longer training: nothing to stop."
        left = max(self.total_steps - self.step, 0)
        share = f", {left * 100 // self.total_steps}% of the run" if self.total_steps else ""
        return (
            f"🛑 Job #{job_id} stopped by {who} at step {self.step}/{self.total_steps}; "
            f"the {self.checkpoints} checkpoint{'s' if self.checkpoints != 1 else ''} saved so far are kept. "
            f"This saves about {money(self.saved)} (the {left} steps not run{share})."
        )


@dataclass(frozen=True)
class RetryOutcome:
    """What a retry changed in the dataset, and the quote of the new job."""

    applied: tuple[str, ...]
    quote: Quote
    suggestions: Suggestions


class AlarmActions:
    """Stop now / let it run / retry with these changes (one per process, built at start-up)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        curation: CurationService,
        jobs: JobService | None,
    ) -> None:
        self._sessions = sessions
        self._curation = curation
        self._jobs = jobs

    async def _job(self, job_id: int, guild_id: int | None) -> JobView:
        async with self._sessions() as session:
            job = await job_store.job(session, job_id)
            if job is None or (guild_id is not None and job.guild_id != guild_id):
                raise NotFoundError(f"there is no job #{job_id} here")
            return JobView.of(job)

    # -- the alarm -----------------------------------------------------------------------------------------

    async def record_alarm(self, job: JobView, decision: AlarmDecision) -> bool:
        """Record the alarm of ``job``; True when it is to be posted: the first time, or again at a later
        checkpoint when the earlier one never reached the channel (the bot died in between)."""
        async with unit_of_work(self._sessions) as session:
            existing = await job_store.has_event(session, job.id, ALARM_EVENT)
            if existing:
                owed = await outbox_store.owed(session, job.id, FACE_ALARM)
                return owed is None or (owed.message_id is None and owed.done_at is None)
            job_store.add_event(
                session,
                job.id,
                ALARM_EVENT,
                {
                    "step": decision.verdict.step,
                    "recognised": decision.verdict.recognised,
                    "samples": decision.verdict.samples,
                    "loss": decision.loss.text(),
                },
                at=utcnow(),
            )
        return True

    async def alarm_for(self, job: JobView, decision: AlarmDecision, dataset_name: str) -> FaceAlarm:
        remaining = money_saved(job.total_steps - decision.verdict.step, job.rate, job.price_per_hour)
        return FaceAlarm(
            job_id=job.id,
            requester_id=job.requested_by,
            dataset_name=dataset_name,
            step=decision.verdict.step,
            total_steps=job.total_steps,
            verdict=decision.verdict,
            loss_text=decision.loss.text(),
            remaining_cost=remaining,
            suggestions=await self.suggestions(job.id),
            checkpoints=decision.checkpoints,
        )

    # -- the buttons -----------------------------------------------------------------------------------------

    async def stop_now(self, job_id: int, *, user_id: int, guild_id: int | None = None) -> StopOutcome:
        """Stop training now, keep the checkpoints, say what it saved. Idempotent."""
        if self._jobs is None:
            raise ConflictError("training is not set up on this bot")
        job = await self._job(job_id, guild_id)
        if JobState(job.state) != JobState.TRAINING:
            return StopOutcome(False, job.step, job.total_steps, None, 0)
        saved = money_saved(job.total_steps - job.step, job.rate, job.price_per_hour)
        reason = "stopped on request after the face alarm"
        payload: dict[str, Any] = {
            "by": user_id,
            "alarm": True,
            "saved_usd": str(saved) if saved is not None else None,
        }
        stopped_job, stopped = await self._jobs.stop_early(job_id, reason, payload=payload)
        async with unit_of_work(self._sessions) as session:
            job_store.add_event(
                session, job_id, ALARM_CHOICE_EVENT, {"choice": "stop", "by": user_id}, at=utcnow()
            )
        async with self._sessions() as session:
            kept = len(await store.checkpoint_ids_of(session, job_id))
        return StopOutcome(stopped, stopped_job.step, stopped_job.total_steps, saved, kept)

    async def let_run(self, job_id: int, *, user_id: int, guild_id: int | None = None) -> bool:
        """Record that ``user_id`` lets the run go on; False when someone already chose."""
        await self._job(job_id, guild_id)
        async with unit_of_work(self._sessions) as session:
            existing = await job_store.has_event(session, job_id, ALARM_CHOICE_EVENT)
            if existing:
                return False
            job_store.add_event(
                session, job_id, ALARM_CHOICE_EVENT, {"choice": "run", "by": user_id}, at=utcnow()
            )
        return True

    # -- suggestions and the retry ------------------------------------------------------------------------

    async def suggestions(self, job_id: int) -> Suggestions | None:
        """What to change after ``job_id``, from its dataset's report card and its settings."""
        job = await self._job(job_id, None)
        async with self._sessions() as session:
            dataset = await dataset_store.get_dataset(session, job.dataset_id)
            assert dataset is not None
            full = await dataset_store.included_positions(session, dataset.id, "full")
            crops = await dataset_store.included_positions(session, dataset.id, "face_crops")
        try:
            plan, flagged = await self._curation.pending_plan(dataset.id)
        except Exception:  # suggestions are advice: a curation problem must not stop the alarm
            log.exception("job %s: no curation plan for suggestions", job_id)
            return None
        trigger = check_trigger(dataset.trigger_word, suggest=3, seed=dataset.name)
        facts = DatasetFacts(
            name=dataset.name,
            trigger=dataset.trigger_word,
            photos=len(full),
            small_faces=tuple(flagged.get("small_face", ())),
            near_duplicates=tuple(flagged.get("near_duplicate", ())),
            harmful=dict(plan.exclusions),
            croppable=tuple(plan.crops),
            crops=len(crops),
            trigger_problems=tuple(trigger.warnings),
            trigger_alternatives=tuple(trigger.suggestions),
        )
        return suggest(facts, await self._job_facts(job))

    async def _job_facts(self, job: JobView) -> JobFacts:
        overrides: Mapping[str, Any] = (job.params or {}).get("overrides") or {}
        raw = {str(k): str(v) for k, v in overrides.items()}
        try:
            preset, _ = apply_overrides(load_preset(job.preset), raw)
        except (OverrideError, FileNotFoundError, KeyError):
            preset = load_preset(job.preset)
        dim = preset.train.get("network_dim")
        rising = False
        async with self._sessions() as session:
            events = await job_store.events(session, job.id, "checkpoint_scored")
        history = {int(e.payload["step"]): dict(e.payload) for e in events if "step" in e.payload}
        if history:
            ceiling = next((d.get("ceiling") for d in history.values() if d.get("ceiling")), None)
            judged = verdicts(history, ceiling)
            last = judged[-1]
            rising = last.trend == "rising" and (last.likeness or 0) < 100 and not last.few_recognised
        return JobFacts(
            preset=job.preset,
            family=preset.family,
            overrides=raw,
            crops_subset=bool(preset.face.get("crops_subset")),
            alpha_mask=bool(preset.face.get("alpha_mask")),
            network_dim=int(dim) if dim is not None else None,
            total_steps=job.total_steps,
            rising_at_end=rising,
        )

    async def retry(
        self, job_id: int, *, user_id: int, channel_id: int | None, guild_id: int | None = None
    ) -> RetryOutcome:
        """Apply the dataset changes the suggestions call for, then quote the new job (pending)."""
        if self._jobs is None:
            raise ConflictError("training is not set up on this bot")
        job = await self._job(job_id, guild_id)
        suggestions = await self.suggestions(job_id)
        if suggestions is None:
            raise ConflictError(f"job #{job_id} has no suggestions to apply: run `/dataset curate` first")
        applied: list[str] = []
        if suggestions.add_crops or suggestions.exclude_flagged:
            result = await self._curation.apply(
                job.dataset_id,
                exclude_flagged=suggestions.exclude_flagged,
                add_crops=suggestions.add_crops,
                user_id=user_id,
            )
            if result.excluded:
                applied.append(f"excluded {plural(len(result.excluded), 'photo')}")
            if result.crops_added:
                applied.append(f"added {plural(len(result.crops_added), 'face crop')}")
        async with self._sessions() as session:
            dataset = await dataset_store.get_dataset(session, job.dataset_id)
            assert dataset is not None
            name = dataset.name
        quote = await self._jobs.start(
            guild_id=job.guild_id,
            dataset=name,
            preset=suggestions.preset,
            user_id=user_id,
            channel_id=channel_id,
            params=dict(suggestions.overrides),
        )
        async with unit_of_work(self._sessions) as session:
            job_store.add_event(
                session,
                job_id,
                "retry",
                {"by": user_id, "new_job": quote.job_id, "applied": applied},
                at=utcnow(),
            )
        return RetryOutcome(tuple(applied), quote, suggestions)
