"""The training service the ``/train`` commands call: estimate, start, confirm, cancel, status, list_jobs.

``start`` freezes the plan (snapshot, rendered configs, GPU order, estimate) into a ``pending`` job
and returns a :class:`Quote` for the user to confirm; ``confirm`` commits ``pending → provisioning``
(the announcement that a pod is about to be rented) and hands the job to the orchestrator. Refusals
(over budget, too many live jobs) are :class:`~bot.errors.UserError` subclasses with a message the
cog shows as is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.background import TaskGroup
from bot.clients.runpod import RunPodError
from bot.config import Settings
from bot.errors import (
    BudgetExceededError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
)
from bot.guilds import check_budget
from bot.outbox import QUOTE
from bot.roles import Member, RoleNames
from bot.text import quote_inline
from bot.training.context import Listeners, TrainingContext, pod_name_for
from bot.training.estimate import (
    DEADLINE_FACTOR,
    DEADLINE_SLACK_S,
    Estimate,
    NoSuitableGpuError,
    SpeedProfile,
    estimate_run,
)
from bot.training.money import Money, usd
from bot.training.orchestrator import Orchestrator
from bot.training.presets import check_overrides, preset_names
from bot.training.pricing import PodDisks
from bot.training.progress import ProgressView
from bot.training.reconciler import Reconciler
from bot.training.rules import JobAction, require_budget_authority, require_may_act
from bot.training.states import is_live, transition
from bot.training.tokens import new_nonce
from storage import datasets, jobs
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import (
    Job,
    JobState,
)
from storage.types import utcnow
from storage.views import JobEventView, JobView
from worker.protocol import BaseModelSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, frozen before it starts (a job trains a snapshot, never a moving set).

    ``archive_sha256`` names the snapshot zip in the blob store; the worker checks it on upload.
    """

    dataset_id: int
    snapshot_id: int | None
    archive_sha256: str
    profile: SpeedProfile
    model_family: str
    base_model: BaseModelSource
    config_toml: str
    dataset_toml: str
    prompts_txt: str
    total_steps: int
    container_disk_in_gb: int = 60
    volume_in_gb: int = 0
    notes: tuple[str, ...] = ()
    early_stop_patience: int | None = None  # checkpoints without a better face score before stopping
    face_alarm: Mapping[str, Any] | None = None  # when the face alarm judges (checkpoint, fraction)

    def spec_json(self) -> dict[str, Any]:
        """The JobSpec fields that do not depend on the job id or the deadline."""
        from dataclasses import asdict

        return {
            "model_family": self.model_family,
            "base_model": asdict(self.base_model),
            "config_toml": self.config_toml,
            "dataset_toml": self.dataset_toml,
            "prompts_txt": self.prompts_txt,
            "total_steps": self.total_steps,
            "dataset_sha256": self.archive_sha256,
        }


class RunPlanner(Protocol):
    """Turns (guild, dataset name, preset, overrides) into a :class:`RunPlan` (snapshot + configs)."""

    async def plan(
        self, *, guild_id: int, dataset: str, preset: str, params: Mapping[str, Any], user_id: int
    ) -> RunPlan: ...


@dataclass(frozen=True)
class Quote:
    """What ``/train estimate`` and ``/train start`` show. ``problems`` empty means it may start."""

    dataset: str
    preset: str
    estimate: Estimate
    budget_usd: Decimal
    month_spent: Decimal
    month_budget: Decimal
    live_jobs: int
    max_live_jobs: int
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    job_id: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        est = self.estimate
        lines = [
            f"**{self.dataset}** · preset `{self.preset}`",
            f"GPU: {est.summary()}",
        ]
        if len(est.options) > 1:
            fallbacks = ", ".join(o.display_name for o in est.options[1:4])
            lines.append(f"If it has no capacity: {fallbacks}")
        lines.append(
            f"Budget: {usd(self.budget_usd)} for this job · this month {usd(self.month_spent)} "
            f"of {usd(self.month_budget)} spent"
        )
        lines.extend(f"Note: {note}" for note in (*self.notes, *est.notes))
        lines.extend(f"⛔ {problem}" for problem in self.problems)
        if self.job_id is not None and self.ok:
            lines.append(f"Job #{self.job_id} is waiting for confirmation.")
        return "\n".join(lines)


