"""The review service end to end on a seeded job: score with dlib, store, render, early stop, summary."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.review.scoring import ReferenceScorer, SampleScorer, ThreadedScorer
from bot.review.service import CheckpointReview, FinalReview, ReviewListener, ReviewService
from bot.review.votes import UP, VoteService
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Checkpoint, Job, JobEvent, JobState, Sample
from storage.types import utcnow

from ._helpers import blank, photo, seed_job


async def _rows(
    sessions: async_sessionmaker[AsyncSession], job_id: int
) -> tuple[Job, list[Checkpoint], list[Sample]]:
    async with sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        checkpoints = list(
            (
                await session.scalars(
                    select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
                )
            ).all()
        )
        samples = list((await session.scalars(select(Sample).where(Sample.job_id == job_id))).all())
    return job, checkpoints, samples


class Publisher:
    def __init__(self) -> None:
        self.checkpoints: list[CheckpointReview] = []
        self.finals: list[FinalReview] = []

    async def checkpoint_reviewed(self, job: Job, review: CheckpointReview) -> None:
        self.checkpoints.append(review)

    async def job_reviewed(self, job: Job, review: FinalReview) -> None:
        self.finals.append(review)

    def reviewer_role_id(self, guild_id: int) -> int | None:
        return 2100


async def test_a_run_is_scored_rendered_ranked_and_summarised(
    sessions, settings: Settings, obama_scorer: ReferenceScorer, faces_dir: Path
) -> None:
    blobs = BlobStore(settings.blob_dir)
    stranger = [photo(faces_dir, "biden/biden_2.jpg"), photo(faces_dir, "kit_harington/kit_1.jpg")]
    seeded = await seed_job(
        sessions,
        blobs,
        [
            (100, [blank(), blank((10, 80, 10))]),
            (200, stranger),
            (300, [photo(faces_dir, "obama/obama_4.jpg"), photo(faces_dir, "obama/obama_small.jpg")]),
            (400, stranger),
        ],
        total_steps=1000,
        patience=1,
    )
    calls: list[int] = []

    async def scorer_for(job: Job) -> SampleScorer:
        calls.append(job.id)
        return ThreadedScorer(obama_scorer)

    votes = VoteService(sessions)
    service = ReviewService(sessions, blobs, votes, scorer_for, row_cell_px=192, grid_cell_px=128)
    publisher = Publisher()
    stops: list[tuple[int, str]] = []

    async def stop_early(job_id: int, reason: str, *, payload: Any = None) -> tuple[Job, bool]:
        stops.append((job_id, reason))
        return job, len(stops) == 1  # the first call stops the run; later ones find it stopped

    listener = ReviewListener(service, stop_early, publisher)
    job, checkpoints, samples = await _rows(sessions, seeded.job_id)
    for checkpoint in checkpoints:
        at_step = [s for s in samples if s.step == checkpoint.step]
        await listener.on_checkpoint(job, checkpoint, at_step)
    assert calls == [seeded.job_id]  # the reference is built once per job
    reviews = {r.step: r for r in publisher.checkpoints}

    # Scores are stored on the rows, with the engine, and rise toward the reference's own face.
    _, checkpoints, samples = await _rows(sessions, seeded.job_id)
    by_step = {c.step: c for c in checkpoints}
    assert by_step[100].score_mean is None and by_step[100].face_share == 0.0
    assert by_step[300].score_mean > by_step[200].score_mean  # type: ignore[operator]
    assert {c.engine for c in checkpoints} == {"dlib-resnet128-v1"}
    assert all(s.engine == "dlib-resnet128-v1" and s.face_found is not None for s in samples)
    assert all(s.ceiling_pct is not None for s in samples if s.face_found)

    # Each checkpoint gets a row image (one cell per prompt) and a renewed chart.
    row = Image.open(io.BytesIO(reviews[300].row.data))
    assert row.format == "JPEG" and row.width == 2 * 192
    assert Image.open(io.BytesIO(reviews[300].chart_png)).format == "PNG"
    assert "step 300/1000" in reviews[300].caption

    # Patience 1: the step after the best one did not improve, so early stop says stop, with the saving.
    assert not reviews[300].early_stop.stop
    assert reviews[400].early_stop.stop and reviews[400].early_stop.best_step == 300
    assert reviews[400].money_saved == Decimal("0.03")  # 600 steps at 2 it/s, $0.36/h
    # The listener (the domain) stopped the run itself; the publisher is only told that it did.
    assert stops == [(seeded.job_id, reviews[400].early_stop.reason)]
    assert reviews[400].stopped_now and not reviews[300].stopped_now

    # The run ends: the summary names the best checkpoint, the grid has a row per checkpoint.
    await votes.attach_row_message(seeded.job_id, 200, 9200)
    await votes.reaction_added(9200, 11, UP, is_reviewer=True)
    async with unit_of_work(sessions) as session:
        row_job = await session.get(Job, seeded.job_id)
        assert row_job is not None
        row_job.state = JobState.SUCCEEDED.value
        row_job.finished_at = utcnow()
        row_job.pod_created_at = row_job.finished_at - timedelta(minutes=12)
        job = row_job
    await listener.on_state(job, JobState.COLLECTING, JobState.SUCCEEDED, {})
    final = publisher.finals[0]
    assert final.best is not None and final.best.step == 300
    assert "<@4000>" in final.notice.content and "<@&2100>" in final.notice.content
    assert "Best checkpoint: **step 300**" in final.notice.content
    assert "Stopped early: face similarity has not improved for 1 checkpoint " in final.notice.content
    assert "(saved about $0.03)" in final.notice.content
    assert final.grid is not None
    grid = Image.open(io.BytesIO(final.grid.data))
    assert grid.height > 4 * 128 and grid.width > 2 * 128
    assert final.chart_png is not None
    async with sessions() as session:
        kinds = (await session.scalars(select(JobEvent.kind).where(JobEvent.job_id == seeded.job_id))).all()
    assert kinds.count("checkpoint_scored") == 4 and kinds.count("early_stop") == 1


async def test_without_a_reference_samples_are_shown_unscored(sessions, settings: Settings) -> None:
    blobs = BlobStore(settings.blob_dir)
    seeded = await seed_job(sessions, blobs, [(100, [blank(), blank()])])
    service = ReviewService(sessions, blobs, VoteService(sessions), scorer_for=None)
    job, checkpoints, samples = await _rows(sessions, seeded.job_id)
    review = await service.review_checkpoint(job, checkpoints[0], samples)
    assert review.summary is None and review.scores == [None, None]
    assert not review.early_stop.stop
    assert Image.open(io.BytesIO(review.row.data)).width == 2 * 384
    _, checkpoints, _ = await _rows(sessions, seeded.job_id)
    assert checkpoints[0].score_mean is None and checkpoints[0].engine is None
