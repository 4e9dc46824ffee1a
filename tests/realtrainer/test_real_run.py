"""The real trainer in the loop: a job through the RunPod simulator, the real worker in the pod, the real
``accelerate launch train_network.py`` of sd-scripts v0.10.1 with real torch, on a random-weight SD1.5.

Nothing of the bot's side is faked: the job is rendered by the bot from the ``sd15-local`` preset (real
photos, captions, overrides), the orchestrator rents the pod through the runpod SDK, uploads the
snapshot, polls the worker, collects the checkpoints and samples and scores them with the dlib face
engine. What the test changes, and why:

- CI has no GPU, so the pod's environment carries ``LORAOPS_TEST_ONLY_ALLOW_CPU_TRAINING=1`` (the worker
  notes and accepts ``accelerator device: cpu``); the launcher is the image's own
  (``--config_file worker/accelerate_config.yaml``) with 2 CPU threads instead of 1;
- to keep the CPU cost down the dataset resolution is 64 px (below what the bot allows), no data-loader
  worker processes, and the sample
  prompts are two of the preset's at 64 px with 2 sampler steps; 4 steps, a checkpoint and samples every 2;
- there is no network: the tokenizer comes from ``tokenizer_cache_dir`` (built offline from open_clip's
  BPE file) and the base model is already in the pod's model cache, as on a network volume (the worker
  still verifies its sha256).

The raw console (tests/realtrainer/tee_console.py) is compared with the golden record by shape; with
``LORAOPS_RECORD_GOLDEN=1`` this run writes the record instead (tests/realtrainer/golden/).
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import re
import struct
import sys
import time
import tomllib
import zipfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomli_w
from PIL import Image
from pydantic import SecretStr
from sqlalchemy import select

from bot.clients.runpod import RunPodClient
from bot.config import Settings
from bot.faces.engines import DlibEngine
from bot.review.scoring import ReferenceScorer, SampleScorer, ThreadedScorer
from bot.review.service import CheckpointReview, FinalReview, ReviewListener, ReviewService
from bot.review.votes import VoteService
from bot.training.context import JobListener, Listeners, TrainingContext
from bot.training.estimate import SpeedProfile
from bot.training.jobs import JobService, RunPlan
from bot.training.money import Money
from bot.training.orchestrator import Orchestrator
from bot.training.render import RenderResult, TrainingImage, render
from bot.training.worker_client import WorkerClient
from sim.meter import assert_ledger_matches_meter
from sim.runpod import RunPodSim, worker_launcher
from sim.testdata import TESTDATA_FACES
from storage.blobs import BlobStore
from storage.db import make_engine, make_sessionmaker, unit_of_work
from storage.migrate import upgrade_to_head
from storage.models import Checkpoint, Dataset, Job, JobState, Sample, SpendEntry
from worker.device import ALLOW_CPU_ENV
from worker.protocol import BaseModelSource

from . import golden
from .conftest import REPO_ROOT, REPORT, RealSdScripts

pytestmark = [pytest.mark.slow, pytest.mark.realtrainer, pytest.mark.timeout(3600)]

KEY = "rpa_REALTRAINERKEY0123456789"
GUILD, USER = 1001, 42
STEPS, EVERY = 4, 2
PHOTOS = sorted((TESTDATA_FACES / "obama").glob("obama_[0-9].jpg"))[:3]
OVERRIDES = {
    "max_train_steps": str(STEPS),
    "save_every_n_steps": str(EVERY),
    "sample_every_n_steps": str(EVERY),
    "mixed_precision": "no",  # fp16 autocast needs CUDA; accelerate would train without it on a CPU anyway
    "resolution": "256",  # the smallest the bot allows; shrunk to 64 below
    "min_bucket_reso": "64",
    "max_bucket_reso": "256",
}
# A CPU's speed, not a GPU's: the estimate sets the job's hard deadline (twice the estimate plus 15
# minutes), and a loaded CI machine must not hit it (a 4-step run took 18 minutes at load average 20).
PROFILE = SpeedProfile(
    preset="sd15-local",
    min_vram_gb=6,
    default_its={"NVIDIA RTX A5000": 0.01},
    fallback_its=0.01,
    boot_s=300,
    collect_s=60,
)


def rendered() -> RenderResult:
    images = [TrainingImage(source=p, caption="ohwx man, photo") for p in PHOTOS]
    return render(images, preset="sd15-local", trigger="ohwx", class_word="man", overrides=OVERRIDES)


def shrink(result: RenderResult, tokenizers: Path) -> tuple[str, str, str]:
    """config.toml, dataset.toml and prompts for a CPU: 64 px, two 64 px prompts of 2 sampler steps."""
    config = tomllib.loads(result.config_toml)
    config["model_arguments"]["tokenizer_cache_dir"] = str(tokenizers)
    config["training_arguments"]["max_data_loader_n_workers"] = 0  # no worker processes beside a 4 GB model
    dataset = tomllib.loads(result.dataset_toml)
    dataset["datasets"][0]["resolution"] = [64, 64]
    lines = [line for line in result.prompts_txt.splitlines() if line and not line.startswith("#")][:2]
    prompts = [
        re.sub(r"--s \d+", "--s 2", re.sub(r"--w \d+ --h \d+", "--w 64 --h 64", line)) for line in lines
    ]
    return tomli_w.dumps(config), tomli_w.dumps(dataset), "\n".join(prompts) + "\n"


def snapshot_zip(result: RenderResult) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for item in result.dataset_files():
            archive.writestr(item.path, item.read())
    return buffer.getvalue()


def safetensors_header(data: bytes) -> dict[str, Any]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length])


@dataclass
class Planner:
    plan_: RunPlan

    async def plan(self, **_: Any) -> RunPlan:
        return self.plan_


@dataclass
class Recorder(JobListener):
    states: list[JobState] = field(default_factory=list)
    failures: list[Mapping[str, Any]] = field(default_factory=list)

    async def on_state(self, job: Job, old: JobState, new: JobState, payload: Any) -> None:
        self.states.append(new)
        if new is JobState.FAILED:
            self.failures.append(dict(payload))


@dataclass
class Publisher:
    checkpoints: list[CheckpointReview] = field(default_factory=list)
    finals: list[FinalReview] = field(default_factory=list)

    async def checkpoint_reviewed(self, job: Job, review: CheckpointReview) -> None:
        self.checkpoints.append(review)

    async def job_reviewed(self, job: Job, review: FinalReview) -> None:
        self.finals.append(review)

    def reviewer_role_id(self, guild_id: int) -> int | None:
        return None


@dataclass
class Seen:
    """What the worker reported while the real trainer ran (its parse of the real console)."""

    steps: set[int] = field(default_factory=set)
    epochs: set[int] = field(default_factory=set)
    losses: list[float] = field(default_factory=list)
    states: list[str] = field(default_factory=list)


async def watch(client: WorkerClient, seen: Seen) -> None:
    while True:
        try:
            status = await client.status()
        except Exception:  # the pod is booting or already gone
            await asyncio.sleep(1)
            continue
        seen.steps.add(status.step)
        if status.epoch is not None:
            seen.epochs.add(status.epoch)
        if status.loss is not None:
            seen.losses.append(status.loss)
        if not seen.states or seen.states[-1] != status.state:
            seen.states.append(status.state)
        await asyncio.sleep(1)


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[tuple[Settings, Any, BlobStore]]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'loraops.db'}",
        data_dir=tmp_path / "data",
        poll_interval_s=1.0,
        progress_edit_interval_s=5.0,
        runpod_api_key=SecretStr(KEY),
    )
    upgrade_to_head(settings.database_url)
    engine = make_engine(settings.database_url)
    yield settings, make_sessionmaker(engine), BlobStore(settings.blob_dir)
    await engine.dispose()


async def test_real_sd_scripts_trains_through_the_runpod_simulator(
    real_sdscripts: RealSdScripts, services: tuple[Settings, Any, BlobStore], tmp_path: Path
) -> None:
    settings, sessions, blobs = services
    result = rendered()
    config_toml, dataset_toml, prompts_txt = shrink(result, real_sdscripts.tokenizers)
    base = result.base_model
    assert base.kind == "hf" and base.local_name == "v1-5-pruned-emaonly.safetensors"
    # The pod's model cache (a network volume in production) already holds the base model.
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / base.local_name).symlink_to(real_sdscripts.model)
    source = BaseModelSource(
        kind="hf", repo=base.repo, filename=base.filename, sha256=real_sdscripts.model_sha256()
    )

    console = tmp_path / "console"
    trainer_cmd = (
        f"{sys.executable} {Path(__file__).parent / 'tee_console.py'} {console} "
        f"{real_sdscripts.accelerate} launch --config_file {REPO_ROOT / 'worker' / 'accelerate_config.yaml'} "
        "--num_cpu_threads_per_process 2"
    )
    launcher = worker_launcher(
        trainer_cmd=trainer_cmd,
        extra_env={
            "LORAOPS_SD_SCRIPTS_DIR": str(real_sdscripts.src),
            "LORAOPS_MODEL_CACHE_DIR": str(volume),
            "LORAOPS_SCAN_SECONDS": "1",
            ALLOW_CPU_ENV: "1",
            "HF_HUB_OFFLINE": "1",  # a stray hub lookup fails at once instead of hanging
            "COLUMNS": "400",  # as the image sets it: Rich does not wrap log lines
        },
        stop_grace_s=10.0,
    )
    sim = RunPodSim(api_key=KEY, data_dir=tmp_path / "rp", launcher=launcher)
    await sim.start()
    settings = settings.model_copy(
        update={"runpod_api_base_url": sim.base_url, "runpod_proxy_url_template": sim.proxy_url_template}
    )
    async with unit_of_work(sessions) as session:
        dataset = Dataset(guild_id=GUILD, name="obama", trigger_word="ohwx", class_word="man", owner_id=USER)
        session.add(dataset)
        await session.flush()
        dataset_id = dataset.id
    plan = RunPlan(
        dataset_id=dataset_id,
        snapshot_id=None,
        archive_sha256=blobs.put(snapshot_zip(result)),
        profile=PROFILE,
        model_family="sd15",
        base_model=source,
        config_toml=config_toml,
        dataset_toml=dataset_toml,
        prompts_txt=prompts_txt,
        total_steps=result.total_steps,
    )
    assert plan.total_steps == STEPS
    engine = DlibEngine()
    reference = ReferenceScorer.from_photos(engine, PHOTOS)

    async def scorer_for(job: Job) -> SampleScorer:
        return ThreadedScorer(reference)

    recorder, publisher, seen = Recorder(), Publisher(), Seen()

    async def stop_early(*args: Any, **kwargs: Any) -> Any:  # the wiring bot/services.py does
        return await jobs.stop_early(*args, **kwargs)

    review = ReviewService(
        sessions, blobs, VoteService(sessions), scorer_for, row_cell_px=64, grid_cell_px=64
    )
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        client = RunPodClient.from_settings(settings)
        ctx = TrainingContext(
            sessions=sessions,
            settings=settings,
            runpod=client,
            blobs=blobs,
            http=http,
            # The bot reads the simulator's clock, as the harness wires it: the minutes of the image pull
            # pass fast for both, so the ledger and the meter count the same time.
            money=Money(sessions, settings, clock=sim.clock.now),
            listeners=Listeners([recorder, ReviewListener(review, stop_early, publisher)]),
            clock=sim.clock.now,
        )
        orchestrator = Orchestrator(ctx)
        jobs = JobService(ctx, orchestrator, Planner(plan))
        watcher: asyncio.Task[None] | None = None
        try:
            quote = await jobs.start(guild_id=GUILD, dataset="obama", preset="sd15-local", user_id=USER)
            assert quote.job_id is not None
            await jobs.confirm(quote.job_id, user_id=USER)
            while (pod_id := (await jobs.get(quote.job_id)).pod_id) is None or pod_id not in sim.pods:
                await asyncio.sleep(0.5)
            token = sim.pods[pod_id].env["LORAOPS_WORKER_TOKEN"]  # what the bot gave the pod
            watcher = asyncio.create_task(
                watch(WorkerClient(http, client.worker_base_url(pod_id), token), seen)
            )
            final = await asyncio.wait_for(orchestrator.wait(quote.job_id), 3000)
            await sim.wait_for(lambda: not sim.live_pods(), within=60)
        finally:
            if watcher is not None:
                watcher.cancel()
            await orchestrator.close()
            pod_logs = {pod.id: pod.log_text() for pod in sim.pods.values()}
            await sim.close()
    wall_s = time.monotonic() - started
    job = await jobs.get(quote.job_id)
    log = "\n".join(pod_logs.values())
    assert final == JobState.SUCCEEDED, f"{job.error}\n{log[-6000:]}"

    # The real trainer ran under the worker, on the CPU only because the test allowed it.
    assert "accelerator device: cpu" in log and f"allowed by {ALLOW_CPU_ENV}" in log
    assert "model saved." in log
    assert recorder.states[-1] is JobState.SUCCEEDED
    # The worker parsed the real console: steps, epochs (3 images, batch 1: 4 steps are 2 epochs), the loss.
    assert STEPS in seen.steps and seen.epochs == {1, 2}
    assert seen.losses and all(math.isfinite(loss) for loss in seen.losses)

    # Real checkpoints: LoRA weights for the U-Net and the text encoder, sd-scripts' metadata.
    async with sessions() as session:
        checkpoints = (await session.scalars(select(Checkpoint).order_by(Checkpoint.step))).all()
        samples = (await session.scalars(select(Sample).order_by(Sample.step, Sample.prompt_index))).all()
        ledger = (await session.scalars(select(SpendEntry))).all()
    assert [c.step for c in checkpoints] == [2, 4] and all(c.collected for c in checkpoints)
    for checkpoint in checkpoints:
        header = safetensors_header(blobs.get(checkpoint.sha256))
        metadata = header.pop("__metadata__")
        assert metadata["ss_network_module"] == "networks.lora" and metadata["ss_steps"] == str(
            checkpoint.step
        )
        assert metadata["ss_base_model_version"] == "sd_v1" and metadata["ss_network_dim"] == "8"
        assert any(k.startswith("lora_unet_") for k in header) and any(
            k.startswith("lora_te_") for k in header
        )
        assert {entry["dtype"] for entry in header.values()} == {"F16"}  # save_precision fp16
    # Real sample PNGs, two prompts at each checkpoint, scored by the face engine.
    assert [(s.step, s.prompt_index) for s in samples] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    for sample in samples:
        image = Image.open(io.BytesIO(blobs.get(sample.blob_sha256)))
        assert image.format == "PNG" and image.size == (64, 64)
        assert sample.engine == engine.engine_id and sample.face_found is not None
    assert [r.step for r in publisher.checkpoints] == [2, 4]
    assert all(len(r.scores) == 2 and all(s is not None for s in r.scores) for r in publisher.checkpoints)
    assert publisher.finals and publisher.finals[0].grid is not None
    # Money: the pod is gone, the ledger adds up to the job's cost.
    assert job.pod_terminated_at is not None and job.cost_usd > 0
    assert sum((e.amount_usd for e in ledger), Decimal(0)) == job.cost_usd
    await assert_ledger_matches_meter(sessions, sim)  # and equals what RunPod bills, to the cent

    # The real console against the golden record (or a new record).
    run = golden.Console.read(console)
    files = golden.output_tree(sim_pod_output(tmp_path))
    if os.environ.get("LORAOPS_RECORD_GOLDEN") == "1":
        golden.record(run, files, config_toml=config_toml, dataset_toml=dataset_toml, prompts_txt=prompts_txt)
    else:
        golden.assert_same_shape(golden.load(), run, files, invents=False)

    checkpoint_names = ", ".join(c.file_name for c in checkpoints)
    REPORT.append(
        f"real sd-scripts run: {max(seen.steps)} steps, {len(checkpoints)} checkpoints ({checkpoint_names}), "
        f"{len(samples)} samples scored, succeeded in {wall_s:.0f} s wall (pod rented to pod gone; "
        f"accelerate launch train_network.py on the CPU, 64 px); env+model preparation in this session "
        f"{real_sdscripts.prepare_s:.0f} s"
    )


def sim_pod_output(tmp_path: Path) -> Path:
    """The run's output folder in the (only) simulated pod's work directory."""
    (output,) = (tmp_path / "rp" / "pods").glob("*/workspace/job/output")
    return output