@dataclass
class JobService:
    """The domain API of training jobs. One per process, built at start-up."""

    ctx: TrainingContext
    orchestrator: Orchestrator
    planner: RunPlanner
    confirm_within: timedelta = field(default=timedelta(minutes=15))

    # -- queries ----------------------------------------------------------------------------------

    async def live_job_count(
        self, guild_id: int, *, exclude: int | None = None, started_only: bool = False
    ) -> int:
        async with self.ctx.sessions() as session:
            return await jobs.live_job_count(session, guild_id, exclude=exclude, started_only=started_only)

    async def get(self, job_id: int, *, guild_id: int | None = None) -> JobView:
        async with self.ctx.sessions() as session:
            job = await jobs.job(session, job_id)
        if job is None or (guild_id is not None and job.guild_id != guild_id):
            raise NotFoundError(f"there is no job #{job_id} here")
        return JobView.of(job)

    async def status(self, job_id: int, *, guild_id: int | None = None) -> ProgressView:
        return ProgressView.from_job(await self.get(job_id, guild_id=guild_id))

    async def list_jobs(
        self, guild_id: int, *, live_only: bool = False, limit: int = 20
    ) -> list[ProgressView]:
        """Newest first."""
        async with self.ctx.sessions() as session:
            rows = await jobs.guild_jobs(session, guild_id, live_only=live_only, limit=limit)
        return [ProgressView.from_job(job) for job in rows]

    async def events(self, job_id: int) -> list[JobEventView]:
        async with self.ctx.sessions() as session:
            return [JobEventView.of(row) for row in await jobs.events(session, job_id)]

    # -- who may ask for what (the rules live in bot.training.rules) ---------------------------------

    async def check_request(
        self,
        *,
        guild_id: int,
        preset: str,
        overrides: str | Mapping[str, str] | None,
        budget_usd: Decimal | None,
        member: Member,
        roles: RoleNames,
    ) -> dict[str, str]:
        """The cheap checks of an estimate or a start, before any planning or spend: the preset exists,
        the overrides apply to it, and ``member`` may set ``budget_usd``. Returns the overrides."""
        if preset not in preset_names():
            raise NotFoundError(
                f"There is no preset {quote_inline(preset, 40)}. Presets: {', '.join(preset_names())}."
            )
        params = check_overrides(preset, overrides)
        if budget_usd is not None:
            default = await self.ctx.money.default_job_budget(guild_id)
            require_budget_authority(member, budget_usd, default, roles)
        return params

    async def authorize(
        self, job_id: int, *, guild_id: int | None, member: Member, roles: RoleNames, action: JobAction
    ) -> JobView:
        """The job, if ``member`` may ``action`` it (:func:`bot.training.rules.may_act`) and, for a
        cancel, it is still live; else a user-facing error."""
        job = await self.get(job_id, guild_id=guild_id)
        require_may_act(member, job.requested_by, job_id, action, roles)
        if action == JobAction.CANCEL and not is_live(job.state):
            raise ConflictError(f"Job #{job_id} has already ended ({job.state}).")
        return job

    # -- estimate / start / confirm ------------------------------------------------------------------

    async def _budget_for(self, guild_id: int, budget_usd: Decimal | None) -> Decimal:
        if budget_usd is not None:
            return check_budget(budget_usd, "A job's budget")  # rounded to the cent, then checked
        return await self.ctx.money.default_job_budget(guild_id)

    async def _quote(
        self,
        *,
        guild_id: int,
        dataset: str,
        preset: str,
        plan: RunPlan,
        budget_usd: Decimal | None,
        gpu: str | None = None,
    ) -> Quote:
        try:
            gpus = await self.ctx.runpod.list_gpu_types()  # type: ignore[attr-defined]
        except RunPodError as exc:
            raise ServiceUnavailableError(f"RunPod did not answer the GPU list: {exc}") from exc
        try:
            estimate = await estimate_run(
                self.ctx.sessions,
                gpus,
                plan.profile,
                plan.total_steps,
                cloud=self.ctx.settings.runpod_cloud_type,
                storage_per_hour=PodDisks(plan.container_disk_in_gb, plan.volume_in_gb).running_per_hour(),
            )
        except NoSuitableGpuError as exc:
            raise ServiceUnavailableError(str(exc)) from exc
        if gpu:
            estimate = prefer_gpu(estimate, gpu)
        budget = await self._budget_for(guild_id, budget_usd)
        spent = await self.ctx.money.month_spent(guild_id)
        month_budget = await self.ctx.money.month_budget(guild_id)
        live = await self.live_job_count(guild_id)
        limit = self.ctx.settings.max_live_jobs_per_guild
        problems: list[str] = []
        if estimate.cost_usd > budget:
            problems.append(
                f"the estimate ({usd(estimate.cost_usd)}) is more than the job budget ({usd(budget)}): "
                "ask an admin for a larger budget, or use fewer steps or a lighter preset"
            )
        if spent + estimate.cost_usd > month_budget:
            problems.append(
                f"the estimate ({usd(estimate.cost_usd)}) would take this month past its budget: "
                f"{usd(spent)} of {usd(month_budget)} already spent"
            )
        if live >= limit:
            problems.append(
                f"this server already has {live} live training job(s), the most allowed is {limit}"
            )
        return Quote(
            dataset=dataset,
            preset=preset,
            estimate=estimate,
            budget_usd=budget,
            month_spent=spent,
            month_budget=month_budget,
            live_jobs=live,
            max_live_jobs=limit,
            problems=tuple(problems),
            notes=plan.notes,
        )

    async def estimate(
        self,
        *,
        guild_id: int,
        dataset: str,
        preset: str,
        user_id: int,
        budget_usd: Decimal | None = None,
        params: Mapping[str, Any] | None = None,
        gpu: str | None = None,
    ) -> Quote:
        """GPU, time and cost for a run, and whether it may start (``Quote.problems``).

        ``gpu`` (a RunPod GPU type id or display name) is tried first; the others stay as fall-backs.
        """
        plan = await self.planner.plan(
            guild_id=guild_id, dataset=dataset, preset=preset, params=dict(params or {}), user_id=user_id
        )
        return await self._quote(
            guild_id=guild_id, dataset=dataset, preset=preset, plan=plan, budget_usd=budget_usd, gpu=gpu
        )

    async def start(
        self,
        *,
        guild_id: int,
        dataset: str,
        preset: str,
        user_id: int,
        channel_id: int | None = None,
        budget_usd: Decimal | None = None,
        params: Mapping[str, Any] | None = None,
        gpu: str | None = None,
    ) -> Quote:
        """Create a ``pending`` job from a fresh plan; nothing is rented until :meth:`confirm`.

        Raises :class:`BudgetExceededError` when the estimate alone exceeds the job's or the month's
        budget and :class:`ConflictError` when the server has too many live jobs.
        """
        overrides = dict(params or {})
        plan = await self.planner.plan(
            guild_id=guild_id, dataset=dataset, preset=preset, params=overrides, user_id=user_id
        )
        quote = await self._quote(
            guild_id=guild_id, dataset=dataset, preset=preset, plan=plan, budget_usd=budget_usd, gpu=gpu
        )
        if quote.problems:
            error = (
                ConflictError
                if quote.live_jobs >= quote.max_live_jobs and len(quote.problems) == 1
                else (BudgetExceededError)
            )
            raise error("Cannot start: " + "; ".join(quote.problems))
        now = self.ctx.now()
        async with unit_of_work(self.ctx.sessions) as session:
            job = Job(
                guild_id=guild_id,
                dataset_id=plan.dataset_id,
                snapshot_id=plan.snapshot_id,
                preset=preset,
                params={
                    "overrides": overrides,
                    "spec": plan.spec_json(),
                    "pod": {
                        "container_disk_in_gb": plan.container_disk_in_gb,
                        "volume_in_gb": plan.volume_in_gb,
                    },
                    **({"face_alarm": dict(plan.face_alarm)} if plan.face_alarm else {}),
                },
                state=JobState.PENDING.value,
                gpu_type=quote.estimate.pick.gpu_type_id,
                worker_token_nonce=new_nonce(),  # the token is derived from it (bot.training.tokens)
                budget_usd=quote.budget_usd,
                estimate=quote.estimate.to_json(),
                total_steps=plan.total_steps,
                early_stop_patience=plan.early_stop_patience,
                channel_id=channel_id,
                requested_by=user_id,
                created_at=now,
            )
            await jobs.add_job(session, job)
            # The pod name carries the job id and is committed before any pod exists.
            job.pod_name = pod_name_for(job.id)
            jobs.add_event(
                session,
                job.id,
                "state",
                {"by": user_id, "estimate_usd": str(quote.estimate.cost_usd)},
                at=now,
                to_state=JobState.PENDING.value,
            )
        return replace(quote, job_id=job.id)

    async def confirm(self, job_id: int, *, user_id: int, guild_id: int | None = None) -> JobView:
        """A trainer confirmed: commit ``pending → provisioning`` and start driving the job."""
        job = await self.get(job_id, guild_id=guild_id)
        state = job.state
        if state != JobState.PENDING:
            if job.live:
                return job  # a second ✅ on a running job: nothing to do
            raise ConflictError(f"job #{job_id} has already ended ({state.value})")
        now = self.ctx.now()
        if job.created_at + self.confirm_within < now:
            await self.orchestrator.stop(job_id, JobState.CANCELLED, "not confirmed in time")
            raise ConflictError(
                f"job #{job_id} was not confirmed within {self.confirm_within}; start it again"
            )
        limit = self.ctx.settings.max_live_jobs_per_guild
        running = await self.live_job_count(job.guild_id, exclude=job_id, started_only=True)
        if running >= limit:
            raise ConflictError(
                f"this server already has {running} running training job(s), the most allowed is {limit}"
            )
        spent = await self.ctx.money.month_spent(job.guild_id)
        month_budget = await self.ctx.money.month_budget(job.guild_id)
        estimated = Decimal(str(job.estimate.get("cost_usd", "0")))
        if spent + estimated > month_budget:
            raise BudgetExceededError(
                f"the estimate ({usd(estimated)}) would take this month past its budget: "
                f"{usd(spent)} of {usd(month_budget)} already spent"
            )
        deadline = now + timedelta(seconds=DEADLINE_FACTOR * _slowest_s(job.estimate) + DEADLINE_SLACK_S)

        def _set_deadline(row: Job) -> None:
            row.deadline_at = deadline

        result = await transition(
            self.ctx.sessions,
            job_id,
            JobState.PROVISIONING,
            payload={"confirmed_by": user_id, "deadline": deadline.isoformat()},
            update=_set_deadline,
            now=now,
        )
        if result.changed:
            await self.ctx.listeners.state(result.job, result.old, result.new, result.payload)
        self.orchestrator.ensure_driving(job_id)
        return JobView.of(result.job)

    async def cancel(
        self, job_id: int, *, user_id: int, guild_id: int | None = None, reason: str | None = None
    ) -> JobView:
        """Cancel a live job: committed first, then the pod is terminated."""
        job = await self.get(job_id, guild_id=guild_id)
        if not job.live:
            raise ConflictError(f"job #{job_id} has already ended ({job.state.value})")
        cause = reason or "cancelled on request"
        return JobView.of(
            await self.orchestrator.stop(job_id, JobState.CANCELLED, cause, payload={"by": user_id})
        )

    async def stop_early(
        self, job_id: int, reason: str, *, payload: Mapping[str, Any] | None = None
    ) -> tuple[JobView, bool]:
        """Stop a training job now and keep its results (it ends ``succeeded`` with an ``early_stop``
        event). Returns the job and whether this call stopped it; a job no longer training is left as is."""
        await self.get(job_id)
        job, stopped = await self.orchestrator.stop_early(job_id, reason, payload=payload)
        return JobView.of(job), stopped

    async def pending_quotes(self) -> list[tuple[int, int, int]]:
        """``(job id, channel id, quote message id)`` of the jobs still waiting for confirmation."""
        async with self.ctx.sessions() as session:
            return await jobs.pending_quote_messages(session, QUOTE)

    async def left_pending(
        self, *, within: timedelta = timedelta(days=1)
    ) -> list[tuple[int, int, int, JobEventView]]:
        """``(job id, channel id, quote message id, the state event that left pending)`` of recent jobs
        no longer pending, for quotes a bot killed mid-confirmation never updated."""
        since = self.ctx.now() - within
        async with self.ctx.sessions() as session:
            rows = await jobs.quotes_left_pending(session, QUOTE, since)
        return [(int(j), int(c), int(m), JobEventView.of(event)) for j, c, m, event in rows]

    async def set_progress_message(self, job_id: int, *, channel_id: int, message_id: int) -> None:
        """Remember where the progress message lives, so a restarted bot edits the same one."""
        async with unit_of_work(self.ctx.sessions) as session:
            job = await jobs.job(session, job_id)
            if job is None:
                raise NotFoundError(f"there is no job #{job_id}")
            job.channel_id = channel_id
            job.progress_message_id = message_id


