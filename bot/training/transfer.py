"""Transfer between the bot and the worker in the pod (design §5, §6): reaching the worker, uploading the
dataset snapshot, and downloading artifacts (samples, checkpoints) into the blob store.

Each file is verified against the sha256 the worker states (:mod:`bot.training.worker_client`); a
download that keeps failing gives up after :data:`MAX_DOWNLOAD_FAILURES` tries, which fails the job
rather than leave it collecting forever. The ``uploading`` state is stepped here.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from bot.training.context import build_spec
from bot.training.states import record_event
from bot.training.stepping import RetryLater, Stepper
from bot.training.tokens import worker_token
from bot.training.worker_client import (
    IntegrityError,
    WorkerAuthError,
    WorkerClient,
    WorkerError,
    WorkerUnavailableError,
)
from storage.models import Job, JobState
from worker.protocol import FileInfo

log = logging.getLogger(__name__)

# Consecutive failed downloads of the same file before the job gives up on collecting it.
MAX_DOWNLOAD_FAILURES = 5


class Transfer:
    """Talks to a job's worker: its status, the dataset upload, artifact downloads."""

    def __init__(self, steps: Stepper) -> None:
        self.steps = steps
        self.ctx = steps.ctx
        self._download_failures: dict[tuple[int, str], int] = {}

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

    async def status(self, job: Job, worker: WorkerClient) -> Any | None:
        """The worker's status, or None when it is (for now) unreachable. Stops the job when the pod is
        gone or the worker refuses our token."""
        try:
            return await worker.status()
        except WorkerAuthError:
            await self.steps.stop(job.id, JobState.FAILED, "the worker refused this job's token")
            return None
        except WorkerUnavailableError as exc:
            log.info("job %s: worker unreachable: %s", job.id, exc)
            pod = await self.ctx.runpod.get_pod(job.pod_id or "")
            if pod is None:
                await self.steps.pod_vanished(job)
            elif getattr(pod, "stopped", False):
                await self.steps.pod_stopped(job, pod)
            return None

    # -- uploading ------------------------------------------------------------------------------------

    async def upload(self, job: Job) -> None:
        """The ``uploading`` step: once the worker waits for the dataset, give it; then train."""
        worker = self.worker(job)
        status = await self.status(job, worker)
        if status is None:
            raise RetryLater
        if status.state == "failed":
            await self.steps.failed(job, status.error, status.log_tail)
            return
        if status.state == "starting":
            raise RetryLater  # still fetching the base model; the dataset goes in once it waits for it
        if status.state == "waiting_dataset":
            await self.put_dataset(job, worker)
        await self.steps.advance(job.id, JobState.TRAINING)

    async def put_dataset(self, job: Job, worker: WorkerClient) -> None:
        sha = build_spec(job).dataset_sha256
        path = self.ctx.blobs.path_for(sha)
        try:
            stored = await worker.upload_dataset(path, sha)
        except IntegrityError as exc:
            await self.steps.stop(job.id, JobState.FAILED, f"the dataset upload failed verification: {exc}")
            raise RetryLater from exc
        await record_event(
            self.ctx.sessions,
            job.id,
            "dataset_uploaded",
            {"sha256": sha, "already_there": not stored},
            now=self.ctx.now(),
        )

    # -- downloading ----------------------------------------------------------------------------------

    async def download(self, job: Job, worker: WorkerClient, kind: str, info: FileInfo) -> bool:
        """Fetch one sample or checkpoint into the blob store. False: try again on a later turn."""
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
