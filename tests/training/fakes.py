"""In-memory stand-ins for RunPod and the in-pod worker, for the orchestrator's fast tests.

``FakeRunPod`` keeps pods in a dict and hands every pod a ``FakeWorker`` served by one aiohttp test
server (``/pod/{pod_id}/...``). The worker follows the real protocol (bearer token, ``PUT /dataset``
with sha256, Range downloads with ``X-Content-SHA256``) and advances deterministically: each
``GET /status`` while training moves ``steps_per_poll`` steps, so tests never depend on timing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from bot.clients.runpod import GpuType, NoCapacityError, PodNotReadableError, RunPodError
from worker.protocol import ENV_JOB_SPEC, ENV_WORKER_TOKEN, PROTOCOL_VERSION, SHA256_HEADER, FileInfo, JobSpec


def gpu_type(
    id: str, display_name: str, memory_gb: int, secure: Decimal | None, community: Decimal | None
) -> GpuType:
    return GpuType(
        id=id,
        display_name=display_name,
        memory_gb=memory_gb,
        secure_price=secure,
        community_price=community,
        stock_status="High",
    )


GPUS = [
    gpu_type("NVIDIA RTX A5000", "RTX A5000", 24, Decimal("0.27"), Decimal("0.16")),
    gpu_type("NVIDIA GeForce RTX 4090", "RTX 4090", 24, Decimal("0.59"), Decimal("0.34")),
    gpu_type("NVIDIA A40", "A40", 48, Decimal("0.44"), None),
    gpu_type("NVIDIA RTX A4000", "RTX A4000", 16, Decimal("0.17"), Decimal("0.10")),
    gpu_type("NVIDIA H100 80GB HBM3", "H100 SXM", 80, Decimal("3.99"), Decimal("2.69")),
]


@dataclass
class FakePod:
    id: str
    name: str
    gpu_type_id: str
    cost_per_hr: Decimal
    env: dict[str, str]
    desired_status: str = "RUNNING"
    uptime_s: int = 0
    polls_to_boot: int = 1

    @property
    def running(self) -> bool:
        return self.polls_to_boot <= 0


def _bytes_for(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@dataclass
class FakeWorker:
    """One pod's worker. ``script`` knobs: total steps, checkpoint cadence, failure at a step."""

    token: str
    spec: JobSpec
    steps_per_poll: int = 2
    save_every: int = 4
    prompts: int = 2
    nan_at: int | None = None
    starting_polls: int = 1
    state: str = "starting"
    step: int = 0
    dataset_sha: str | None = None
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    samples: list[FileInfo] = field(default_factory=list)
    checkpoints: list[FileInfo] = field(default_factory=list)
    acked: bool = False
    cancelled: bool = False
    on_step: Callable[[FakeWorker], None] | None = None

    def _add(self, kind: str, name: str, step: int, size: int, prompt_index: int | None = None) -> None:
        data = _bytes_for(f"{self.spec.job_id}/{name}", size)
        self.files[(kind, name)] = data
        info = FileInfo(
            name=name,
            step=step,
            size=size,
            sha256=hashlib.sha256(data).hexdigest(),
            prompt_index=prompt_index,
        )
        (self.samples if kind == "samples" else self.checkpoints).append(info)

    def advance(self) -> None:
        if self.state == "starting":
            self.starting_polls -= 1
            if self.starting_polls <= 0:
                self.state = "waiting_dataset"
            return
        if self.state != "training":
            return
        total = self.spec.total_steps
        for _ in range(self.steps_per_poll):
            self.step += 1
            if self.nan_at is not None and self.step >= self.nan_at:
                self.state = "failed"
                return
            if self.step % self.save_every == 0 or self.step == total:
                name = f"lora-{self.step:06d}.safetensors" if self.step < total else "lora.safetensors"
                self._add("checkpoints", name, self.step, 150_000)
                for index in range(self.prompts):
                    self._add("samples", f"lora_{self.step:06d}_{index:02d}.png", self.step, 3_000, index)
            if self.on_step is not None:
                self.on_step(self)
            if self.step >= total:
                self.state = "finished"
                return

    def status_json(self) -> dict[str, Any]:
        total = self.spec.total_steps
        error = f"loss is NaN at step {self.step}" if self.state == "failed" else None
        return {
            "state": self.state,
            "step": self.step,
            "total_steps": total,
            "loss": 0.1 - self.step * 0.001 if self.state != "failed" else float("nan"),
            "rate": 1.5,
            "eta_s": (total - self.step) / 1.5,
            "epoch": 1,
            "samples": [info.__dict__ for info in self.samples],
            "checkpoints": [info.__dict__ for info in self.checkpoints],
            "log_tail": [f"steps: {self.step}/{total}", *(["avr_loss=nan"] if error else [])],
            "error": error,
            "protocol": PROTOCOL_VERSION,
        }


