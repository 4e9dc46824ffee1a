"""Fixtures for the training domain: a migrated database, and the RunPod simulator whose pods run the
real worker (``python -m worker``) with the sd-scripts stand-in, driven by the real services.

Nothing on the bot's side is faked: the real SDK talks GraphQL to the simulator, the simulator boots a
pod that runs the worker with the pod's environment, and the worker runs the stand-in trainer (a tiny
step time; polling every 0.1 s). Only the planner is fixed (:class:`FakePlanner`: a run over a zip of
real photos already in the blob store).
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clients.runpod import RunPodClient
from bot.config import Settings
from bot.training.context import JobListener, Listeners, TrainingContext
from bot.training.estimate import SpeedProfile
from bot.training.jobs import JobService, RunPlan
from bot.training.money import Money
from bot.training.orchestrator import Orchestrator
from bot.training.progress import ProgressView
from bot.training.reconciler import Reconciler
from sim.meter import assert_ledger_matches_meter
from sim.runpod import RunPodSim, SimClock, worker_launcher
from sim.testdata import STANDIN_CONFIG_TOML, STANDIN_DATASET_TOML, snapshot_zip
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Checkpoint, Dataset, Job, JobState, Sample
from storage.types import utcnow
from worker.protocol import BaseModelSource


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


KEY = "rpa_TRAININGE2EKEY0123456789"
BASE_MODEL = b"not really a checkpoint\n" * 256

# What the planner hands the worker: a small sd15 run the stand-in trains in well under a second a step.
CONFIG_TOML = STANDIN_CONFIG_TOML.replace("{save_every}", "4")
PROMPTS = "ohwx man, portrait --w 128 --h 128 --d 42\nohwx man, beach --w 128 --h 128 --d 7\n"


PROFILE = SpeedProfile(
    preset="test-sdxl",
    min_vram_gb=24,
    default_its={"NVIDIA RTX A5000": 1.5, "NVIDIA GeForce RTX 4090": 3.0, "NVIDIA A40": 1.8},
    fallback_its=1.0,
    boot_s=300,
    collect_s=60,
)


@dataclass
class FakePlanner:
    """Plans a run over a fixed dataset zip already in the blob store (``{steps}`` in the config is the
    run's steps)."""

    dataset_id: int
    archive_sha256: str
    base_model: BaseModelSource
    total_steps: int = 10
    prompts_txt: str = PROMPTS
    config_toml: str = CONFIG_TOML
    dataset_toml: str = STANDIN_DATASET_TOML
    model_family: str = "sd15"
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
            config_toml=self.config_toml.replace("{steps}", str(steps)),
            dataset_toml=self.dataset_toml,
            prompts_txt=self.prompts_txt,
            total_steps=steps,
        )


GUILD = 1001
USER = 42


