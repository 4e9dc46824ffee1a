"""The face alarm through the review service on a seeded job (real dlib scores), and its actions."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.datasets.curation import CurationPlan
from bot.errors import ConflictError
from bot.outbox import FACE_ALARM, Outbox
from bot.review.alarm import ALARM_EVENT, AlarmActions
from bot.review.scoring import ReferenceScorer, SampleScorer, ThreadedScorer
from bot.review.service import CheckpointReview, ReviewService
from bot.review.votes import VoteService
from storage.blobs import BlobStore
from storage.models import Checkpoint, Job, JobEvent, Sample

from ._helpers import photo, seed_job


class Curation:
    """What the alarm needs of curation: the stored verdict's plan (here: nothing flagged)."""

    async def pending_plan(
        self, dataset_id: int, engine: str | None = None
    ) -> tuple[CurationPlan, dict[str, list[int]]]:
        return CurationPlan(), {"small_face": [3]}


async def test_the_alarm_is_raised_once_at_the_second_checkpoint_and_its_choices_are_recorded(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    obama_scorer: ReferenceScorer,
    faces_dir: Path,
) -> None:
    blobs = BlobStore(settings.blob_dir)
    strangers = [photo(faces_dir, "kit_harington/kit_1.jpg"), photo(faces_dir, "biden/biden_2.jpg")]
    seeded = await seed_job(
        sessions, blobs, [(100, strangers), (200, strangers), (300, strangers)], total_steps=1000
    )

    async def scorer_for(job: Job) -> SampleScorer:
        return ThreadedScorer(obama_scorer)

    alarms = AlarmActions(sessions, Curation(), None)  # type: ignore[arg-type]
    service = ReviewService(
        sessions, blobs, VoteService(sessions), scorer_for, row_cell_px=128, grid_cell_px=96, alarms=alarms
    )
    async with sessions() as session:
        job = await session.get(Job, seeded.job_id)
        assert job is not None
        checkpoints = (await session.scalars(select(Checkpoint).order_by(Checkpoint.step))).all()
        samples = (await session.scalars(select(Sample))).all()

    async def review(checkpoint: Checkpoint) -> CheckpointReview:
        return await service.review_checkpoint(
            job, checkpoint, [s for s in samples if s.step == checkpoint.step]
        )

    reviews = [await review(checkpoints[0]), await review(checkpoints[1])]
    assert [r.alarm is not None for r in reviews] == [False, True]  # at the 2nd checkpoint
    # Not posted (the bot died before the post): raised again at the next checkpoint...
    again = await review(checkpoints[2])
    assert again.alarm is not None and "3rd checkpoint, step 300/1000" in again.alarm.content()
    # ...and once the channel has it, never again.
    await Outbox(sessions).record(seeded.job_id, FACE_ALARM, channel_id=1, message_id=99)
    assert (await review(checkpoints[2])).alarm is None
    alarm = reviews[1].alarm
    assert alarm is not None
    text = alarm.content()
    assert text.startswith(
        f"⚠️ <@{seeded.requester}> job #{seeded.job_id}: **the face is not being learned.**"
    )
    assert "2nd checkpoint, step 200/1000" in text and "recognised as elena in 0 of 2 samples" in text
    # 800 steps at 2 it/s and $0.36/h.
    assert "Finishing the run would cost about $0.04 more (800 steps to go)" in text
    assert "close-up photos: 1 photo shows the face small (#3), too small to crop" in text
    assert reviews[1].verdict is not None and reviews[1].verdict.recognised == 0
    assert "recognised as elena in 0 of 2 samples" in reviews[1].caption
    async with sessions() as session:
        raised = (await session.scalars(select(JobEvent).where(JobEvent.kind == ALARM_EVENT))).all()
    assert len(raised) == 1 and raised[0].payload["step"] == 200

    # Let it run: recorded once; a second choice is refused politely. Stop needs training set up.
    assert await alarms.let_run(seeded.job_id, user_id=seeded.requester) is True
    assert await alarms.let_run(seeded.job_id, user_id=seeded.requester) is False
    with pytest.raises(ConflictError):
        await alarms.stop_now(seeded.job_id, user_id=seeded.requester)
