"""Drives one training job through its states (design §5), resumable from whatever the row says.

The database is the source of truth: :meth:`Orchestrator.drive` reads the job row, does the next
step for its state, and loops. Every transition is committed (row + ``JobEvent``) before the side
effect it announces, the pod is requested under the name ``loraops-<job id>`` which is committed
first, and the pod id is stored the moment RunPod returns it; so a crash at any point leaves a row
from which a fresh process (the reconciler) resumes the same job on the same pod.

The orchestrator tells the outside world what happens through :class:`JobListener` callbacks (the
Discord cog subscribes); it never imports discord.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from bot.background import TaskGroup
from bot.clients.runpod import (
    AmbiguousCreateError,
    NoCapacityError,
    PodNotReadableError,
    RunPodAuthError,
    RunPodBalanceError,
    RunPodError,
)
from bot.crashpoints import crashpoint
from bot.training.context import (
    TrainingContext,
    build_spec,
    prompt_lines,
)
from bot.training.money import usd
from bot.training.pods import (
    budget_stop_at,
    catalogue_price,
    pick_keeper,
    pod_price,
    pods_named,
    record_exit,
    rented_at,
    retire_extra_pod,
    stop_reason,
)
from bot.training.progress import ProgressView
from bot.training.states import record_event, transition
from bot.training.tokens import worker_token
from bot.training.worker_client import (
    IntegrityError,
    WorkerAuthError,
    WorkerClient,
    WorkerError,
    WorkerUnavailableError,
)
from storage.db import unit_of_work
from storage.models import TERMINAL_STATES, Checkpoint, Job, JobEvent, JobState, Sample
from worker.protocol import ENV_JOB_SPEC, ENV_WORKER_TOKEN, WORKER_PORT, FileInfo

log = logging.getLogger(__name__)

# Consecutive unexpected errors (bugs, database hiccups) before a job is failed rather than retried.
MAX_INTERNAL_ERRORS = 5
# Consecutive failed downloads of the same file before the job gives up on collecting it.
MAX_DOWNLOAD_FAILURES = 5
# The job event that records a deliberate "stop early, keep results" (the review decides it).
EARLY_STOP_EVENT = "early_stop"
# The seed of a sample prompt line (sd-scripts' "--d 42").
_SEED = re.compile(r"--d\s+(\d+)")


class _Retry(Exception):
    """Leave this step and come back after the poll interval."""


class Orchestrator:
    """Drives jobs; keeps at most one driving task per job in this process."""

    def __init__(self, ctx: TrainingContext, *, poll_interval_s: float | None = None) -> None:
        self.ctx = ctx
        self.poll_interval_s = (
            poll_interval_s if poll_interval_s is not None else ctx.settings.poll_interval_s
        )
        self._tasks = TaskGroup("training")
        self._driving: dict[int, asyncio.Task[JobState]] = {}
        self._last_progress: dict[int, float] = {}
        self._download_failures: dict[tuple[int, str], int] = {}
        self._pull_shown: set[int] = set()  # jobs whose progress said "pulling the image"
        self._closed = False
        self.terminated_pods: set[str] = set()  # pods this process terminated successfully

    # -- task management ----------------------------------------------------------------------------

    def is_driving(self, job_id: int) -> bool:
        task = self._driving.get(job_id)
        return task is not None and not task.done()

    def ensure_driving(self, job_id: int) -> asyncio.Task[JobState] | None:
        """Start a background driver for the job unless one is already running here."""
        if self._closed:
            return None
        task = self._driving.get(job_id)
        if task is not None and not task.done():
            return task
        task = self._tasks.spawn(self.drive(job_id), name=f"job-{job_id}")
        self._driving[job_id] = task
        return task

    async def wait(self, job_id: int) -> JobState | None:
        """Wait for this process's driver of the job to finish (tests, shutdown)."""
        task = self._driving.get(job_id)
        return None if task is None else await task

    async def close(self) -> None:
        """Stop driving (the jobs themselves continue: the next process resumes them)."""
        self._closed = True
        await self._tasks.close()
        self._driving.clear()

    # -- helpers ------------------------------------------------------------------------------------

    async def load(self, job_id: int) -> Job:
        async with self.ctx.sessions() as session:
            job = await session.get(Job, job_id)
        if job is None:
            raise LookupError(f"job {job_id} does not exist")
        return job

    def worker(self, job: Job) -> WorkerClient:
        if not job.pod_id:
            raise ValueError(f"job {job.id} has no pod yet")
        base = self.ctx.runpod.worker_base_url(job.pod_id)
        if inspect.isawaitable(base):  # tolerate an async implementation
            raise TypeError("worker_base_url must be synchronous")
        # Derived, never stored (bot.training.tokens). A job from before that has none: the worker
        # refuses the empty token, so the job fails and its pod is terminated.
        token = worker_token(self.ctx.settings, job.id, job.worker_token_nonce) or ""
        return WorkerClient(self.ctx.http, str(base), token)

    async def _sleep(self) -> None:
        await asyncio.sleep(self.poll_interval_s)

    async def _emit_progress(self, job: Job, *, force: bool = False) -> None:
        loop_now = asyncio.get_running_loop().time()
        last = self._last_progress.get(job.id)
        interval = self.ctx.settings.progress_edit_interval_s
        if not force and last is not None and loop_now - last < interval:
            return
        self._last_progress[job.id] = loop_now
        await self.ctx.listeners.progress(ProgressView.from_job(job))

    async def _event(self, job: Job, kind: str, payload: Mapping[str, Any]) -> None:
        await record_event(self.ctx.sessions, job.id, kind, payload, now=self.ctx.now())
        await self.ctx.listeners.event(job, kind, payload)

    async def _advance(self, job_id: int, new: JobState, payload: Mapping[str, Any] | None = None) -> bool:
        """Commit a forward transition and tell the listeners. False if the job moved elsewhere."""
        result = await transition(self.ctx.sessions, job_id, new, payload=payload, now=self.ctx.now())
        if result.changed:
            crashpoint(f"transition:{new.value}")  # announced after a restart if not now (owed.py)
            await self.ctx.listeners.state(result.job, result.old, result.new, result.payload)
            await self._emit_progress(result.job, force=True)
        return result.changed

    # -- stopping -----------------------------------------------------------------------------------

    async def stop(
        self,
        job_id: int,
        new: JobState,
        cause: str,
        *,
        payload: Mapping[str, Any] | None = None,
        log_tail: Sequence[str] | None = None,
    ) -> Job:
        """Fail, cancel or budget-stop a job: commit the transition, then terminate its pod.

        Idempotent: on an already finished job it only makes sure the pod is gone.
        """
        if new not in TERMINAL_STATES or new == JobState.SUCCEEDED:
            raise ValueError(f"stop() is for failed/cancelled/budget_stopped, not {new.value}")

        def _update(job: Job) -> None:
            job.error = cause
            if log_tail is not None:
                job.last_log = list(log_tail)[-50:]

        data = {"cause": cause, **(payload or {})}
        result = await transition(
            self.ctx.sessions, job_id, new, payload=data, update=_update, now=self.ctx.now()
        )
        if result.changed:
            crashpoint(f"stop:{new.value}")  # before the terminate call: the reconciler finishes both
        job = await self.finalize(job_id)
        if result.changed:
            log.info("job %s → %s: %s", job_id, new.value, cause)
            await self.ctx.listeners.state(job, result.old, result.new, result.payload)
            await self._emit_progress(job, force=True)
        return job

    async def stop_early(
        self, job_id: int, reason: str, *, payload: Mapping[str, Any] | None = None
    ) -> tuple[Job, bool]:
        """Stop training now and keep what was made: the job goes on to ``collecting`` and ends as
        ``succeeded`` with the checkpoints it has (an ``early_stop`` event says why).

        Committed first (the event and ``training → collecting``), then the worker is told to stop the
        trainer; collecting downloads what is there, acknowledges, and the pod is terminated. Returns
        the job and whether this call stopped it (False when it was not training any more: idempotent).
        """
        job = await self.load(job_id)
        if JobState(job.state) != JobState.TRAINING:
            return job, False
        async with unit_of_work(self.ctx.sessions) as session:
            existing = await session.scalar(
                select(JobEvent.id).where(JobEvent.job_id == job_id, JobEvent.kind == EARLY_STOP_EVENT)
            )
            if existing is None:  # the reviewer may have recorded its decision already
                session.add(
                    JobEvent(
                        job_id=job_id,
                        at=self.ctx.now(),
                        kind=EARLY_STOP_EVENT,
                        payload={"reason": reason, "step": job.step, **(payload or {})},
                    )
                )
        if not await self._advance(job_id, JobState.COLLECTING, {"early_stop": True, "reason": reason}):
            return await self.load(job_id), False
        log.info("job %s stops early at step %s: %s", job_id, job.step, reason)
        try:
            await self.worker(job).cancel()
        except (WorkerError, ValueError) as exc:
            # Collecting acknowledges the worker, which stops the trainer too; the pod ends either way.
            log.warning("job %s: could not tell the worker to stop early: %s", job_id, exc)
        self.ensure_driving(job_id)
        return await self.load(job_id), True

    async def _early_stopped(self, job_id: int) -> bool:
        async with self.ctx.sessions() as session:
            found = await session.scalar(
                select(JobEvent.id)
                .where(JobEvent.job_id == job_id, JobEvent.kind == EARLY_STOP_EVENT)
                .limit(1)
            )
        return found is not None

    async def finalize(self, job_id: int, *, gone_at: datetime | None = None) -> Job:
        """Make sure the pod of a finishing job is terminated, stamp when, and bring cost up to date.

        ``gone_at``: the pod is already gone by itself (it terminates itself once acknowledged); it
        stopped billing then, not when we noticed. If RunPod cannot be reached the stamp stays empty and
        the reconciler tries again later.
        """
        job = await self.load(job_id)
        if job.pod_id and job.pod_terminated_at is None and gone_at is not None:
            async with unit_of_work(self.ctx.sessions) as session:
                row = await session.get(Job, job_id)
                if row is not None and row.pod_terminated_at is None:
                    row.pod_terminated_at = max(gone_at, row.pod_created_at or gone_at)
                    session.add(
                        JobEvent(
                            job_id=job_id,
                            at=self.ctx.now(),
                            kind="pod_gone",
                            payload={"pod_id": job.pod_id, "since": gone_at.isoformat()},
                        )
                    )
        elif job.pod_id and job.pod_terminated_at is None:
            try:
                await self.ctx.runpod.terminate_pod(job.pod_id)
            except RunPodError as exc:
                log.warning("job %s: could not terminate pod %s yet: %s", job_id, job.pod_id, exc)
            else:
                self.terminated_pods.add(job.pod_id)
                now = self.ctx.now()
                async with unit_of_work(self.ctx.sessions) as session:
                    row = await session.get(Job, job_id)
                    if row is not None and row.pod_terminated_at is None:
                        row.pod_terminated_at = now
                        session.add(
                            JobEvent(
                                job_id=job_id, at=now, kind="pod_terminated", payload={"pod_id": job.pod_id}
                            )
                        )
        await self.ctx.money.accrue(job_id)
        return await self.load(job_id)

    # -- the loop -----------------------------------------------------------------------------------

    async def drive(self, job_id: int) -> JobState:
        """Run the job until it is terminal (or pending: it waits for a confirmation)."""
        errors = 0
        while True:
            job = await self.load(job_id)
            state = JobState(job.state)
            if state in TERMINAL_STATES:
                if job.pod_id and job.pod_terminated_at is None:
                    await self.finalize(job_id)
                return state
            if state == JobState.PENDING:
                return state
            try:
                if await self._guard(job):
                    continue
                await self._step(job, state)
                errors = 0
            except _Retry:
                await self._sleep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors += 1
                log.exception("job %s: error in %s (%d in a row)", job_id, state.value, errors)
                if errors >= MAX_INTERNAL_ERRORS:
                    await self.stop(job_id, JobState.FAILED, f"internal error in {state.value}: {exc}")
                    continue
                await self._sleep()

    async def _step(self, job: Job, state: JobState) -> None:
        if state == JobState.PROVISIONING:
            await self._provision(job)
        elif state == JobState.UPLOADING:
            await self._upload(job)
        elif state == JobState.TRAINING:
            await self._train(job)
        elif state == JobState.COLLECTING:
            await self._collect(job)

    async def _guard(self, job: Job) -> bool:
        """Money and deadline, checked on every turn once a pod exists. True if the job was stopped."""
        if job.deadline_at is not None and self.ctx.now() >= job.deadline_at:
            await self.stop(
                job.id,
                JobState.FAILED,
                f"deadline passed ({job.deadline_at:%Y-%m-%d %H:%M} UTC): the pod was stopped",
                payload={"reason": "deadline"},
            )
            return True
        if job.pod_id is None:
            return False
        await self.ctx.money.accrue(job.id)
        verdict = await self.ctx.money.budget_stop(
            job.id, lookahead_s=self.poll_interval_s + self.ctx.money.min_period.total_seconds()
        )
        if verdict is not None:
            await self.stop(
                job.id,
                JobState.BUDGET_STOPPED,
                verdict.message,
                payload={"scope": verdict.scope, "spent": str(verdict.spent), "budget": str(verdict.budget)},
            )
            return True
        return False

    # -- provisioning ---------------------------------------------------------------------------------

    async def _adopt_by_name(self, job: Job) -> bool:
        """Keep one pod of the job's name (adopting it), terminate and charge the others. False: none."""
        assert job.pod_name is not None
        pods = await pods_named(self.ctx, job.pod_name)
        if not pods:
            return False
        keeper = pick_keeper(pods, job.pod_id)
        for pod in pods:
            if pod is not keeper:
                await retire_extra_pod(self.ctx, job, pod, why="a second pod made by an ambiguous create")
        if keeper.id != job.pod_id:
            await self._store_pod(job, keeper, adopted=True)
        return True

    async def pod_stopped(self, job: Job, pod: Any) -> None:
        """The pod left RUNNING on its own: bill up to then, say why, end the job (pod terminated)."""
        await record_exit(self.ctx, job, pod)
        why = stop_reason(pod)
        await self.stop(
            job.id,
            why.state,
            why.cause,
            payload={"reason": f"pod_{why.reason}", "pod_status": str(pod.desired_status)},
        )

    async def _provision(self, job: Job) -> None:
        if job.pod_id is None:
            await self._create_pod(job)
            job = await self.load(job.id)
            if JobState(job.state) != JobState.PROVISIONING or job.pod_id is None:
                return
        pod = await self.ctx.runpod.get_pod(job.pod_id)
        if pod is None:
            await self.stop(
                job.id,
                JobState.FAILED,
                "the pod disappeared while starting",
                payload={"reason": "pod_vanished"},
            )
            return
        if getattr(pod, "stopped", False):
            await self.pod_stopped(job, pod)
            return
        price = Decimal(str(pod.cost_per_hr or 0))
        if price > 0 and price != job.price_per_hour:
            await self.ctx.money.accrue(job.id)  # at the old price up to now, then the real one
            async with unit_of_work(self.ctx.sessions) as session:
                row = await session.get(Job, job.id)
                assert row is not None
                row.price_per_hour = price
        if not pod.running:
            # Minutes of "runtime: null" while RunPod pulls the image: say so once, then as throttled.
            await self._emit_progress(job, force=job.id not in self._pull_shown)
            self._pull_shown.add(job.id)
            raise _Retry
        if not await self.worker(job).health():
            raise _Retry
        await self._advance(job.id, JobState.UPLOADING, {"pod_id": job.pod_id})

    async def _create_pod(self, job: Job) -> None:
        assert job.pod_name is not None
        # A pod may exist from before a crash (created, id not yet stored) or from a create that
        # answered with an error: adopt one, never rent twice.
        if await self._adopt_by_name(job):
            return
        options = [str(option["gpu_type_id"]) for option in job.estimate.get("options", [])]
        if not options and job.gpu_type:
            options = [job.gpu_type]
        base_spec = replace(build_spec(job), unattended_stop_s=self.ctx.settings.worker_unattended_stop_s)
        # Derived, never stored (bot.training.tokens).
        env = {ENV_WORKER_TOKEN: worker_token(self.ctx.settings, job.id, job.worker_token_nonce) or ""}
        hf_token = self.ctx.settings.hf_token
        if hf_token is not None and hf_token.get_secret_value():
            env["HF_TOKEN"] = hf_token.get_secret_value()
        pod_params: Mapping[str, Any] = job.params.get("pod") or {}
        tried: list[str] = []
        for index, gpu in enumerate(options):
            async with unit_of_work(self.ctx.sessions) as session:
                row = await session.get(Job, job.id)
                if row is None or JobState(row.state) != JobState.PROVISIONING:
                    return  # cancelled meanwhile: rent nothing
                row.gpu_type = gpu
                session.add(
                    JobEvent(
                        job_id=job.id,
                        at=self.ctx.now(),
                        kind="pod_requested",
                        payload={"gpu_type": gpu, "pod_name": job.pod_name},
                    )
                )
            # The pod stops itself when the budget is spent at this GPU's price, bot or no bot.
            price = await catalogue_price(self.ctx, job, gpu)
            budget_stop = budget_stop_at(job, price, self.ctx.now()).timestamp() if price else 0.0
            env[ENV_JOB_SPEC] = replace(base_spec, budget_stop_unix=budget_stop).to_env()
            try:
                pod = await self.ctx.runpod.create_pod(
                    name=job.pod_name,
                    gpu_type_id=gpu,
                    image=self.ctx.settings.runpod_worker_image,
                    env=env,
                    cloud_type=self.ctx.settings.runpod_cloud_type,
                    volume_in_gb=int(pod_params.get("volume_in_gb", 0)),
                    container_disk_in_gb=int(pod_params.get("container_disk_in_gb", 60)),
                    ports=f"{WORKER_PORT}/http",
                    network_volume_id=self.ctx.settings.runpod_network_volume_id,
                )
            except NoCapacityError as exc:
                tried.append(gpu)
                following = options[index + 1] if index + 1 < len(options) else None
                payload: dict[str, Any] = {"gpu_type": gpu, "next": following}
                if exc.disk:  # GPUs were free, but no host had the disk the pod asks for
                    payload["disk"] = True
                await self._event(job, "no_capacity", payload)
                continue
            except RunPodBalanceError as exc:
                # No GPU type will do: RunPod rents nothing until the account has credit.
                await self.stop(job.id, JobState.FAILED, str(exc), payload={"reason": "balance"})
                return
            except PodNotReadableError as exc:
                # Created, but RunPod did not show it back yet: keep its id now, read it later.
                await self._store_pod_id(job, exc.pod_id, gpu)
                return
            except RunPodAuthError:
                await self.stop(job.id, JobState.FAILED, "RunPod refused the API key")
                return
            except AmbiguousCreateError as exc:
                # RunPod may have made (and be billing) a pod despite the error: find it by name.
                await self._event(job, "create_ambiguous", {"gpu_type": gpu, "error": str(exc)})
                if await self._adopt_by_name(await self.load(job.id)):
                    return
                raise _Retry from exc  # nothing listed yet: the next turn looks again before renting
            except RunPodError as exc:
                if exc.transient:
                    raise  # ambiguous (maybe created): the next turn looks for the pod by name first
                tried.append(gpu)
                following = options[index + 1] if index + 1 < len(options) else None
                await self._event(
                    job, "create_refused", {"gpu_type": gpu, "next": following, "error": str(exc)}
                )
                continue
            await self._store_pod(job, pod, adopted=False)
            return
        names = ", ".join(tried) or "none"
        await self.stop(
            job.id,
            JobState.FAILED,
            f"no GPU available: none of the suitable types had capacity ({names})",
            payload={"reason": "no_capacity", "tried": tried},
        )

    async def _store_pod_id(self, job: Job, pod_id: str, gpu: str) -> None:
        # Price from the estimate until the pod can be read (``_provision`` then corrects it).
        quoted = next(
            (o.get("price_per_hour") for o in job.estimate.get("options", []) if o.get("gpu_type_id") == gpu),
            None,
        )
        now = self.ctx.now()
        async with unit_of_work(self.ctx.sessions) as session:
            row = await session.get(Job, job.id)
            assert row is not None
            row.pod_id = pod_id
            row.pod_created_at = now
            row.price_per_hour = Decimal(str(quoted)) if quoted is not None else None
            payload = {"pod_id": pod_id, "gpu_type": gpu, "read_back": False}
            session.add(JobEvent(job_id=job.id, at=now, kind="pod_created", payload=payload))
        await self.ctx.listeners.event(row, "pod_created", payload)

    async def _store_pod(self, job: Job, pod: Any, *, adopted: bool) -> None:
        now = self.ctx.now()
        created_at = now
        if adopted:
            # The pod existed since RunPod rented it, or about when we asked for it: bill from the
            # earlier of the two, never less.
            async with self.ctx.sessions() as session:
                requested = await session.scalar(
                    select(JobEvent.at)
                    .where(JobEvent.job_id == job.id, JobEvent.kind == "pod_requested")
                    .order_by(JobEvent.id.desc())
                    .limit(1)
                )
            created_at = min(t for t in (requested, rented_at(pod), now) if t is not None)
        price = await pod_price(self.ctx, job, pod)
        if price is None:
            # Neither RunPod nor its catalogue says what this pod costs: never run one as if free.
            await self._store_pod_id(job, pod.id, getattr(pod, "gpu_type_id", None) or job.gpu_type or "")
            await self.stop(
                job.id,
                JobState.FAILED,
                "RunPod reports no price for the pod and lists none for its GPU: not renting blind",
                payload={"reason": "no_price"},
            )
            return
        async with unit_of_work(self.ctx.sessions) as session:
            row = await session.get(Job, job.id)
            assert row is not None
            row.pod_id = pod.id
            row.price_per_hour = price
            row.pod_created_at = created_at
            gpu = getattr(pod, "gpu_type_id", None)
            if gpu:
                row.gpu_type = gpu
            kind = "pod_adopted" if adopted else "pod_created"
            payload = {"pod_id": pod.id, "gpu_type": row.gpu_type, "price_per_hour": str(price)}
            session.add(JobEvent(job_id=job.id, at=now, kind=kind, payload=payload))
        await self.ctx.listeners.event(row, kind, payload)
        if JobState(row.state) in TERMINAL_STATES:  # cancelled while RunPod was answering
            await self.finalize(job.id)

    # -- uploading -------------------------------------------------------------------------------------

    async def _upload(self, job: Job) -> None:
        worker = self.worker(job)
        status = await self._status(job, worker)
        if status is None:
            raise _Retry
        if status.state == "failed":
            await self._failed(job, status.error, status.log_tail)
            return
        if status.state == "starting":
            raise _Retry  # still fetching the base model; the dataset goes in once it waits for it
        if status.state == "waiting_dataset":
            await self._put_dataset(job, worker)
        await self._advance(job.id, JobState.TRAINING)

    async def _put_dataset(self, job: Job, worker: WorkerClient) -> None:
        sha = build_spec(job).dataset_sha256
        path = self.ctx.blobs.path_for(sha)
        try:
            stored = await worker.upload_dataset(path, sha)
        except IntegrityError as exc:
            await self.stop(job.id, JobState.FAILED, f"the dataset upload failed verification: {exc}")
            raise _Retry from exc
        await record_event(
            self.ctx.sessions,
            job.id,
            "dataset_uploaded",
            {"sha256": sha, "already_there": not stored},
            now=self.ctx.now(),
        )

    # -- training ------------------------------------------------------------------------------------

    async def _status(self, job: Job, worker: WorkerClient) -> Any | None:
        """The worker's status, or None when it is (for now) unreachable. Stops the job when the pod is
        gone or the worker refuses our token."""
        try:
            return await worker.status()
        except WorkerAuthError:
            await self.stop(job.id, JobState.FAILED, "the worker refused this job's token")
            return None
        except WorkerUnavailableError as exc:
            log.info("job %s: worker unreachable: %s", job.id, exc)
            pod = await self.ctx.runpod.get_pod(job.pod_id or "")
            if pod is None:
                await self._pod_vanished(job)
            elif getattr(pod, "stopped", False):
                await self.pod_stopped(job, pod)
            return None

    async def _pod_vanished(self, job: Job) -> None:
        await self.stop(
            job.id,
            JobState.FAILED,
            "the pod disappeared (terminated outside loraops?)",
            payload={"reason": "pod_vanished"},
        )

    async def _failed(self, job: Job, error: str | None, log_tail: Sequence[str]) -> None:
        cause = error or "the trainer failed without saying why"
        await self.stop(
            job.id, JobState.FAILED, cause, log_tail=log_tail, payload={"log_tail": list(log_tail)[-20:]}
        )

    async def _record_progress(self, job: Job, status: Any) -> Job:
        async with unit_of_work(self.ctx.sessions) as session:
            row = await session.get(Job, job.id)
            assert row is not None
            row.step = int(status.step)
            if status.total_steps:
                row.total_steps = int(status.total_steps)
            row.loss = status.loss
            row.rate = status.rate
            row.eta_s = status.eta_s
            if status.log_tail:
                row.last_log = list(status.log_tail)[-50:]
        return row

    async def _train(self, job: Job) -> None:
        worker = self.worker(job)
        status = await self._status(job, worker)
        if status is None:
            raise _Retry
        job = await self._record_progress(job, status)
        await self._collect_files(job, worker, status)
        if status.state == "finished":
            await self._advance(job.id, JobState.COLLECTING, {"step": status.step})
            return
        if status.state == "failed":
            await self._failed(job, status.error, status.log_tail)
            return
        if status.state == "cancelled":
            if await self._early_stopped(job.id):  # we stopped it on purpose: keep what was made
                await self._advance(job.id, JobState.COLLECTING, {"step": status.step, "early_stop": True})
                return
            await self.stop(job.id, JobState.CANCELLED, status.error or "the worker stopped training")
            return
        if status.state == "waiting_dataset":
            # The container restarted and lost the dataset: give it again.
            await self._put_dataset(job, worker)
        await self._emit_progress(job)
        raise _Retry

    # -- collecting ------------------------------------------------------------------------------------

    async def _acked(self, job_id: int) -> bool:
        return await self.acked_at(job_id) is not None

    async def acked_at(self, job_id: int) -> datetime | None:
        """When the bot told the worker it had everything (the pod terminates itself after that)."""
        async with self.ctx.sessions() as session:
            return await session.scalar(
                select(JobEvent.at)
                .where(JobEvent.job_id == job_id, JobEvent.kind == "acked")
                .order_by(JobEvent.id)
                .limit(1)
            )

    async def _collect(self, job: Job) -> None:
        if job.pod_terminated_at is None:
            acked = await self._acked(job.id)
            worker = self.worker(job)
            try:
                status = await worker.status()
            except WorkerAuthError:
                await self.stop(job.id, JobState.FAILED, "the worker refused this job's token")
                return
            except WorkerUnavailableError:
                pod = await self.ctx.runpod.get_pod(job.pod_id or "")
                stopped = pod is not None and getattr(pod, "stopped", False)
                if pod is not None and not stopped:
                    raise _Retry from None
                if stopped:
                    await record_exit(self.ctx, job, pod)  # billing ends there whatever comes next
                if not acked:
                    if stopped:
                        await self.pod_stopped(job, pod)
                    else:
                        await self._pod_vanished(job)
                    return
                if pod is None:
                    # Acknowledged, so everything is here, and the pod terminated itself: finished,
                    # and billed until it went (not until we noticed).
                    job = await self.finalize(job.id, gone_at=await self.acked_at(job.id))
                status = None
            if status is not None and status.state != "acknowledged":
                complete = await self._collect_files(job, worker, status, final=True)
                if not complete:
                    raise _Retry
                if not acked:
                    await record_event(self.ctx.sessions, job.id, "acked", {}, now=self.ctx.now())
                try:
                    await worker.ack()
                except WorkerUnavailableError:
                    pass  # it may already be exiting; terminating the pod settles it
                crashpoint("collect.acked")
            job = await self.finalize(job.id)
            if job.pod_terminated_at is None:
                raise _Retry  # RunPod unreachable: do not call it done while the meter may run
        async with self.ctx.sessions() as session:
            checkpoints = (await session.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id))).all()
        payload = {
            "cost_usd": str(job.cost_usd),
            "cost": usd(job.cost_usd),
            "steps": job.step,
            "checkpoints": len(checkpoints),
        }
        await self._advance(job.id, JobState.SUCCEEDED, payload)

    # -- files ------------------------------------------------------------------------------------------

    async def _collect_files(
        self, job: Job, worker: WorkerClient, status: Any, *, final: bool = False
    ) -> bool:
        """Download and record every sample and checkpoint not yet collected. True when all are in."""
        spec = job.params.get("spec") or {}
        prompts = prompt_lines(str(spec.get("prompts_txt", "")))
        async with self.ctx.sessions() as session:
            have_samples = {
                (sample.step, sample.prompt_index)
                for sample in (await session.scalars(select(Sample).where(Sample.job_id == job.id))).all()
            }
            have_ckpts = {
                ckpt.step: ckpt
                for ckpt in (
                    await session.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id))
                ).all()
            }
        complete = True
        new_samples: list[Sample] = []
        for info in status.samples:
            index = info.prompt_index if info.prompt_index is not None else 0
            if (info.step, index) in have_samples:
                continue
            if not await self._download(job, worker, "samples", info):
                complete = False
                continue
            prompt = prompts[index] if 0 <= index < len(prompts) else ""
            seed_match = _SEED.search(prompt)
            sample = Sample(
                job_id=job.id,
                step=info.step,
                prompt_index=index,
                prompt=prompt,
                seed=int(seed_match.group(1)) if seed_match else None,
                file_name=info.name,
                blob_sha256=info.sha256,
                created_at=self.ctx.now(),
            )
            async with unit_of_work(self.ctx.sessions) as session:
                session.add(sample)
            have_samples.add((info.step, index))
            new_samples.append(sample)
        if new_samples:
            await self.ctx.listeners.samples(job, new_samples)
        for info in status.checkpoints:
            existing = have_ckpts.get(info.step)
            if existing is not None and existing.collected:
                continue
            if existing is not None and existing.file_name != info.name:
                log.warning("job %s: second checkpoint %s at step %s ignored", job.id, info.name, info.step)
                continue
            if existing is None:
                async with unit_of_work(self.ctx.sessions) as session:
                    existing = Checkpoint(
                        job_id=job.id,
                        step=info.step,
                        file_name=info.name,
                        sha256=info.sha256,
                        size_bytes=info.size,
                        collected=False,
                        created_at=self.ctx.now(),
                    )
                    session.add(existing)
                have_ckpts[info.step] = existing
            if not await self._download(job, worker, "checkpoints", info):
                complete = False
                continue
            async with unit_of_work(self.ctx.sessions) as session:
                row = await session.get(Checkpoint, existing.id)
                assert row is not None
                row.collected = True
            existing.collected = True
        await self._announce_checkpoints(job, len(prompts), final=final or status.state != "training")
        return complete

    async def _download(self, job: Job, worker: WorkerClient, kind: str, info: FileInfo) -> bool:
        key = (job.id, f"{kind}/{info.name}")
        try:
            await worker.download(kind, info, self.ctx.blobs)  # type: ignore[arg-type]
        except (WorkerUnavailableError, IntegrityError) as exc:
            failures = self._download_failures.get(key, 0) + 1
            self._download_failures[key] = failures
            log.warning("job %s: download of %s failed (%d): %s", job.id, key[1], failures, exc)
            if failures >= MAX_DOWNLOAD_FAILURES:
                raise WorkerError(f"could not collect {key[1]}: {exc}") from exc
            return False
        self._download_failures.pop(key, None)
        return True

    async def _announce_checkpoints(self, job: Job, prompt_count: int, *, final: bool) -> None:
        """Tell listeners about collected checkpoints once their step's samples are in (or no more
        will come). Recorded as a ``checkpoint_announced`` event first, so each is announced once."""
        async with self.ctx.sessions() as session:
            announced = {
                int(event.payload.get("step", -1))
                for event in (
                    await session.scalars(
                        select(JobEvent).where(
                            JobEvent.job_id == job.id, JobEvent.kind == "checkpoint_announced"
                        )
                    )
                ).all()
            }
            checkpoints = (
                await session.scalars(
                    select(Checkpoint)
                    .where(Checkpoint.job_id == job.id, Checkpoint.collected.is_(True))
                    .order_by(Checkpoint.step)
                )
            ).all()
            samples = (await session.scalars(select(Sample).where(Sample.job_id == job.id))).all()
        latest_step = max((s.step for s in samples), default=-1)
        for checkpoint in checkpoints:
            if checkpoint.step in announced:
                continue
            at_step = sorted((s for s in samples if s.step == checkpoint.step), key=lambda s: s.prompt_index)
            # Samples come right after the save in sd-scripts: wait for them unless none will come.
            ready = final or len(at_step) >= prompt_count or latest_step > checkpoint.step
            if not ready:
                continue
            await record_event(
                self.ctx.sessions,
                job.id,
                "checkpoint_announced",
                {"step": checkpoint.step, "checkpoint_id": checkpoint.id},
                now=self.ctx.now(),
            )
            crashpoint("checkpoint.announced")  # the row is owed now (bot/training/owed.py posts it)
            await self.ctx.listeners.checkpoint(job, checkpoint, at_step)


def deadline_passed(job: Job, now: datetime, grace: timedelta = timedelta(0)) -> bool:
    return job.deadline_at is not None and now >= job.deadline_at + grace