CONTAINER_DISK_GB_BY_FAMILY = {"sd15": 40, "sdxl": 60, "flux": 120}


@dataclass
class DatasetRunPlanner:
    """The production :class:`RunPlanner`: dataset rows → render → frozen snapshot (zip in the blob store).

    Uses the dataset's non-excluded images (bytes from the blob store), their captions (else
    ``trigger class``) and the main face box of any face analysis (for face-weighted loss). ``params``
    are preset overrides as ``section.key → value`` (``train.max_train_steps = 1200``).
    """

    sessions: async_sessionmaker[AsyncSession]
    blobs: BlobStore

    async def plan(
        self, *, guild_id: int, dataset: str, preset: str, params: Mapping[str, Any], user_id: int
    ) -> RunPlan:
        from bot.training.estimate import speed_profile
        from bot.training.render import TrainingImage, base_model_source, render
        from bot.training.snapshots import create_snapshot

        async with self.sessions() as session:
            row = await datasets.dataset_named(session, guild_id, dataset)
            if row is None:
                raise NotFoundError(f"there is no dataset named {dataset!r} here")
            images = await jobs.images_to_train(session, row.id)
            image_ids = [image.id for image in images]
            captions = await jobs.captions_of(session, image_ids)
            boxes: dict[int, tuple[float, float, float, float]] = {}
            for analysis in await jobs.face_analyses_of(session, image_ids):
                if analysis.bbox and len(analysis.bbox) == 4 and analysis.face_count == 1:
                    x0, y0, x1, y1 = (float(v) for v in analysis.bbox)
                    boxes.setdefault(analysis.image_id, (x0, y0, x1, y1))
        if not images:
            raise InvalidInputError(f"dataset {dataset!r} has no images to train on")
        default_caption = f"{row.trigger_word} {row.class_word}"
        training = [
            TrainingImage(
                source=self.blobs.path_for(image.sha256),
                caption=captions.get(image.id) or default_caption,
                subset=image.subset,
                face_bbox=boxes.get(image.id),
                name=f"{image.position:04d}",
                sha256=image.sha256,
            )
            for image in images
        ]
        overrides = {str(key): str(value) for key, value in params.items()}
        result = await asyncio.to_thread(
            render,
            training,
            preset=preset,
            trigger=row.trigger_word,
            class_word=row.class_word,
            overrides=overrides,
        )
        snapshot = await create_snapshot(
            self.sessions, self.blobs, dataset_id=row.id, created_by=user_id, result=result
        )
        assert snapshot.archive_sha256 is not None
        family = result.preset.family
        return RunPlan(
            dataset_id=row.id,
            snapshot_id=snapshot.id,
            archive_sha256=snapshot.archive_sha256,
            profile=speed_profile(result.preset),
            model_family=family,
            base_model=base_model_source(result.preset),
            config_toml=result.config_toml,
            dataset_toml=result.dataset_toml,
            prompts_txt=result.prompts_txt,
            total_steps=result.total_steps,
            container_disk_in_gb=CONTAINER_DISK_GB_BY_FAMILY.get(family, 80),
            notes=tuple(result.warnings),
            early_stop_patience=result.preset.early_stop_patience,
            face_alarm=result.preset.face_alarm,
        )