class FakeWorkerFarm:
    """One aiohttp server for every fake pod's worker: ``/pod/{pod_id}/...``."""

    def __init__(self) -> None:
        self.workers: dict[str, FakeWorker] = {}
        self.requests: list[tuple[str, str, str]] = []  # (pod id, method, path)
        self.unauthorized: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/pod/{pod_id}/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        pod_id, tail = request.match_info["pod_id"], request.match_info["tail"]
        self.requests.append((pod_id, request.method, "/" + tail))
        worker = self.workers.get(pod_id)
        if worker is None:
            return web.Response(status=502, text="no such pod")
        if tail == "health":
            return web.json_response({"ok": True, "protocol": PROTOCOL_VERSION})
        if request.headers.get("Authorization") != f"Bearer {worker.token}":
            self.unauthorized.append(tail)
            return web.json_response({"error": "unauthorized"}, status=401)
        if tail == "status" and request.method == "GET":
            worker.advance()
            return web.json_response(worker.status_json())
        if tail == "dataset" and request.method == "PUT":
            body = await request.read()
            if worker.dataset_sha is not None:
                return web.json_response({"error": "already received"}, status=409)
            digest = hashlib.sha256(body).hexdigest()
            if digest != request.headers.get(SHA256_HEADER) or digest != worker.spec.dataset_sha256:
                return web.json_response({"error": "sha256 mismatch"}, status=400)
            worker.dataset_sha = digest
            worker.state = "training"
            return web.json_response({"ok": True}, status=201)
        if tail.startswith("files/") and request.method == "GET":
            _, kind, name = tail.split("/", 2)
            data = worker.files.get((kind, name))
            if data is None:
                return web.json_response({"error": "not found"}, status=404)
            headers = {SHA256_HEADER: hashlib.sha256(data).hexdigest(), "Accept-Ranges": "bytes"}
            range_header = request.headers.get("Range")
            if range_header:
                start_s, end_s = range_header.removeprefix("bytes=").split("-")
                start, end = int(start_s), min(int(end_s), len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return web.Response(status=206, body=data[start : end + 1], headers=headers)
            return web.Response(body=data, headers=headers)
        if tail == "cancel" and request.method == "POST":
            worker.cancelled = True
            worker.state = "cancelled"
            return web.json_response({"ok": True})
        if tail == "ack" and request.method == "POST":
            worker.acked = True
            worker.state = "acknowledged"
            return web.json_response({"ok": True})
        return web.json_response({"error": "no route"}, status=404)


class FakeRunPod:
    """Pods in a dict; ``no_capacity`` holds GPU ids that answer "no instances available"."""

    def __init__(self, farm: FakeWorkerFarm, gpus: list[GpuType] | None = None) -> None:
        self.farm = farm
        self.gpus = list(gpus or GPUS)
        self.pods: dict[str, FakePod] = {}
        self.no_capacity: set[str] = set()
        self.calls: list[tuple[str, Any]] = []
        self.terminated: list[str] = []
        self.worker_options: dict[str, Any] = {}
        self.fail_list_pods = False
        self.unreadable_next = False  # create the pod, then fail to read it back
        self.price_override: Decimal | None = None
        self._next = 0

    def _price(self, gpu_id: str) -> Decimal:
        gpu = next(g for g in self.gpus if g.id == gpu_id)
        assert gpu.secure_price is not None
        return gpu.secure_price

    async def list_gpu_types(self) -> list[GpuType]:
        self.calls.append(("list_gpu_types", None))
        return list(self.gpus)

    async def create_pod(self, **kwargs: Any) -> FakePod:
        self.calls.append(("create_pod", kwargs))
        gpu = kwargs["gpu_type_id"]
        if gpu in self.no_capacity:
            raise NoCapacityError(f"no capacity for {gpu}")
        self._next += 1
        pod = FakePod(
            id=f"pod{self._next:04d}",
            name=kwargs["name"],
            gpu_type_id=gpu,
            cost_per_hr=self.price_override or self._price(gpu),
            env=dict(kwargs["env"]),
        )
        self.pods[pod.id] = pod
        spec = JobSpec.from_env(pod.env[ENV_JOB_SPEC])
        self.farm.workers[pod.id] = FakeWorker(
            token=pod.env[ENV_WORKER_TOKEN], spec=spec, **self.worker_options
        )
        if self.unreadable_next:
            self.unreadable_next = False
            raise PodNotReadableError(pod.id)
        return pod

    def add_stray_pod(self, name: str) -> FakePod:
        self._next += 1
        pod = FakePod(
            id=f"pod{self._next:04d}",
            name=name,
            gpu_type_id=self.gpus[0].id,
            cost_per_hr=Decimal("0.27"),
            env={},
        )
        self.pods[pod.id] = pod
        return pod

    async def get_pod(self, pod_id: str) -> FakePod | None:
        self.calls.append(("get_pod", pod_id))
        pod = self.pods.get(pod_id)
        if pod is not None and pod.polls_to_boot > 0:
            pod.polls_to_boot -= 1
        return pod

    async def list_pods(self) -> list[FakePod]:
        self.calls.append(("list_pods", None))
        if self.fail_list_pods:
            raise RunPodError("RunPod is down")
        return list(self.pods.values())

    async def terminate_pod(self, pod_id: str) -> None:
        self.calls.append(("terminate_pod", pod_id))
        if self.pods.pop(pod_id, None) is not None:
            self.terminated.append(pod_id)
        self.farm.workers.pop(pod_id, None)

    def worker_base_url(self, pod_id: str) -> str:
        return f"{self.farm.url}/pod/{pod_id}"

    def created(self) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == "create_pod"]
