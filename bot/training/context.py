"""What the orchestrator works with and tells: the pods API it needs, its context, its listeners.

Split from ``orchestrator.py`` so that the listeners (the Discord cogs, the review) and the services that
build a job (``jobs.py``, ``reconciler.py``) depend on this small module, not on the driving loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.training.money import Money
from bot.training.progress import ProgressView
from storage.blobs import BlobStore
from storage.models import Checkpoint, Job, JobState, Sample
from storage.types import utcnow
from storage.views import CheckpointView, JobView, SampleView
from worker.protocol import BaseModelSource, JobSpec

log = logging.getLogger(__name__)

POD_PREFIX = "loraops-"


def pod_name_for(job_id: int) -> str:
    """The pod name that ties a pod to its job: ``loraops-<job id>``."""
    return f"{POD_PREFIX}{job_id}"


def job_id_from_pod_name(name: str | None) -> int | None:
    if not name or not name.startswith(POD_PREFIX):
        return None
    tail = name[len(POD_PREFIX) :]
    return int(tail) if tail.isdigit() else None


# --- what the orchestrator needs from RunPod (bot/clients/runpod.py provides it) -------------------


class PodLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def desired_status(self) -> str: ...
    @property
    def cost_per_hr(self) -> Decimal | None: ...
    @property
    def running(self) -> bool: ...


class PodsApi(Protocol):
    async def create_pod(
        self,
        *,
        name: str,
        gpu_type_id: str,
        image: str,
        env: dict[str, str],
        cloud_type: str,
        volume_in_gb: int,
        container_disk_in_gb: int,
        ports: str,
        network_volume_id: str | None = None,
    ) -> Any: ...
    async def get_pod(self, pod_id: str) -> Any: ...
    async def list_pods(self) -> Sequence[Any]: ...
    async def list_gpu_types(self) -> Sequence[Any]: ...
    async def terminate_pod(self, pod_id: str) -> Any: ...
    def worker_base_url(self, pod_id: str) -> Any: ...


# --- listeners -----------------------------------------------------------------------------------------


class JobListener:
    """Subclass and override what you care about. Every method is awaited; exceptions are logged and
    swallowed so a broken listener never stops a job. Listeners get frozen views of committed rows
    (``storage/views.py``), never the rows themselves."""

    async def on_state(self, job: JobView, old: JobState, new: JobState, payload: Mapping[str, Any]) -> None:
        """A committed transition. For terminal states the pod is already terminated and the cost final."""

    async def on_progress(self, view: ProgressView) -> None:
        """Throttled to ``progress_edit_interval_s`` per job, plus every state change."""

    async def on_event(self, job: JobView, kind: str, payload: Mapping[str, Any]) -> None:
        """Noteworthy non-transition events: ``no_capacity`` (trying the next GPU), ``pod_created``,
        ``pod_adopted``, ``pod_terminated``, ``orphan_terminated`` and ``extra_pod_terminated`` (a
        pod of the job's name it did not keep, terminated and charged: ``charged``, ``why``), and
        ``early_stop`` (a run its review stopped early whose note is still owed after a restart:
        ``bot/training/owed.py``; the payload is the stored ``early_stop`` event's)."""

    async def on_samples(self, job: JobView, samples: Sequence[SampleView]) -> None:
        """Newly collected (downloaded and verified) samples."""

    async def on_checkpoint(
        self, job: JobView, checkpoint: CheckpointView, samples: Sequence[SampleView]
    ) -> None:
        """A checkpoint is in the blob store, with the samples of its step (once they are in too)."""


class Listeners:
    """Fan-out to every registered :class:`JobListener`. The training domain hands rows in; each
    listener gets the same frozen views of them."""

    def __init__(self, listeners: Sequence[JobListener] = ()) -> None:
        self._listeners: list[JobListener] = list(listeners)

    def add(self, listener: JobListener, *, first: bool = False) -> None:
        """Subscribe; ``first``: told before the others (each is awaited in turn)."""
        if first:
            self._listeners.insert(0, listener)
        else:
            self._listeners.append(listener)

    def remove(self, listener: JobListener) -> None:
        self._listeners.remove(listener)

    async def _each(self, name: str, call: Callable[[JobListener], Awaitable[None]]) -> None:
        for listener in list(self._listeners):
            try:
                await call(listener)
            except Exception:
                log.exception("job listener %r failed in %s", listener, name)

    async def state(self, job: Job, old: JobState, new: JobState, payload: Mapping[str, Any]) -> None:
        view = JobView.of(job)
        await self._each("on_state", lambda lst: lst.on_state(view, old, new, payload))

    async def progress(self, view: ProgressView) -> None:
        await self._each("on_progress", lambda lst: lst.on_progress(view))

    async def event(self, job: Job, kind: str, payload: Mapping[str, Any]) -> None:
        view = JobView.of(job)
        await self._each("on_event", lambda lst: lst.on_event(view, kind, payload))

    async def samples(self, job: Job, samples: Sequence[Sample]) -> None:
        view, sample_views = JobView.of(job), [SampleView.of(s) for s in samples]
        await self._each("on_samples", lambda lst: lst.on_samples(view, sample_views))

    async def checkpoint(self, job: Job, checkpoint: Checkpoint, samples: Sequence[Sample]) -> None:
        view, checkpoint_view = JobView.of(job), CheckpointView.of(checkpoint)
        sample_views = [SampleView.of(s) for s in samples]
        await self._each("on_checkpoint", lambda lst: lst.on_checkpoint(view, checkpoint_view, sample_views))


# --- the orchestrator --------------------------------------------------------------------------------


@dataclass
class TrainingContext:
    """Everything the training domain shares; built once at start-up."""

    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    runpod: PodsApi
    blobs: BlobStore
    http: aiohttp.ClientSession
    money: Money
    listeners: Listeners = field(default_factory=Listeners)
    clock: Callable[[], datetime] = utcnow

    def now(self) -> datetime:
        return self.clock()


def build_spec(job: Job) -> JobSpec:
    """The worker's job spec from the frozen plan stored on the job at start."""
    spec: dict[str, Any] = dict(job.params.get("spec") or {})
    if not spec:
        raise ValueError(f"job {job.id} has no stored spec")
    if job.deadline_at is None:
        raise ValueError(f"job {job.id} has no deadline")
    return JobSpec(
        job_id=job.id,
        model_family=spec["model_family"],
        base_model=_source(spec["base_model"]),
        config_toml=spec["config_toml"],
        dataset_toml=spec["dataset_toml"],
        prompts_txt=spec["prompts_txt"],
        total_steps=int(spec["total_steps"]),
        dataset_sha256=spec["dataset_sha256"],
        deadline_unix=job.deadline_at.timestamp(),
    )


def _source(data: Mapping[str, Any]) -> BaseModelSource:
    extra = tuple(_source(item) for item in data.get("extra", ()))
    return BaseModelSource(**{**data, "extra": extra})


def prompt_lines(prompts_txt: str) -> list[str]:
    """sd-scripts' prompt file: one prompt per non-empty line, ``#`` lines are comments."""
    return [
        line.strip()
        for line in prompts_txt.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
