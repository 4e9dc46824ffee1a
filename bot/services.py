"""The one wiring point: settings → sessions → HTTP session → clients → services.

``build_services`` is called once by the start-up function (``bot/app.py``); cogs reach services
through ``bot.services``. Nothing here connects at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.background import TaskGroup
from bot.clients.fetch import SafeFetcher
from bot.config import Settings
from bot.datasets.captioning import CaptionService
from bot.datasets.curation import CurationService
from bot.datasets.export import ExportService
from bot.datasets.gather import DatasetGatherService
from bot.datasets.manage import DatasetService
from bot.errors import StartupError, UserError
from bot.faces import FaceService
from bot.guilds import GuildConfigService
from bot.outbox import Outbox
from bot.review.alarm import AlarmActions
from bot.review.delivery import DeliveryService
from bot.review.scoring import PooledScorer, SampleScorer
from bot.review.service import ReviewListener, ReviewService, ScorerFactory
from bot.review.votes import VoteService
from bot.roles import RoleNames
from bot.training.jobs import Training, build_training
from bot.training.money import Money
from storage.blobs import BlobStore
from storage.types import utcnow
from storage.views import JobView


@dataclass
class Services:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    http: aiohttp.ClientSession
    blobs: BlobStore
    tasks: TaskGroup
    roles: RoleNames
    datasets: DatasetService
    guilds: GuildConfigService
    money: Money
    gather: DatasetGatherService
    # None when RunPod is not configured: /train explains what to set instead of failing.
    training: Training | None
    captions: CaptionService
    exports: ExportService
    # Face engine pool (worker processes spawn on first use or on the warm-up in bot.app.run).
    faces: FaceService
    curation: CurationService
    # Review of training runs: votes and approvals, delivery of approved LoRAs, scores/grids/charts.
    votes: VoteService
    delivery: DeliveryService
    review: ReviewService
    # The face alarm's buttons and "Retry with these changes" (suggestions from the report card).
    alarms: AlarmActions
    # Subscribed to training at start-up: reviews checkpoints and stops runs early with or without Discord;
    # the review cog attaches itself as the publisher.
    review_listener: ReviewListener | None
    # Messages jobs owe their channels, recorded before they are posted (each posted once).
    outbox: Outbox

    async def close(self) -> None:
        """Stop background work; the start-up function closes the HTTP session and engine."""
        if self.training is not None:
            await self.training.close()
        await self.tasks.close()
        await self.curation.close()
        await self.faces.close()
        # The fetcher owns its own HTTP session (its resolver refuses private addresses).
        await self.gather.fetcher.close()


def build_services(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    http: aiohttp.ClientSession,
    *,
    clock: Callable[[], datetime] | None = None,
) -> Services:
    blobs = BlobStore(settings.blob_dir)
    tasks = TaskGroup()
    fetcher = SafeFetcher.from_settings(settings)
    try:
        gather = DatasetGatherService.from_settings(settings, sessions, blobs, fetcher=fetcher)
    except UserError as exc:  # a malformed CLOUDINARY_URL: one clear line at start-up
        raise StartupError(str(exc)) from None
    # Few ledger rows: accrue at most once a minute; budget checks look ahead to cover the gap.
    money = Money(sessions, settings, min_period_s=60, clock=clock or utcnow)
    training = build_training(settings, sessions, http, blobs, money, clock=clock or utcnow)
    captions = CaptionService(sessions, blobs)
    try:
        faces = FaceService.from_settings(settings)
    except UserError as exc:  # FACE_ENGINE=insightface without its models: say so at start-up
        raise StartupError(f"FACE_ENGINE: {exc}") from None
    faces.start()  # creates the pool only: no process is spawned until the first task
    curation = CurationService(sessions, blobs, faces, gather, models_dir=settings.face_models_dir)
    votes = VoteService(sessions, default_approvals_required=settings.approvals_required)
    alarms = AlarmActions(sessions, curation, training.service if training is not None else None)
    review = ReviewService(sessions, blobs, votes, review_scorer(faces, curation), alarms=alarms)
    review_listener = None
    if training is not None:
        review_listener = ReviewListener(review, training.service.stop_early)
        training.listeners.add(review_listener)
    return Services(
        settings=settings,
        sessions=sessions,
        http=http,
        blobs=blobs,
        tasks=tasks,
        roles=RoleNames(settings.trainer_role, settings.reviewer_role, settings.admin_role),
        datasets=DatasetService(sessions),
        guilds=GuildConfigService(sessions, settings),
        money=money,
        gather=gather,
        training=training,
        captions=captions,
        exports=ExportService(sessions, blobs, captions, settings.data_dir),
        faces=faces,
        curation=curation,
        votes=votes,
        # gather's Cloudinary client (None without CLOUDINARY_URL) also uploads approved LoRAs.
        delivery=DeliveryService(
            sessions, blobs, loras_dir=settings.comfyui_loras_dir, cloudinary=gather.cloudinary
        ),
        alarms=alarms,
        review=review,
        review_listener=review_listener,
        outbox=Outbox(sessions),
    )


def review_scorer(faces: FaceService, curation: CurationService) -> ScorerFactory:
    """A job's samples are scored, in the face pool, against its dataset's identity reference."""

    async def scorer_for(job: JobView) -> SampleScorer | None:
        reference = await curation.reference_for(job.dataset_id, faces.engine_id)
        return PooledScorer(faces, reference)

    return scorer_for