def prefer_gpu(estimate: Estimate, wanted: str) -> Estimate:
    """``estimate`` with the GPU named ``wanted`` (type id or display name) tried first."""
    key = wanted.strip().casefold()
    for index, option in enumerate(estimate.options):
        if key in (option.gpu_type_id.casefold(), option.display_name.casefold()):
            rest = estimate.options[:index] + estimate.options[index + 1 :]
            return replace(estimate, options=(option, *rest))
    suitable = ", ".join(option.display_name for option in estimate.options[:8])
    raise InvalidInputError(
        f"GPU {quote_inline(wanted, 60)} is not offered for this preset; suitable: {suitable}"
    )


def _slowest_s(estimate: Mapping[str, Any]) -> float:
    options = estimate.get("options") or []
    totals = [float(option.get("total_s", 0)) for option in options]
    return max(totals, default=float(estimate.get("total_s", 3600)))


@dataclass
class Training:
    """The training domain wired together: what ``bot/services.py`` keeps and the cog calls."""

    ctx: TrainingContext
    orchestrator: Orchestrator
    service: JobService
    reconciler: Reconciler

    @property
    def listeners(self) -> Listeners:
        """Subscribe the cog here: ``training.listeners.add(MyListener())``."""
        return self.ctx.listeners

    def start_background(self, tasks: TaskGroup, *, interval_s: float = 60.0) -> None:
        """Reconcile now (resumes live jobs after a restart) and then every ``interval_s`` seconds."""
        tasks.spawn(self.reconciler.run(interval_s), name="training-reconciler")
        tasks.spawn(self.reconciler.finish_owed_at_start(), name="training-owed-messages")

    def chat_ready(self) -> None:
        """The chat connection is up: messages owed since before a restart can be announced now."""
        self.reconciler.chat_ready.set()

    async def owed_settled(self) -> None:
        """Wait until the messages owed from before the start are announced (their ids recorded)."""
        await self.reconciler.owed_settled.wait()

    async def close(self) -> None:
        """Stop driving jobs (they go on in RunPod; the next start resumes them)."""
        await self.orchestrator.close()


def build_training(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    http: aiohttp.ClientSession,
    blobs: BlobStore,
    money: Money,
    *,
    runpod: Any | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Training | None:
    """Wire the training domain, or ``None`` when RunPod is not configured (no RUNPOD_API_KEY)."""
    if runpod is None:
        if settings.runpod_api_key is None or not settings.runpod_api_key.get_secret_value():
            return None
        from bot.clients.runpod import RunPodClient

        runpod = RunPodClient.from_settings(settings)
    ctx = TrainingContext(
        sessions=sessions,
        settings=settings,
        runpod=runpod,
        blobs=blobs,
        http=http,
        money=money,
        clock=clock,
    )
    orchestrator = Orchestrator(ctx)
    service = JobService(ctx, orchestrator, DatasetRunPlanner(sessions, blobs))
    return Training(
        ctx, orchestrator, service, Reconciler(orchestrator, confirm_within=service.confirm_within)
    )
