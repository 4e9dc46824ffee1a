"""Fixtures for the training domain: a migrated SQLite DB, fake RunPod and worker, the services."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.training.context import JobListener, Listeners, TrainingContext
from bot.training.estimate import SpeedProfile
from bot.training.jobs import JobService, RunPlan
from bot.training.money import Money
from bot.training.orchestrator import Orchestrator
from bot.training.progress import ProgressView
from bot.training.reconciler import Reconciler
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Checkpoint, Dataset, Job, JobState, Sample
from storage.types import utcnow
from worker.protocol import BaseModelSource

from .fakes import FakeRunPod, FakeWorkerFarm


class ShiftableClock:
    """Real time plus an offset the test can jump forward (no sleeping to make money accrue)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.fixed = start
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        base = self.fixed if self.fixed is not None else utcnow()
        return base + self.offset

    def advance(self, **kwargs: float) -> None:
        self.offset += timedelta(**kwargs)


class RecordingListener(JobListener):
    def __init__(self) -> None:
        self.states: list[tuple[int, JobState, JobState, dict[str, Any]]] = []
        self.progress: list[ProgressView] = []
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.samples: list[Sample] = []
        self.checkpoints: list[tuple[Checkpoint, list[Sample]]] = []

    async def on_state(self, job: Job, old: JobState, new: JobState, payload: Any) -> None:
        self.states.append((job.id, old, new, dict(payload)))

    async def on_progress(self, view: ProgressView) -> None:
        self.progress.append(view)

    async def on_event(self, job: Job, kind: str, payload: Any) -> None:
        self.events.append((job.id, kind, dict(payload)))

    async def on_samples(self, job: Job, samples: Any) -> None:
        self.samples.extend(samples)

    async def on_checkpoint(self, job: Job, checkpoint: Checkpoint, samples: Any) -> None:
        self.checkpoints.append((checkpoint, list(samples)))

    def new_states(self) -> list[JobState]:
        return [new for _, _, new, _ in self.states]


def make_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(3):
            archive.writestr(f"img/{index:03d}.png", hashlib.sha256(str(index).encode()).digest() * 40)
            archive.writestr(f"img/{index:03d}.txt", "ohwx woman, portrait")
    return buffer.getvalue()


PROFILE = SpeedProfile(
    preset="test-sdxl",
    min_vram_gb=24,
    default_its={"NVIDIA RTX A5000": 1.5, "NVIDIA GeForce RTX 4090": 3.0, "NVIDIA A40": 1.8},
    fallback_its=1.0,
    boot_s=300,
    collect_s=60,
)


TEST_BASE_MODEL = BaseModelSource(kind="url", url="http://127.0.0.1:9/base.safetensors")


@dataclass
class FakePlanner:
    """Plans a run over a fixed dataset zip already in the blob store."""

    dataset_id: int
    archive_sha256: str
    total_steps: int = 10
    prompts_txt: str = "ohwx woman, portrait --d 42\nohwx woman, smiling --d 7\n"
    config_toml: str = 'output_name = "lora"\n'
    dataset_toml: str = "[general]\n"
    model_family: str = "sdxl"
    base_model: BaseModelSource = TEST_BASE_MODEL
    profile: SpeedProfile = PROFILE

    async def plan(self, *, guild_id: int, dataset: str, preset: str, params: Any, user_id: int) -> RunPlan:
        steps = int(params.get("steps", self.total_steps))
        return RunPlan(
            dataset_id=self.dataset_id,
            snapshot_id=None,
            archive_sha256=self.archive_sha256,
            profile=self.profile,
            model_family=self.model_family,
            base_model=self.base_model,
            config_toml=self.config_toml,
            dataset_toml=self.dataset_toml,
            prompts_txt=self.prompts_txt,
            total_steps=steps,
        )


GUILD = 1001
USER = 42


@dataclass
class Harness:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    blobs: BlobStore
    farm: FakeWorkerFarm
    runpod: FakeRunPod
    http: aiohttp.ClientSession
    clock: ShiftableClock
    listener: RecordingListener
    planner: FakePlanner
    ctx: TrainingContext
    orchestrator: Orchestrator
    service: JobService
    reconciler: Reconciler

    def fresh_services(self) -> tuple[Orchestrator, JobService, Reconciler]:
        """A new process over the same database (after a crash or restart)."""
        ctx = TrainingContext(
            sessions=self.sessions,
            settings=self.settings,
            runpod=self.runpod,
            blobs=self.blobs,
            http=self.http,
            money=Money(self.sessions, self.settings, clock=self.clock),
            listeners=Listeners([self.listener]),
            clock=self.clock,
        )
        orchestrator = Orchestrator(ctx)
        return orchestrator, JobService(ctx, orchestrator, self.planner), Reconciler(orchestrator)

    async def start_and_confirm(self, **params: Any) -> int:
        quote = await self.service.start(
            guild_id=GUILD, dataset="elena", preset="test-sdxl", user_id=USER, channel_id=555, params=params
        )
        assert quote.job_id is not None
        await self.service.confirm(quote.job_id, user_id=USER)
        return quote.job_id

    async def job(self, job_id: int) -> Job:
        async with self.sessions() as session:
            job = await session.get(Job, job_id)
        assert job is not None
        return job


@pytest.fixture
def training_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        data_dir=tmp_path / "data",
        poll_interval_s=0.05,
        progress_edit_interval_s=1.0,
        default_job_budget_usd=Decimal("5.00"),
        monthly_budget_usd=Decimal("50.00"),
        max_live_jobs_per_guild=2,
        worker_token_key=SecretStr("test-key-for-worker-tokens"),
    )


async def make_dataset(sessions: async_sessionmaker[AsyncSession], guild_id: int = GUILD) -> int:
    async with unit_of_work(sessions) as session:
        dataset = Dataset(
            guild_id=guild_id, name="elena", trigger_word="ohwx", class_word="woman", owner_id=USER
        )
        session.add(dataset)
        await session.flush()
        return dataset.id


@pytest.fixture
async def harness(training_settings: Settings) -> AsyncIterator[Harness]:
    from storage.db import make_engine, make_sessionmaker
    from storage.migrate import upgrade_to_head

    upgrade_to_head(training_settings.database_url)
    engine = make_engine(training_settings.database_url)
    sessions = make_sessionmaker(engine)
    blobs = BlobStore(training_settings.blob_dir)
    archive_sha = blobs.put(make_zip())
    dataset_id = await make_dataset(sessions)
    farm = FakeWorkerFarm()
    await farm.start()
    runpod = FakeRunPod(farm)
    clock = ShiftableClock()
    listener = RecordingListener()
    async with aiohttp.ClientSession() as http:
        ctx = TrainingContext(
            sessions=sessions,
            settings=training_settings,
            runpod=runpod,
            blobs=blobs,
            http=http,
            money=Money(sessions, training_settings, clock=clock),
            listeners=Listeners([listener]),
            clock=clock,
        )
        orchestrator = Orchestrator(ctx)
        planner = FakePlanner(dataset_id=dataset_id, archive_sha256=archive_sha)
        service = JobService(ctx, orchestrator, planner)
        h = Harness(
            training_settings,
            sessions,
            blobs,
            farm,
            runpod,
            http,
            clock,
            listener,
            planner,
            ctx,
            orchestrator,
            service,
            Reconciler(orchestrator),
        )
        try:
            yield h
        finally:
            await h.orchestrator.close()
            await farm.close()
    await engine.dispose()


FIXED_START = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
