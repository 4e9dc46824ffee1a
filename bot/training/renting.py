"""Pod renting (design §5, §7): the ``provisioning`` step, from asking RunPod for a pod to its worker
answering, and the adoption of ghost pods.

Money is real, so a pod is never rented twice nor run as if free:

- the ``pod_requested`` event and the GPU tried are committed before each create call, under the pod
  name ``loraops-<job id>`` committed at start, and the pod id is stored the moment RunPod returns it;
- before renting, and after a create that answered with an error (it may have made a pod anyway),
  pods of the job's name are looked up: one is adopted (billed from when it was rented or asked for,
  the earlier), any others are terminated and charged to the job (:func:`bot.training.pods.retire_extra_pod`);
- GPU types are tried in the estimate's order while they have no capacity; a refused key, an empty
  balance or no price at all end the job instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from bot.clients.runpod import (
    AmbiguousCreateError,
    NoCapacityError,
    PodNotReadableError,
    RunPodAuthError,
    RunPodBalanceError,
    RunPodError,
)
from bot.training.context import build_spec
from bot.training.pods import (
    budget_stop_at,
    catalogue_price,
    pick_keeper,
    pod_price,
    pods_named,
    rented_at,
    retire_extra_pod,
)
from bot.training.stepping import RetryLater, Stepper
from bot.training.tokens import worker_token
from bot.training.transfer import Transfer
from storage import jobs
from storage.db import unit_of_work
from storage.models import TERMINAL_STATES, Job, JobState
from worker.protocol import ENV_JOB_SPEC, ENV_WORKER_TOKEN, WORKER_PORT

log = logging.getLogger(__name__)


class PodRenter:
    """Rents (or adopts) the job's one pod and waits for its worker."""

    def __init__(self, steps: Stepper, transfer: Transfer) -> None:
        self.steps = steps
        self.transfer = transfer
        self.ctx = steps.ctx
        self._pull_shown: set[int] = set()  # jobs whose progress said "pulling the image"

    async def provision(self, job: Job) -> None:
        """The ``provisioning`` step: rent or adopt a pod, then wait until its worker answers."""
        if job.pod_id is None:
            await self.create_pod(job)
            job = await self.steps.load(job.id)
            if JobState(job.state) != JobState.PROVISIONING or job.pod_id is None:
                return
        pod = await self.ctx.runpod.get_pod(job.pod_id)
        if pod is None:
            await self.steps.stop(
                job.id,
                JobState.FAILED,
                "the pod disappeared while starting",
                payload={"reason": "pod_vanished"},
            )
            return
        if getattr(pod, "stopped", False):
            await self.steps.pod_stopped(job, pod)
            return
        price = Decimal(str(pod.cost_per_hr or 0))
        if price > 0 and price != job.price_per_hour:
            await self.ctx.money.accrue(job.id)  # at the old price up to now, then the real one
            async with unit_of_work(self.ctx.sessions) as session:
                row = await jobs.job(session, job.id)
                assert row is not None
                row.price_per_hour = price
        if not pod.running:
            # Minutes of "runtime: null" while RunPod pulls the image: say so once, then as throttled.
            await self.steps.emit_progress(job, force=job.id not in self._pull_shown)
            self._pull_shown.add(job.id)
            raise RetryLater
        if not await self.transfer.worker(job).health():
            raise RetryLater
        await self.steps.advance(job.id, JobState.UPLOADING, {"pod_id": job.pod_id})

    async def adopt_by_name(self, job: Job) -> bool:
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

    async def create_pod(self, job: Job) -> None:
        assert job.pod_name is not None
        # A pod may exist from before a crash (created, id not yet stored) or from a create that
        # answered with an error: adopt one, never rent twice.
        if await self.adopt_by_name(job):
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
                row = await jobs.job(session, job.id)
                if row is None or JobState(row.state) != JobState.PROVISIONING:
                    return  # cancelled meanwhile: rent nothing
                row.gpu_type = gpu
                jobs.add_event(
                    session,
                    job.id,
                    "pod_requested",
                    {"gpu_type": gpu, "pod_name": job.pod_name},
                    at=self.ctx.now(),
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
                await self.steps.event(job, "no_capacity", payload)
                continue
            except RunPodBalanceError as exc:
                # No GPU type will do: RunPod rents nothing until the account has credit.
                await self.steps.stop(job.id, JobState.FAILED, str(exc), payload={"reason": "balance"})
                return
            except PodNotReadableError as exc:
                # Created, but RunPod did not show it back yet: keep its id now, read it later.
                await self._store_pod_id(job, exc.pod_id, gpu)
                return
            except RunPodAuthError:
                await self.steps.stop(job.id, JobState.FAILED, "RunPod refused the API key")
                return
            except AmbiguousCreateError as exc:
                # RunPod may have made (and be billing) a pod despite the error: find it by name.
                await self.steps.event(job, "create_ambiguous", {"gpu_type": gpu, "error": str(exc)})
                if await self.adopt_by_name(await self.steps.load(job.id)):
                    return
                raise RetryLater from exc  # nothing listed yet: the next turn looks again before renting
            except RunPodError as exc:
                if exc.transient:
                    raise  # ambiguous (maybe created): the next turn looks for the pod by name first
                tried.append(gpu)
                following = options[index + 1] if index + 1 < len(options) else None
                await self.steps.event(
                    job, "create_refused", {"gpu_type": gpu, "next": following, "error": str(exc)}
                )
                continue
            await self._store_pod(job, pod, adopted=False)
            return
        names = ", ".join(tried) or "none"
        await self.steps.stop(
            job.id,
            JobState.FAILED,
            f"no GPU available: none of the suitable types had capacity ({names})",
            payload={"reason": "no_capacity", "tried": tried},
        )

    async def _store_pod_id(self, job: Job, pod_id: str, gpu: str) -> None:
        # Price from the estimate until the pod can be read (``provision`` then corrects it).
        quoted = next(
            (o.get("price_per_hour") for o in job.estimate.get("options", []) if o.get("gpu_type_id") == gpu),
            None,
        )
        now = self.ctx.now()
        async with unit_of_work(self.ctx.sessions) as session:
            row = await jobs.job(session, job.id)
            assert row is not None
            row.pod_id = pod_id
            row.pod_created_at = now
            row.price_per_hour = Decimal(str(quoted)) if quoted is not None else None
            payload = {"pod_id": pod_id, "gpu_type": gpu, "read_back": False}
            jobs.add_event(session, job.id, "pod_created", payload, at=now)
        await self.ctx.listeners.event(row, "pod_created", payload)

    async def _store_pod(self, job: Job, pod: Any, *, adopted: bool) -> None:
        now = self.ctx.now()
        created_at = now
        if adopted:
            # The pod existed since RunPod rented it, or about when we asked for it: bill from the
            # earlier of the two, never less.
            async with self.ctx.sessions() as session:
                requested = await jobs.event_at(session, job.id, "pod_requested", last=True)
            created_at = min(t for t in (requested, rented_at(pod), now) if t is not None)
        price = await pod_price(self.ctx, job, pod)
        if price is None:
            # Neither RunPod nor its catalogue says what this pod costs: never run one as if free.
            await self._store_pod_id(job, pod.id, getattr(pod, "gpu_type_id", None) or job.gpu_type or "")
            await self.steps.stop(
                job.id,
                JobState.FAILED,
                "RunPod reports no price for the pod and lists none for its GPU: not renting blind",
                payload={"reason": "no_price"},
            )
            return
        async with unit_of_work(self.ctx.sessions) as session:
            row = await jobs.job(session, job.id)
            assert row is not None
            row.pod_id = pod.id
            row.price_per_hour = price
            row.pod_created_at = created_at
            gpu = getattr(pod, "gpu_type_id", None)
            if gpu:
                row.gpu_type = gpu
            kind = "pod_adopted" if adopted else "pod_created"
            payload = {"pod_id": pod.id, "gpu_type": row.gpu_type, "price_per_hour": str(price)}
            jobs.add_event(session, job.id, kind, payload, at=now)
        await self.ctx.listeners.event(row, kind, payload)
        if JobState(row.state) in TERMINAL_STATES:  # cancelled while RunPod was answering
            await self.steps.finalize(job.id)