class SimTime:
    """The bot reads the RunPod simulator's clock, as the harness wires it: the minutes a pod spends
    pulling its image pass fast for both, and the ledger stays comparable with the meter."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock

    def __call__(self) -> datetime:
        return self.clock.now()

    def advance(self, **delta: float) -> None:
        self.clock.advance(timedelta(**delta).total_seconds())


@dataclass
class Harness:
    """The training services of one bot process over the RunPod simulator (see the module docstring)."""

    sim: RunPodSim
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    blobs: BlobStore
    client: RunPodClient
    http: aiohttp.ClientSession
    clock: SimTime
    listener: RecordingListener
    planner: FakePlanner
    ctx: TrainingContext = field(init=False)
    orchestrator: Orchestrator = field(init=False)
    service: JobService = field(init=False)
    reconciler: Reconciler = field(init=False)
    # Pods the test rented itself under a name no job has: RunPod bills them, no ledger can.
    outside_pods: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.new_process()

    def new_process(self) -> None:
        """A fresh set of services over the same database and RunPod account (after a restart)."""
        self.ctx = TrainingContext(
            sessions=self.sessions,
            settings=self.settings,
            runpod=self.client,
            blobs=self.blobs,
            http=self.http,
            money=Money(self.sessions, self.settings, clock=self.clock),
            listeners=Listeners([self.listener]),
            clock=self.clock,
        )
        self.orchestrator = Orchestrator(self.ctx)
        self.service = JobService(self.ctx, self.orchestrator, self.planner)
        self.reconciler = Reconciler(self.orchestrator)

    def standin(self, **env: str) -> None:
        """Environment for the workers and stand-in trainers of pods started from now on, e.g.
        ``SDSTANDIN_STEP_SECONDS`` (a slower run) or ``SDSTANDIN_NAN_AT_STEP``."""
        launcher = self.sim.launcher
        assert launcher is not None
        launcher.extra_env = {**launcher.extra_env, **env}

    def advance(self, **delta: float) -> None:
        """Time passes for the bot and for RunPod alike (the meter must see what the ledger sees)."""
        self.clock.advance(**delta)

    def created(self) -> list[dict[str, Any]]:
        """The input of every pod create RunPod received (those it refused included)."""
        return [
            call.args["podFindAndDeployOnDemand"]["input"]
            for call in self.sim.calls_for("podFindAndDeployOnDemand")
        ]

    async def start(
        self,
        *,
        steps: int = 10,
        budget: Decimal | None = None,
        before_confirm: Callable[[], None] | None = None,
    ) -> int:
        """``/train start`` by the requester, then Confirm; the job id."""
        quote = await self.service.start(
            guild_id=GUILD,
            dataset="elena",
            preset=PROFILE.preset,
            user_id=USER,
            channel_id=555,
            budget_usd=budget,
            params={"steps": steps},
        )
        assert quote.job_id is not None
        if before_confirm is not None:
            before_confirm()
        await self.service.confirm(quote.job_id, user_id=USER)
        return quote.job_id

    async def finish(self, job_id: int, timeout: float = 90) -> JobState | None:
        return await asyncio.wait_for(self.orchestrator.wait(job_id), timeout)

    async def wait_step(self, job_id: int, step: int, timeout: float = 60) -> None:
        async def poll() -> None:
            while (await self.service.status(job_id)).step < step:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(poll(), timeout)

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
        poll_interval_s=0.1,
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
async def model_url() -> AsyncIterator[str]:
    """Where the worker downloads the base model from (its sha256 is checked)."""

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(body=BASE_MODEL)

    app = web.Application()
    app.router.add_get("/base.safetensors", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/base.safetensors"
    await runner.cleanup()


def make_harness(**standin_env: str) -> Any:
    """A fixture: the :class:`Harness`, its stand-in tuned by ``standin_env``. Every test ends with no pod
    billing and the ledger equal to RunPod's meter."""

    @pytest.fixture
    async def fixture(
        tmp_path: Path, training_settings: Settings, model_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> AsyncIterator[Harness]:
        from storage.db import make_engine, make_sessionmaker
        from storage.migrate import upgrade_to_head

        monkeypatch.delenv("RUNPOD_API_BASE_URL", raising=False)
        env = {"SDSTANDIN_STEP_SECONDS": "0.02", "LORAOPS_SCAN_SECONDS": "0.1", **standin_env}
        launcher = worker_launcher(
            trainer_cmd=f"{sys.executable} -m sim.sdscripts accelerate launch",
            extra_env=env,
            stop_grace_s=2.0,
        )
        sim = RunPodSim(api_key=KEY, data_dir=tmp_path / "rp", launcher=launcher)
        await sim.start()
        settings = training_settings.model_copy(
            update={
                "runpod_api_key": SecretStr(KEY),
                "runpod_api_base_url": sim.base_url,
                "runpod_proxy_url_template": sim.proxy_url_template,
            }
        )
        upgrade_to_head(settings.database_url)
        engine = make_engine(settings.database_url)
        sessions = make_sessionmaker(engine)
        blobs = BlobStore(settings.blob_dir)
        planner = FakePlanner(
            dataset_id=await make_dataset(sessions),
            archive_sha256=blobs.put(snapshot_zip()),
            base_model=BaseModelSource(
                kind="url", url=model_url, sha256=hashlib.sha256(BASE_MODEL).hexdigest()
            ),
        )
        async with aiohttp.ClientSession() as http:
            h = Harness(
                sim,
                settings,
                sessions,
                blobs,
                RunPodClient.from_settings(settings),
                http,
                SimTime(sim.clock),
                RecordingListener(),
                planner,
            )
            try:
                yield h
                await sim.wait_for(lambda: not sim.live_pods(), within=15)
                await assert_ledger_matches_meter(sessions, sim, exclude=h.outside_pods)
            finally:
                await h.orchestrator.close()
                await sim.close()
        await engine.dispose()

    return fixture


harness = make_harness()
