"""End to end: JobService → RunPodClient → RunPod simulator → real worker → sd-scripts stand-in.

Nothing here is faked on the bot's side: the real SDK talks GraphQL to the simulator, the simulator
boots a pod that runs the real worker (``python -m worker``) with the pod's environment, and the
worker runs the stand-in trainer. The stand-in's step time is tiny and polling is every 0.1 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import sys
import zipfile
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
from sqlalchemy import select

from bot.clients.runpod import RunPodClient
from bot.config import Settings
from bot.training.context import Listeners, TrainingContext
from bot.training.jobs import JobService
from bot.training.money import Money
from bot.training.orchestrator import Orchestrator
from bot.training.reconciler import Reconciler
from bot.training.worker_client import WorkerAuthError, WorkerClient
from sim.meter import assert_ledger_matches_meter
from sim.runpod import RunPodSim, SimClock, worker_launcher
from sim.testdata import TESTDATA_FACES
from storage.blobs import BlobStore
from storage.db import make_engine, make_sessionmaker
from storage.migrate import upgrade_to_head
from storage.models import Checkpoint, JobEvent, JobState, Sample, SpendEntry
from worker.protocol import ENV_JOB_SPEC, BaseModelSource, JobSpec

from .conftest import GUILD, PROFILE, USER, FakePlanner, RecordingListener, make_dataset

pytestmark = pytest.mark.slow

KEY = "rpa_TRAININGE2EKEY0123456789"
FACES = TESTDATA_FACES
BASE_MODEL = b"not really a checkpoint\n" * 256

CONFIG_TOML = """\
[model_arguments]
pretrained_model_name_or_path = "models/base.safetensors"
[additional_network_arguments]
network_module = "networks.lora"
network_dim = 8
network_alpha = 4.0
[training_arguments]
output_dir = "output"
output_name = "elena"
max_train_steps = {steps}
save_every_n_steps = 4
sample_every_n_steps = 4
sample_prompts = "prompts.txt"
mixed_precision = "bf16"
save_precision = "fp16"
seed = 42
"""
DATASET_TOML = """\
[general]
caption_extension = ".txt"
[[datasets]]
resolution = 512
batch_size = 1
  [[datasets.subsets]]
  image_dir = "dataset/img"
  num_repeats = 2
