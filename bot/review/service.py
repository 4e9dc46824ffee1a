"""The review service: what happens when a checkpoint arrives and when a run ends (design §2 steps 6–8).

``review_checkpoint`` scores the checkpoint's samples against the dataset's identity reference, stores
the scores, renders the checkpoint's grid row and the renewed chart, and decides on early stopping.
``final_review`` renders the full grid and the summary text. Both return plain data; the Discord cog
posts it (``ReviewListener`` bridges the training orchestrator's callbacks to a publisher the cog
implements). CPU work (decoding, faces, drawing) runs off the event loop.

Each scored checkpoint is recorded as a ``checkpoint_scored`` job event carrying the loss at that moment
and the reference's ceiling, so the chart can be redrawn after a restart without rescoring.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Protocol

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crashpoints import crashpoint
from bot.errors import NotFoundError, UserError
from bot.review.alarm import AlarmActions, FaceAlarm
from bot.review.chart import ChartPoint, render_chart
from bot.review.grid import GridCell, GridRow, RenderedImage, render_grid, render_row
from bot.review.jobs import existing_job
from bot.review.notify import (
    BestCheckpoint,
    JobReport,
    Notice,
    checkpoint_caption,
    inline,
    job_summary,
)
from bot.review.ranking import EarlyStopDecision, Standing, early_stop, money_saved
from bot.review.ranking import best as best_of
from bot.review.scoring import (
    CheckpointScore,
    Examined,
    SampleScore,
    SampleScorer,
    aggregate,
    pct_of_ceiling,
    record_scores,
)
from bot.review.verdict import (
    AlarmPolicy,
    CheckpointVerdict,
    Peak,
    TrainingPhoto,
    alarm_due,
    copied_photo,
    fell_after_peak,
    is_memorising,
    is_recognised,
    verdicts,
)
from bot.review.votes import VoteService
from bot.training.context import JobListener
from storage import datasets as dataset_store
from storage import jobs as job_store
from storage import review as store
from storage.blobs import BlobNotFoundError, BlobStore
from storage.db import unit_of_work
from storage.models import Checkpoint, Job, JobState, Sample
from storage.types import utcnow
from storage.views import CheckpointView, JobView, SampleView

log = logging.getLogger(__name__)

SCORED_EVENT = "checkpoint_scored"
EARLY_STOP_EVENT = "early_stop"

ScorerFactory = Callable[[JobView], Awaitable[SampleScorer | None]]


class StopEarly(Protocol):
    """Stops a training job and keeps what it made; returns the job and whether this call stopped it."""

    async def __call__(
        self, job_id: int, reason: str, *, payload: Mapping[str, Any] | None = None
    ) -> tuple[JobView, bool]: ...


@dataclass(frozen=True)
class CheckpointReview:
    """Everything the cog posts for one checkpoint: the row (reviewers vote on it) and the chart."""

    job_id: int
    step: int
    total_steps: int
    summary: CheckpointScore | None  # None when there is no reference to score against
    scores: list[SampleScore | None]  # per prompt; None = sample missing or unscored
    ceiling: float | None
    engine: str | None
    row: RenderedImage
    chart_png: bytes
    caption: str
    early_stop: EarlyStopDecision
    money_saved: Decimal | None
    verdict: CheckpointVerdict | None = None
    alarm: FaceAlarm | None = None  # set once per job, at the checkpoint that raised it
    peak: Peak | None = None  # likeness fell after a peak: keep that checkpoint
    # True when this review stopped the run (the domain already did; the publisher only says so, once).
    stopped_now: bool = False


@dataclass(frozen=True)
class FinalReview:
    """The end-of-run summary: text (with who may be pinged), full grid and final chart."""

    job_id: int
    notice: Notice
    grid: RenderedImage | None
    chart_png: bytes | None
    best: Standing | None
    retry: bool = False  # a poor run: the summary offers "Retry with these changes"


def _patience(job: JobView) -> int | None:
    if job.early_stop_patience is not None:
        return job.early_stop_patience
    value = job.params.get("early_stop_patience")
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def _latest_ceiling(history: Mapping[int, Mapping[str, Any]]) -> float | None:
    """The ceiling of the last scored checkpoint that recorded one (None before any did)."""
    return next((d.get("ceiling") for d in reversed(list(history.values())) if d.get("ceiling")), None)


class ReviewService:
    """Scores, renders and summarises; persists scores on ``Sample``/``Checkpoint`` rows."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        blobs: BlobStore,
        votes: VoteService,
        scorer_for: ScorerFactory | None = None,
        *,
        row_cell_px: int = 384,
        grid_cell_px: int = 256,
        alarms: AlarmActions | None = None,
    ) -> None:
        self._sessions = sessions
        self._blobs = blobs
        self.votes = votes
        self._scorer_for = scorer_for
        self._scorers: dict[int, SampleScorer | None] = {}
        self._photos: dict[int, list[TrainingPhoto]] = {}
        self.alarms = alarms
        self._row_cell_px = row_cell_px
        self._grid_cell_px = grid_cell_px

    async def _scorer(self, job: JobView) -> SampleScorer | None:
        # One reference per job: building it means analysing the dataset's faces.
        if job.id not in self._scorers:
            scorer = None
            if self._scorer_for is not None:
                try:
                    scorer = await self._scorer_for(job)
                except Exception:
                    log.exception("job %s: no identity reference; samples stay unscored", job.id)
            self._scorers[job.id] = scorer
        return self._scorers[job.id]

    def forget(self, job_id: int) -> None:
        """Drop the cached reference of a finished job."""
        self._scorers.pop(job_id, None)
        self._photos.pop(job_id, None)

    async def _training_photos(self, job: JobView, engine: str) -> list[TrainingPhoto]:
        """The photos the job trained on (its snapshot's), each with its picture hash and face, for the
        copy check. A face crop without its own analysis carries the face of the photo it was cut from."""
        if job.id in self._photos:
            return self._photos[job.id]
        async with self._sessions() as session:
            snapshot = await dataset_store.get_snapshot(session, job.snapshot_id) if job.snapshot_id else None
            wanted = {
                str(item.get("sha256"))
                for item in ((snapshot.manifest or {}).get("images") or [] if snapshot else [])
                if item.get("sha256")
            }
            dataset_images = await dataset_store.dataset_images(session, job.dataset_id)
            images = [i for i in dataset_images if not wanted or i.sha256 in wanted]
            ids = {i.id for i in images} | {i.derived_from_id for i in images if i.derived_from_id}
            faces = await dataset_store.face_embeddings(session, ids, engine)
        photos: list[TrainingPhoto] = []
        for image in images:
            raw = faces.get(image.id) or (faces.get(image.derived_from_id) if image.derived_from_id else None)
            embedding = np.frombuffer(raw, dtype=np.float32) if raw else None
            photos.append(TrainingPhoto(image.position, image.phash, embedding))
        self._photos[job.id] = photos
        return photos

    async def _read(self, sha256: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self._blobs.get, sha256)
        except (BlobNotFoundError, ValueError):
            return None

    async def review_checkpoint(
        self, job: JobView, checkpoint: CheckpointView, samples: Sequence[SampleView]
    ) -> CheckpointReview:
        """Score, store, render the row and chart, and decide on early stop for one checkpoint."""
        ordered = sorted(samples, key=lambda s: s.prompt_index)
        images = list(await asyncio.gather(*(self._read(s.blob_sha256) for s in ordered)))
        scorer = await self._scorer(job)
        scores: list[SampleScore | None] = [None] * len(ordered)
        summary: CheckpointScore | None = None
        copies: list[list[int]] = []
        if scorer is not None:
            present = [i for i, data in enumerate(images) if data is not None]
            found: list[Examined] = await scorer.examine_many([data for data in images if data is not None])
            for i, examined in zip(present, found, strict=True):
                scores[i] = examined.score
            photos = await self._training_photos(job, scorer.engine)
            for i, examined in zip(present, found, strict=True):
                position = copied_photo(examined.phash, examined.embedding, photos, scorer.engine)
                if position is not None:
                    copies.append([ordered[i].prompt_index, position])
            scored = [
                (sample, score) for sample, score in zip(ordered, scores, strict=True) if score is not None
            ]
            recognised = sum(1 for _, score in scored if is_recognised(score.similarity, score.engine))
            async with unit_of_work(self._sessions) as session:
                row = await job_store.checkpoint(session, checkpoint.id)
                rows = await store.samples_by_id(session, [sample.id for sample, _ in scored])
                assert row is not None
                summary = record_scores(
                    row, [rows[sample.id] for sample, _ in scored], [s for _, s in scored]
                )
                faces_found = summary.faces
                job_store.add_event(
                    session,
                    job.id,
                    SCORED_EVENT,
                    {
                        "step": checkpoint.step,
                        "loss": job.loss,
                        "mean": summary.mean,
                        "max": summary.max,
                        "face_share": summary.face_share,
                        "engine": summary.engine,
                        "ceiling": scorer.ceiling,
                        "samples": len(scored),
                        "faces": faces_found,
                        "recognised": recognised,
                        "copies": copies,
                        "memorising": is_memorising(len(copies), faces_found),
                    },
                    at=utcnow(),
                )
        ceiling = scorer.ceiling if scorer is not None else None
        engine = scorer.engine if scorer is not None else None
        copied = {int(prompt): int(position) for prompt, position in copies}  # prompt → photo number
        cells = [
            GridCell(
                image=data,
                step=checkpoint.step,
                prompt_index=sample.prompt_index,
                score=score,
                copy_of=copied.get(sample.prompt_index),
            )
            for sample, data, score in zip(ordered, images, scores, strict=True)
        ]
        row_image = await asyncio.to_thread(render_row, cells, cell_px=self._row_cell_px) if cells else None
        history = await self._history(job.id)
        judged = verdicts(history, ceiling) if scorer is not None else []
        verdict = next((v for v in judged if v.step == checkpoint.step), None)
        peak = fell_after_peak(judged) if judged else None
        dataset_name = await self._dataset_name(job.dataset_id)
        chart_png = await asyncio.to_thread(
            self._draw_chart, history, ceiling, engine, job.total_steps, dataset_name
        )
        decision = early_stop([(step, data.get("mean")) for step, data in history.items()], _patience(job))
        if decision.stop and _best_unrecognised(judged, decision.best_step):
            # A plateau at a likeness nobody would accept is the alarm's question, for a person to
            # answer (stop now / let it run), not a "done learning" the bot acts on by itself.
            decision = EarlyStopDecision(
                False,
                decision.best_step,
                decision.best_score,
                decision.checkpoints_since_best,
                "flat, but the face is not recognised: the face alarm decides",
            )
        saved = (
            money_saved(job.total_steps - checkpoint.step, job.rate, job.price_per_hour)
            if decision.stop
            else None
        )
        if decision.stop:
            await self._note_early_stop(job.id, decision, saved)
        alarm = None
        if scorer is not None and self.alarms is not None:
            due = alarm_due(
                history,
                ceiling,
                total_steps=job.total_steps,
                policy=AlarmPolicy.from_params(job.params),
            )
            if (
                due is not None
                and due.verdict.step == checkpoint.step
                and await self.alarms.record_alarm(job, due)
            ):
                alarm = await self.alarms.alarm_for(job, due, dataset_name)
        caption = checkpoint_caption(
            step=checkpoint.step,
            total_steps=job.total_steps,
            score_mean=summary.mean if summary else None,
            score_max=summary.max if summary else None,
            face_share=summary.face_share if summary else None,
            ceiling=ceiling,
            engine=engine,
            prompts=[s.prompt for s in ordered],
            verdict=verdict.text(inline(dataset_name, 40)) if verdict is not None else None,
            peak=peak.text() if peak is not None and peak.step != checkpoint.step else None,
        )
        if row_image is None:
            row_image = await asyncio.to_thread(
                render_row,
                [GridCell(image=None, step=checkpoint.step, prompt_index=0)],
                cell_px=self._row_cell_px,
            )
        return CheckpointReview(
            job_id=job.id,
            step=checkpoint.step,
            total_steps=job.total_steps,
            summary=summary,
            scores=scores,
            ceiling=ceiling,
            engine=engine,
            row=row_image,
            chart_png=chart_png,
            caption=caption,
            early_stop=decision,
            money_saved=saved,
            verdict=verdict,
            alarm=alarm,
            peak=peak,
        )

    async def _dataset_name(self, dataset_id: int) -> str:
        async with self._sessions() as session:
            dataset = await dataset_store.get_dataset(session, dataset_id)
        return dataset.name if dataset is not None else "the dataset"

    async def _note_early_stop(self, job_id: int, decision: EarlyStopDecision, saved: Decimal | None) -> None:
        async with unit_of_work(self._sessions) as session:
            existing = await job_store.has_event(session, job_id, EARLY_STOP_EVENT)
            if not existing:
                job_store.add_event(
                    session,
                    job_id,
                    EARLY_STOP_EVENT,
                    {
                        "reason": decision.reason,
                        "best_step": decision.best_step,
                        "saved_usd": str(saved) if saved is not None else None,
                    },
                    at=utcnow(),
                )

    async def _history(self, job_id: int) -> dict[int, dict[str, Any]]:
        """The latest ``checkpoint_scored`` payload per step."""
        async with self._sessions() as session:
            events = await job_store.events(session, job_id, SCORED_EVENT)
        return {int(e.payload["step"]): dict(e.payload) for e in events if "step" in e.payload}

    @staticmethod
    def _draw_chart(
        history: Mapping[int, Mapping[str, Any]],
        ceiling: float | None,
        engine: str | None,
        total_steps: int,
        dataset_name: str | None = None,
    ) -> bytes:
        judged = {v.step: v for v in verdicts(history, ceiling)} if history else {}
        points = [
            ChartPoint(step, data.get("mean"), data.get("max"), _point_label(judged.get(step)))
            for step, data in sorted(history.items())
        ]
        loss = [
            (step, float(data["loss"]))
            for step, data in sorted(history.items())
            if data.get("loss") is not None
        ]
        latest = judged[max(judged)] if judged else None
        words = None
        if latest is not None and latest.samples:
            words = f"step {latest.step}: " + latest.text(dataset_name or "the person")
        return render_chart(
            points,
            ceiling=ceiling,
            loss=loss,
            engine=engine,
            total_steps=total_steps or None,
            verdict=words,
        )

    async def chart(self, job_id: int) -> bytes:
        """The chart as it stands (e.g. for ``/train status``)."""
        history = await self._history(job_id)
        ceiling = _latest_ceiling(history)
        engine = next((d.get("engine") for d in history.values() if d.get("engine")), None)
        async with self._sessions() as session:
            job = await existing_job(session, job_id)
        name = await self._dataset_name(job.dataset_id)
        return await asyncio.to_thread(self._draw_chart, history, ceiling, engine, job.total_steps, name)

    async def samples_view(self, job_id: int, step: int | None = None) -> tuple[RenderedImage, str]:
        """The grid of a job in any state, from stored samples and scores (nothing is rescored): one
        checkpoint's row when ``step`` is given, else every checkpoint × prompt with the best outlined.
        Returns the image and its caption. For ``/train samples``."""
        async with self._sessions() as session:
            job = await existing_job(session, job_id)
            checkpoints = await store.checkpoints_of(session, job_id, step=step)
            samples = await job_store.samples(session, job_id, step=step)
        if not checkpoints:
            where = f" at step {step}" if step is not None else " yet"
            raise NotFoundError(f"Job #{job_id} has no checkpoint{where}.")
        if not samples:
            raise NotFoundError(f"Job #{job_id} has no samples{' at that step' if step is not None else ''}.")
        history = await self._history(job_id)
        ceiling = _latest_ceiling(history)
        best = best_of(await self.votes.standings(job_id))
        grid = await self._full_grid(checkpoints, samples, ceiling, best.step if best else None, history)
        if step is not None:
            checkpoint = checkpoints[0]
            prompts = {s.prompt_index: s.prompt for s in samples}
            judged = {v.step: v for v in verdicts(history, ceiling)} if history else {}
            verdict = judged.get(checkpoint.step)
            name = inline(await self._dataset_name(job.dataset_id), 40)
            caption = checkpoint_caption(
                step=checkpoint.step,
                total_steps=job.total_steps,
                score_mean=checkpoint.score_mean,
                score_max=checkpoint.score_max,
                face_share=checkpoint.face_share,
                ceiling=ceiling,
                engine=checkpoint.engine,
                prompts=[prompts[i] for i in sorted(prompts)],
                votes_here=False,
                verdict=verdict.text(name) if verdict is not None else None,
            )
            return grid, f"Job #{job_id} · " + caption
        best_text = f"; best: step {best.step}" if best is not None else ""
        caption = (
            f"Job #{job_id}: {len(checkpoints)} checkpoint(s) × prompts, face similarity on every image"
            f"{best_text}."
        )
        return grid, caption

    async def final_review(
        self,
        job_id: int,
        *,
        reviewer_role_id: int | None = None,
        cancelled_by: int | None = None,
        approvals_required: int | None = None,
    ) -> FinalReview:
        """The summary text, full grid (checkpoints × prompts, best row outlined) and final chart."""
        async with self._sessions() as session:
            job = await existing_job(session, job_id)
            dataset = await dataset_store.get_dataset(session, job.dataset_id)
            assert dataset is not None
            checkpoints = await store.checkpoints_of(session, job_id)
            samples = await job_store.samples(session, job_id)
            early = next(iter(await job_store.events(session, job_id, EARLY_STOP_EVENT)), None)
        history = await self._history(job_id)
        ceiling = _latest_ceiling(history)
        standings = await self.votes.standings(job_id)
        best = best_of(standings)
        required = approvals_required or await self.votes.approvals_required(job.guild_id)

        grid = None
        if checkpoints and samples:
            grid = await self._full_grid(checkpoints, samples, ceiling, best.step if best else None, history)
        chart_png = (
            (
                await asyncio.to_thread(
                    self._draw_chart,
                    history,
                    ceiling,
                    checkpoints[0].engine if checkpoints else None,
                    job.total_steps,
                    dataset.name,
                )
            )
            if history
            else None
        )

        elapsed = None
        if job.finished_at is not None:
            elapsed = job.finished_at - (job.pod_created_at or job.created_at)
        saved = early.payload.get("saved_usd") if early is not None else None
        name = inline(dataset.name, 40)
        judged = verdicts(history, ceiling) if history else []
        by_step = {v.step: v for v in judged}
        best_verdict = by_step.get(best.step) if best is not None else None
        last = judged[-1] if judged else None
        peak = fell_after_peak(judged) if judged else None
        state = JobState(job.state)
        # A poor run: it failed, or its best checkpoint is not recognised as the person in most samples.
        poor = state in (JobState.FAILED, JobState.BUDGET_STOPPED) or (
            state in (JobState.SUCCEEDED, JobState.CANCELLED)
            and bool(checkpoints)
            and (best_verdict is None or best_verdict.few_recognised)
        )
        suggestions = None
        if poor and self.alarms is not None and not _no_gpu(job):
            try:
                suggestions = await self.alarms.suggestions(job_id)
            except Exception:  # advice must never keep the summary from being posted
                log.exception("job %s: no suggestions for the summary", job_id)
        report = JobReport(
            job_id=job.id,
            state=JobState(job.state),
            dataset_name=dataset.name,
            trigger_word=dataset.trigger_word,
            preset=job.preset,
            requester_id=job.requested_by,
            cost_usd=job.cost_usd,
            budget_usd=job.budget_usd,
            step=job.step,
            total_steps=job.total_steps,
            elapsed=elapsed,
            gpu_type=job.gpu_type,
            engine=next((c.engine for c in checkpoints if c.engine), None),
            ceiling=ceiling,
            best=BestCheckpoint(
                best.step,
                best.score_mean,
                pct_of_ceiling(best.score_mean, ceiling),
                best.face_share,
                best.net_votes,
                best_verdict.text(name) if best_verdict is not None else None,
            )
            if best is not None and best.score_mean is not None
            else None,
            checkpoints=len(checkpoints),
            error=job.error,
            last_log=[str(line) for line in job.last_log or []],
            reviewer_role_id=reviewer_role_id,
            approvals_required=required,
            early_stop_reason=early.payload.get("reason") if early is not None else None,
            money_saved=Decimal(saved) if saved else None,
            cancelled_by=cancelled_by,
            last_verdict=(
                last.text(name) if last is not None and (best is None or last.step != best.step) else None
            ),
            peak=peak.text() if peak is not None else None,
            memorising_steps=tuple(v.step for v in judged if v.memorising),
            suggestions=tuple(suggestions.lines()) if suggestions else (),
        )
        return FinalReview(
            job_id=job_id,
            notice=job_summary(report),
            grid=grid,
            chart_png=chart_png,
            best=best,
            retry=bool(suggestions),
        )

    async def _full_grid(
        self,
        checkpoints: Sequence[Checkpoint],
        samples: Sequence[Sample],
        ceiling: float | None,
        best_step: int | None,
        history: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> RenderedImage:
        copied = {
            (step, int(prompt)): int(position)
            for step, data in (history or {}).items()
            for prompt, position in data.get("copies") or ()
        }
        columns = max(s.prompt_index for s in samples) + 1
        by_key = {(s.step, s.prompt_index): s for s in samples}
        wanted = [by_key.get((c.step, p)) for c in checkpoints for p in range(columns)]
        blobs = await asyncio.gather(*(self._read(s.blob_sha256) if s else _none() for s in wanted))
        rows: list[GridRow] = []
        for r, checkpoint in enumerate(checkpoints):
            cells: list[GridCell | None] = []
            scores: list[SampleScore] = []
            for p in range(columns):
                sample, data = wanted[r * columns + p], blobs[r * columns + p]
                score = _stored_score(sample) if sample is not None else None
                if score is not None:
                    scores.append(score)
                cells.append(
                    GridCell(
                        image=data,
                        step=checkpoint.step,
                        prompt_index=p,
                        score=score,
                        copy_of=copied.get((checkpoint.step, p)),
                    )
                )
            rows.append(
                GridRow(
                    step=checkpoint.step,
                    cells=cells,
                    summary=aggregate(scores) if scores else None,
                    ceiling=ceiling,
                )
            )
        return await asyncio.to_thread(render_grid, rows, cell_px=self._grid_cell_px, best_step=best_step)


async def _none() -> None:
    return None


def _no_gpu(job: Job | JobView) -> bool:
    return bool(job.error and "no gpu" in job.error.lower())


def _point_label(verdict: CheckpointVerdict | None) -> str | None:
    """ "2/4" (samples recognised of samples) above a chart point; "copy" when it is memorising."""
    if verdict is None or not verdict.samples:
        return None
    return f"{verdict.recognised}/{verdict.samples}" + (" copy" if verdict.memorising else "")


def _best_unrecognised(judged: Sequence[CheckpointVerdict], best_step: int | None) -> bool:
    best = next((v for v in judged if v.step == best_step), None)
    return best is not None and best.few_recognised


def _stored_score(sample: Sample) -> SampleScore | None:
    if sample.engine is None or sample.face_found is None:
        return None
    return SampleScore(
        sample.engine, bool(sample.face_found), sample.face_similarity, sample.ceiling_pct, None
    )


class ReviewPublisher(Protocol):
    """What the cog implements to post reviews."""

    async def checkpoint_reviewed(self, job: JobView, review: CheckpointReview) -> None: ...

    async def job_reviewed(self, job: JobView, review: FinalReview) -> None: ...

    async def early_stopped(self, job: JobView, reason: str, saved: Decimal | None) -> None:
        """Say (once: the outbox's ``early_stop`` message) that the review stopped the run."""
        ...

    def reviewer_role_id(self, guild_id: int) -> int | None: ...


class ReviewListener(JobListener):
    """Bridges the training orchestrator to the review service, and to the publisher when one is attached.

    The review and its consequences (an early stop) happen here, in the domain, whether or not a
    publisher (the Discord cog) is loaded: a run that should stop never keeps spending for want of it."""

    def __init__(
        self, review: ReviewService, stop_early: StopEarly, publisher: ReviewPublisher | None = None
    ) -> None:
        self._review = review
        self._stop_early = stop_early
        self.publisher = publisher

    async def on_checkpoint(
        self, job: JobView, checkpoint: CheckpointView, samples: Sequence[SampleView]
    ) -> None:
        result = await self._review.review_checkpoint(job, checkpoint, samples)
        if result.early_stop.stop:
            result = replace(result, stopped_now=await self._stop(job, result))
            if result.stopped_now:
                crashpoint("review.stopped_early")  # stopped and stored; its note not posted yet
        if self.publisher is not None:
            await self.publisher.checkpoint_reviewed(job, result)

    async def _stop(self, job: JobView, review: CheckpointReview) -> bool:
        decision = review.early_stop
        payload = {
            "best_step": decision.best_step,
            "saved_usd": str(review.money_saved) if review.money_saved is not None else None,
        }
        try:
            _, stopped = await self._stop_early(job.id, decision.reason, payload=payload)
        except UserError as exc:
            log.warning("job %s: early stop refused: %s", job.id, exc)
            return False
        return stopped

    async def on_event(self, job: JobView, kind: str, payload: Mapping[str, Any]) -> None:
        # A run the review stopped early whose note a crash left unposted (bot/training/owed.py): the
        # note is rebuilt from the stored ``early_stop`` event, as the live review worded it.
        if kind != EARLY_STOP_EVENT or self.publisher is None:
            return
        saved = payload.get("saved_usd")
        await self.publisher.early_stopped(
            job, str(payload.get("reason") or ""), Decimal(str(saved)) if saved is not None else None
        )

    async def on_state(self, job: JobView, old: JobState, new: JobState, payload: Mapping[str, Any]) -> None:
        if not new.is_terminal:
            return
        by = payload.get("by") if new is JobState.CANCELLED else None
        publisher = self.publisher
        result = await self._review.final_review(
            job.id,
            reviewer_role_id=publisher.reviewer_role_id(job.guild_id) if publisher is not None else None,
            cancelled_by=int(by) if by is not None else None,
        )
        self._review.forget(job.id)
        if publisher is not None:
            await publisher.job_reviewed(job, result)