"""
PROMPTS = "ohwx man, portrait --w 128 --h 128 --d 1\nohwx man, beach --w 128 --h 128 --d 2\n"


def snapshot_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, photo in enumerate(sorted((FACES / "obama").glob("*.jpg"))[:3]):
            archive.write(photo, f"img/{index:03d}.jpg")
            archive.writestr(f"img/{index:03d}.txt", "ohwx man, photo")
    return buffer.getvalue()


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
class E2E:
    sim: RunPodSim
    settings: Settings
    sessions: Any
    blobs: BlobStore
    client: RunPodClient
    http: aiohttp.ClientSession
    clock: SimTime
    listener: RecordingListener
    planner: FakePlanner
    orchestrator: Orchestrator
    service: JobService
    reconciler: Reconciler
    # Pods the test rented itself under a name no job has: RunPod bills them, no ledger can.
    outside_pods: set[str] = field(default_factory=set)

    def advance(self, **delta: float) -> None:
        """Time passes for the bot and for RunPod alike (the meter must see what the ledger sees)."""
        self.clock.advance(**delta)

    def new_process(self) -> None:
        """A fresh set of services over the same database and RunPod account (after a restart)."""
        ctx = TrainingContext(
            sessions=self.sessions,
            settings=self.settings,
            runpod=self.client,
            blobs=self.blobs,
            http=self.http,
            money=Money(self.sessions, self.settings, clock=self.clock),
            listeners=Listeners([self.listener]),
            clock=self.clock,
        )
        self.orchestrator = Orchestrator(ctx)
        self.service = JobService(ctx, self.orchestrator, self.planner)
        self.reconciler = Reconciler(self.orchestrator)

    async def start(
        self,
        *,
        steps: int = 8,
        budget: Decimal | None = None,
        before_confirm: Callable[[], None] | None = None,
    ) -> int:
        self.planner.total_steps = steps
        self.planner.config_toml = CONFIG_TOML.format(steps=steps)
        quote = await self.service.start(
            guild_id=GUILD,
            dataset="obama",
            preset=PROFILE.preset,
            user_id=USER,
            channel_id=1,
            budget_usd=budget,
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


@pytest.fixture
async def model_url() -> AsyncIterator[str]:
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


def make_e2e_fixture(**standin_env: str) -> Any:
    @pytest.fixture
    async def fixture(tmp_path: Path, model_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[E2E]:
        monkeypatch.delenv("RUNPOD_API_BASE_URL", raising=False)
        env = {"SDSTANDIN_STEP_SECONDS": "0.02", "LORAOPS_SCAN_SECONDS": "0.1", **standin_env}
        launcher = worker_launcher(
            trainer_cmd=f"{sys.executable} -m sim.sdscripts accelerate launch",
            extra_env=env,
            stop_grace_s=2.0,
        )
        sim = RunPodSim(api_key=KEY, data_dir=tmp_path / "rp", launcher=launcher)
        await sim.start()
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'loraops.db'}",
            data_dir=tmp_path / "data",
            poll_interval_s=0.1,
            progress_edit_interval_s=1.0,
            runpod_api_key=SecretStr(KEY),
            runpod_api_base_url=sim.base_url,
            runpod_proxy_url_template=sim.proxy_url_template,
        )
        upgrade_to_head(settings.database_url)
        engine = make_engine(settings.database_url)
        sessions = make_sessionmaker(engine)
        blobs = BlobStore(settings.blob_dir)
        archive = blobs.put(snapshot_zip())
        dataset_id = await make_dataset(sessions)
        planner = FakePlanner(
            dataset_id=dataset_id,
            archive_sha256=archive,
            model_family="sd15",
            prompts_txt=PROMPTS,
            dataset_toml=DATASET_TOML,
            base_model=BaseModelSource(
                kind="url", url=model_url, sha256=hashlib.sha256(BASE_MODEL).hexdigest()
            ),
        )
        async with aiohttp.ClientSession() as http:
            e2e = E2E(
                sim,
                settings,
                sessions,
                blobs,
                RunPodClient.from_settings(settings),
                http,
                SimTime(sim.clock),
                RecordingListener(),
                planner,
                None,  # type: ignore[arg-type]  # new_process() builds these three
                None,  # type: ignore[arg-type]
                None,  # type: ignore[arg-type]
            )
            e2e.new_process()
            try:
                yield e2e
                # Every test here rents pods: it ends with none billing and the ledger equal to the meter.
                await sim.wait_for(lambda: not sim.live_pods(), within=15)
                await assert_ledger_matches_meter(sessions, sim, exclude=e2e.outside_pods)
            finally:
                await e2e.orchestrator.close()
                await sim.close()
        await engine.dispose()

    return fixture


e2e = make_e2e_fixture()
e2e_nan = make_e2e_fixture(SDSTANDIN_NAN_AT_STEP="6")
e2e_slow = make_e2e_fixture(SDSTANDIN_STEP_SECONDS="0.15")


async def test_trains_collects_and_terminates(e2e: E2E) -> None:
    stray = await e2e.client.create_pod(
        name="loraops-999",
        gpu_type_id="NVIDIA RTX A5000",
        image="ghcr.io/loraops/worker:0.1.0",
        env={},
        cloud_type="SECURE",
    )
    e2e.outside_pods.add(stray.id)
    job_id = await e2e.start(steps=8)
    # While it runs: the public proxy refuses a wrong token; the reconciler kills the orphan only.
    await e2e.wait_step(job_id, 1)
    job = await e2e.service.get(job_id)
    assert job.pod_id is not None
    with pytest.raises(WorkerAuthError):
        await WorkerClient(e2e.http, e2e.client.worker_base_url(job.pod_id), "wrong-token").status()
    report = await e2e.reconciler.reconcile_once()
    assert report.orphans == [stray.id] and report.resumed == []

    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    job = await e2e.service.get(job_id)
    assert e2e.listener.new_states() == [
        JobState.PROVISIONING,
        JobState.UPLOADING,
        JobState.TRAINING,
        JobState.COLLECTING,
        JobState.SUCCEEDED,
    ]
    pod = e2e.sim.pods[job.pod_id]  # type: ignore[index]
    assert pod.name == f"loraops-{job_id}" and pod.phase == "terminated"
    assert await e2e.client.get_pod(job.pod_id) is None  # type: ignore[arg-type]
    async with e2e.sessions() as session:
        checkpoints = (await session.scalars(select(Checkpoint).order_by(Checkpoint.step))).all()
        samples = (await session.scalars(select(Sample))).all()
        ledger = (await session.scalars(select(SpendEntry))).all()
    assert [c.step for c in checkpoints] == [4, 8] and all(c.collected for c in checkpoints)
    for checkpoint in checkpoints:
        data = e2e.blobs.get(checkpoint.sha256)
        assert hashlib.sha256(data).hexdigest() == checkpoint.sha256 and len(data) == checkpoint.size_bytes
    assert {(s.step, s.prompt_index) for s in samples} >= {(4, 0), (4, 1), (8, 0), (8, 1)}
    assert all(e2e.blobs.verify(s.blob_sha256) for s in samples)
    assert [c.step for c, _ in e2e.listener.checkpoints] == [4, 8]
    assert job.price_per_hour == Decimal("0.27") and job.cost_usd > 0
    assert job.cost_usd == sum(e.amount_usd for e in ledger) and job.pod_terminated_at is not None
    # The bot sent one create for its pod (plus the stray) and the dataset once through the proxy.
    assert len(e2e.sim.calls_for("podFindAndDeployOnDemand")) == 2
    uploads = [c for c in e2e.sim.proxy_calls if c.method == "PUT" and c.path.endswith("/dataset")]
    assert len(uploads) == 1


async def test_nan_is_failed_and_reported(e2e_nan: E2E) -> None:
    job_id = await e2e_nan.start(steps=12)
    assert await e2e_nan.finish(job_id) == JobState.FAILED
    job = await e2e_nan.service.get(job_id)
    assert job.error is not None and "nan" in job.error.lower()
    assert job.last_log
    assert e2e_nan.sim.pods[job.pod_id].phase == "terminated"  # type: ignore[index]
    ((_, _, _, payload),) = [s for s in e2e_nan.listener.states if s[2] == JobState.FAILED]
    assert payload["cause"] == job.error and payload["log_tail"]


async def test_no_capacity_on_first_gpu_uses_the_next(e2e: E2E) -> None:
    job_id = await e2e.start(steps=4, before_confirm=lambda: e2e.sim.set_capacity("NVIDIA RTX A5000", 0))
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    job = await e2e.service.get(job_id)
    second = job.estimate["options"][1]["gpu_type_id"]
    assert job.gpu_type == second and job.price_per_hour == Decimal(
        job.estimate["options"][1]["price_per_hour"]
    )
    async with e2e.sessions() as session:
        kinds = (await session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job_id))).all()
    assert kinds.count("no_capacity") == 1 and kinds.count("pod_created") == 1


async def test_restart_mid_training_resumes_without_a_second_pod(e2e_slow: E2E) -> None:
    e = e2e_slow
    job_id = await e.start(steps=24)
    await e.wait_step(job_id, 3)
    await e.orchestrator.close()  # the bot dies; the pod keeps training
    e.new_process()
    report = await e.reconciler.reconcile_once()
    assert report.resumed == [job_id] and report.orphans == []
    assert await e.finish(job_id) == JobState.SUCCEEDED
    assert len(e.sim.calls_for("podFindAndDeployOnDemand")) == 1
    job = await e.service.get(job_id)
    assert job.step == 24 and job.pod_terminated_at is not None


async def test_budget_crossed_mid_run_terminates_the_pod(e2e_slow: E2E) -> None:
    e = e2e_slow
    job_id = await e.start(steps=200, budget=Decimal("0.05"))
    await e.wait_step(job_id, 2)
    e.advance(minutes=15)  # 15 min at $0.27/h = $0.0675 > $0.05
    assert await e.finish(job_id) == JobState.BUDGET_STOPPED
    job = await e.service.get(job_id)
    assert job.step < 200 and job.cost_usd >= Decimal("0.05")
    await e.sim.wait_for(lambda: e.sim.pods[job.pod_id].phase == "terminated", within=10)  # type: ignore[index]
    ((_, _, _, payload),) = [s for s in e.listener.states if s[2] == JobState.BUDGET_STOPPED]
    assert payload["scope"] == "job" and "budget" in payload["cause"]


# ---------------------------------------------------------------------- what RunPod does on its own


async def _events_of(e: E2E, job_id: int, kind: str) -> list[JobEvent]:
    async with e.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == kind)
                )
            ).all()
        )


async def test_a_create_that_errors_but_made_a_pod_adopts_that_pod(e2e: E2E) -> None:
    e2e.sim.fail_create_after_creating()  # "Something went wrong", yet the pod exists and bills
    job_id = await e2e.start(steps=4)
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    job = await e2e.service.get(job_id)
    (pod,) = e2e.sim.pods.values()  # no second pod was rented
    assert job.pod_id == pod.id and pod.phase == "terminated"
    assert len(e2e.sim.calls_for("podFindAndDeployOnDemand")) == 1
    assert [e.kind for e in await _events_of(e2e, job_id, "create_ambiguous")] == ["create_ambiguous"]
    assert len(await _events_of(e2e, job_id, "pod_adopted")) == 1


async def test_an_error_page_after_creating_is_ambiguous_too(e2e: E2E) -> None:
    e2e.sim.fail_create_after_creating(None, http_status=502, html=True)
    job_id = await e2e.start(steps=4)
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    assert len(e2e.sim.pods) == 1 and len(e2e.sim.calls_for("podFindAndDeployOnDemand")) == 1


async def test_two_pods_of_the_jobs_name_one_is_kept_the_other_terminated_and_charged(e2e: E2E) -> None:
    e = e2e
    e.planner.total_steps = 4
    e.planner.config_toml = CONFIG_TOML.format(steps=4)
    quote = await e.service.start(
        guild_id=GUILD, dataset="obama", preset=PROFILE.preset, user_id=USER, channel_id=1
    )
    job_id = quote.job_id
    assert job_id is not None
    # Two pods already carry the job's name (two creates that answered with errors, a crash between).
    made = [
        await e.client.create_pod(
            name=f"loraops-{job_id}", gpu_type_id="NVIDIA RTX A5000", image="img:1", env={}
        )
        for _ in range(2)
    ]
    e.advance(minutes=5)  # they bill meanwhile
    await e.service.confirm(job_id, user_id=USER)

    async def settled() -> None:
        while not await _events_of(e, job_id, "extra_pod_terminated"):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(settled(), 30)
    # Those pods were not made with this job's spec (the test made them): end the job here.
    await e.orchestrator.stop(job_id, JobState.CANCELLED, "test over")
    job = await e.service.get(job_id)
    assert job.pod_id in {pod.id for pod in made}
    (extra,) = await _events_of(e, job_id, "extra_pod_terminated")
    assert extra.payload["pod_id"] in {pod.id for pod in made} - {job.pod_id}
    assert Decimal(extra.payload["charged"]) > Decimal("0.02")  # five minutes and more at $0.27/h
    assert len(e.sim.calls_for("podFindAndDeployOnDemand")) == 2  # the bot rented nothing itself


async def test_a_ghost_found_late_is_terminated_and_charged_by_the_reconciler(e2e_slow: E2E) -> None:
    e = e2e_slow
    job_id = await e.start(steps=40)
    await e.wait_step(job_id, 2)
    ghost = await e.client.create_pod(
        name=f"loraops-{job_id}", gpu_type_id="NVIDIA RTX A5000", image="img:1", env={}
    )
    report = await e.reconciler.reconcile_once()
    assert report.ghosts == [ghost.id] and report.orphans == []
    assert e.sim.pods[ghost.id].phase == "terminated"
    await e.orchestrator.stop(job_id, JobState.CANCELLED, "test over")
    assert (await e.service.get(job_id)).pod_terminated_at is not None


async def _exits(e: E2E, **how: Any) -> tuple[int, Any]:
    job_id = await e.start(steps=200)
    await e.wait_step(job_id, 2)
    job = await e.service.get(job_id)
    assert job.pod_id is not None
    e.sim.exit_pod(job.pod_id, **how)
    assert await e.finish(job_id, timeout=30) in (JobState.FAILED, JobState.CANCELLED)
    return job_id, await e.service.get(job_id)


async def test_a_pod_that_exits_on_its_own_ends_the_job_and_billing_stops_there(e2e_slow: E2E) -> None:
    e = e2e_slow
    job_id, job = await _exits(e, reason="host restart")
    assert job.state == JobState.FAILED.value and job.step < 200
    assert job.error is not None and "stopped on its own" in job.error and "host restart" in job.error
    (exited,) = await _events_of(e, job_id, "pod_exited")
    assert exited.payload["status"] == "EXITED"
    ((_, _, _, payload),) = [s for s in e.listener.states if s[2] == JobState.FAILED]
    assert payload["reason"] == "pod_exited" and payload["cause"] == job.error  # the channel is told


async def test_a_dead_pod_fails_the_job_with_its_cause(e2e_slow: E2E) -> None:
    _, job = await _exits(e2e_slow, dead=True)
    assert job.state == JobState.FAILED.value and job.error is not None and "DEAD" in job.error


async def test_a_pod_stopped_from_the_console_cancels_the_job(e2e_slow: E2E) -> None:
    e = e2e_slow
    job_id = await e.start(steps=200)
    await e.wait_step(job_id, 2)
    pod_id = (await e.service.get(job_id)).pod_id
    assert pod_id is not None
    import requests

    def stop() -> None:  # someone clicks Stop in the RunPod console (the API call it makes)
        query = 'mutation { podStop(input: {podId: "' + pod_id + '"}) { id desiredStatus } }'
        answer = requests.post(
            f"{e.sim.base_url}/graphql",
            json={"query": query},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=10,
        )
        assert answer.json()["data"]["podStop"]["desiredStatus"] == "EXITED"

    await asyncio.to_thread(stop)
    assert await e.finish(job_id, timeout=30) == JobState.CANCELLED
    job = await e.service.get(job_id)
    assert job.error is not None and "stopped outside loraops" in job.error


async def test_the_balance_running_out_stops_the_pod_and_the_job_says_so(e2e_slow: E2E) -> None:
    e = e2e_slow
    e.sim.balance = Decimal("0.28")  # RunPod deploys with an hour of credit left
    job_id = await e.start(steps=4000, budget=Decimal("5"))  # a deadline hours away
    await e.wait_step(job_id, 2)
    e.advance(minutes=62)  # $0.28 at $0.27/h plus disks: RunPod stops every pod of the account
    assert await e.finish(job_id, timeout=30) == JobState.FAILED
    job = await e.service.get(job_id)
    assert job.error is not None and "ran out of credit" in job.error


async def test_a_pod_reported_at_zero_per_hour_is_billed_at_the_catalogue_price(e2e: E2E) -> None:
    e2e.sim.cost_per_hr_shown = "zero"
    job_id = await e2e.start(steps=4)
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    job = await e2e.service.get(job_id)
    assert job.price_per_hour == Decimal("0.27") and job.cost_usd > 0


async def test_the_pod_is_told_when_to_stop_itself_if_the_bot_is_gone(e2e: E2E) -> None:
    job_id = await e2e.start(steps=4, budget=Decimal("2.00"))
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    (pod,) = e2e.sim.pods.values()
    spec = JobSpec.from_env(pod.env[ENV_JOB_SPEC])
    assert spec.unattended_stop_s == e2e.settings.worker_unattended_stop_s
    # $2.00 at $0.27/h plus 60 GB of container disk ($0.10/GB-month): about 7.2 hours after renting.
    hours = (spec.budget_stop_unix - pod.created_at) / 3600
    assert abs(hours - 2.00 / (0.27 + 60 * 0.10 / 730)) < 0.01


async def test_a_dataset_over_the_proxys_body_limit_goes_up_in_parts(e2e: E2E) -> None:
    e2e.sim.proxy_max_body_bytes = 40_000  # Cloudflare's 100 MB, scaled down to the test's zip
    assert len(snapshot_zip()) > 2 * 40_000
    job_id = await e2e.start(steps=4)
    assert await e2e.finish(job_id) == JobState.SUCCEEDED
    puts = [c for c in e2e.sim.proxy_calls if c.method == "PUT" and c.path.endswith("/dataset")]
    statuses = [c.status for c in puts]
    assert statuses[0] == 413 and statuses[-1] == 201 and statuses.count(202) >= 2, statuses


async def test_a_pod_that_exited_while_the_bot_was_down_is_found_at_start_up(e2e_slow: E2E) -> None:
    e = e2e_slow
    job_id = await e.start(steps=200)
    await e.wait_step(job_id, 2)
    await e.orchestrator.close()  # the bot dies
    pod_id = (await e.service.get(job_id)).pod_id
    assert pod_id is not None
    e.sim.exit_pod(pod_id, reason="host restart")
    e.advance(minutes=30)  # nobody noticed for half an hour: the GPU was not billed meanwhile
    e.new_process()
    report = await e.reconciler.reconcile_once()
    assert report.stopped == [job_id] and report.resumed == []
    job = await e.service.get(job_id)
    assert job.state == JobState.FAILED.value and job.pod_terminated_at is not None
    (exited,) = await _events_of(e, job_id, "pod_exited")
    # Billing stopped when RunPod says the pod exited, not when the bot came back.
    assert datetime.fromisoformat(exited.payload["at"]) < job.pod_terminated_at - timedelta(minutes=29)


async def test_too_little_credit_to_rent_fails_at_once_and_says_so(e2e: E2E) -> None:
    e2e.sim.balance = Decimal("0.10")  # RunPod wants an hour of the pod's price in credit
    job_id = await e2e.start(steps=4)
    assert await e2e.finish(job_id) == JobState.FAILED
    job = await e2e.service.get(job_id)
    assert job.error is not None and "balance is too low" in job.error
    assert e2e.sim.pods == {}  # nothing rented, no other GPU type tried
    assert len(e2e.sim.calls_for("podFindAndDeployOnDemand")) == 1


async def test_the_network_volume_bills_every_month_budget_with_or_without_jobs(e2e: E2E) -> None:
    e = e2e
    volume = e.sim.add_network_volume("models", 500, "EU-RO-1")
    e.settings.runpod_network_volume_id = volume
    e.settings.discord_guild_ids = [GUILD, GUILD + 1]
    report = await e.reconciler.reconcile_once()  # first sight: billing starts
    assert report.errors == []
    e.advance(days=10)
    assert (await e.reconciler.reconcile_once()).errors == []
    # 500 GB at $0.07/GB-month for 240 of 730 hours is $11.51, half for each guild.
    spent = await e.orchestrator.ctx.money.month_spent(GUILD)
    assert abs(spent - Decimal("5.753")) < Decimal("0.01")
    # Halves of an odd number of micro-dollars: the last guild takes the remainder, so the two
    # shares differ by at most one micro-dollar and always add up to what RunPod billed.
    other = await e.orchestrator.ctx.money.month_spent(GUILD + 1)
    assert abs(other - spent) <= Decimal("0.000001")
    assert abs(spent + other - Decimal("11.506849")) < Decimal("0.00001")
