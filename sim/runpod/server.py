"""A faithful RunPod simulator: the GraphQL API as the ``runpod`` SDK speaks it, and the pod HTTP proxy.

Two aiohttp sites on 127.0.0.1:

- the **API** (``start()`` returns its base URL; point ``RUNPOD_API_BASE_URL`` at it): ``POST /graphql``
  with ``{"query": "..."}``, the key as ``Authorization: Bearer`` (SDK >= 1.7) or ``?api_key=`` (older
  SDKs). An unknown key gets HTTP 401 (the SDK raises ``AuthenticationError``); a read-only key used for
  a mutation, or a pod's own key used on anything but its pod, gets the GraphQL error ``Unauthorized``
  (``QueryError``). Queries are parsed, validated and executed with graphql-core over
  :mod:`sim.runpod.schema`, so syntax errors from the SDK's unescaped f-strings fail as they do for real
  (HTTP 400, ``errors``).
- the **proxy** (:attr:`RunPodSim.proxy_url_template`): ``/proxy/{pod_id}-{port}/...`` forwards to the
  pod's container, like ``https://{pod_id}-{port}.proxy.runpod.net/...``: 404 when the pod is gone or the
  port is not exposed as ``/http``, 502 while nothing listens, 524 when the container takes longer than
  ``proxy_timeout_s`` (100 s, Cloudflare's limit) to answer.

Pods are created with ``desiredStatus: RUNNING`` and ``runtime: null``; after ``boot_delay_s`` (three
minutes by default: the image pull) on the simulator's clock, which runs ``pull_warp`` times faster
meanwhile, the container starts (a local process group, see :class:`PodLauncher`) and ``runtime``
appears with ``uptimeInSeconds`` and ``ports``. Terminated pods vanish from ``myself.pods`` and ``pod``
returns ``null``. Billing (:mod:`sim.runpod.billing`): ``costPerHr`` and the container disk while the pod
is booting or running, its volume disk until it is terminated, network volumes always.

Failures RunPod is known to produce, on request: a create that makes its pod and still answers with an
error (:meth:`RunPodSim.fail_create_after_creating`), pods that leave RUNNING on their own
(:meth:`RunPodSim.exit_pod`: ``EXITED``/``DEAD``, ``runtime`` null for good), every pod stopped when the
account's ``balance`` runs out, ``costPerHr`` shown as 0 or null (``cost_per_hr_shown``), the disk-space
variant of "no instances" (``host_disk_gb``), a request body limit on the proxy
(``proxy_max_body_bytes``) and its 100 s answer limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import string
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLResolveInfo,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    execute_sync,
    parse,
    validate,
    value_from_ast_untyped,
)

from sim.gpu import install_driver
from sim.runpod.billing import Meter, RateMeter, network_volume_per_hour, storage_per_hour
from sim.runpod.catalog import DEFAULT_CATALOG, GpuSpec
from sim.runpod.clock import SimClock, js_date
from sim.runpod.process import ContainerProcess, PodLauncher, base_environment, free_port
from sim.runpod.schema import schema

NO_CAPACITY = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
# The variant when GPUs are free but no host has the disk asked for (wording as users report it; not
# verified against the live API).
NO_CAPACITY_DISK = (
    "There are no longer any instances available with enough disk space. Please refresh and try again."
)
# Cloudflare, in front of RunPod's proxy, refuses request bodies over 100 MB (413) on its standard plans.
PROXY_MAX_BODY_BYTES = 100_000_000
# An image of several GB takes minutes to pull (runtime stays null meanwhile); the bot must cope.
DEFAULT_BOOT_S = 180.0
DEFAULT_PULL_WARP = 150.0
GENERIC_ERROR = "Something went wrong. Please try again later or contact support."
INSUFFICIENT_BALANCE = "You do not have enough credits to deploy this pod."  # wording not verified
RESUME_NO_GPUS = "There are not enough free GPUs on the host machine to start this pod."
RESUME_DEAD = "This pod's host is no longer available; the pod cannot be resumed."  # wording not verified
UNAUTHORIZED = "Unauthorized"
POD_NOT_FOUND = "Pod not found."  # wording not verified against the live API
MAX_ENV_VARS = 50  # "Up to 50 user env vars per pod" (RunPod docs)
DATA_CENTERS = ("EU-RO-1", "EU-SE-1", "US-KS-2", "US-TX-3", "CA-MTL-1")

_ID_ALPHABET = string.ascii_lowercase + string.digits
_PROXY_TARGET = re.compile(r"([a-z0-9]+)-(\d{1,5})")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
}

PodPhase = Literal["booting", "running", "exited", "terminated"]


def _random_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _html(status: int, title: str) -> web.Response:
    body = f"<html><head><title>{status} {title}</title></head><body><h1>{status} {title}</h1></body></html>"
    return web.Response(status=status, text=body, content_type="text/html")


@dataclass
class GraphQLCall:
    """One request to ``/graphql`` as received, for tests to assert on."""

    query: str
    operation: str  # "query" | "mutation" | "" (unparsable)
    fields: list[str]  # root field names, e.g. ["podFindAndDeployOnDemand"]
    args: dict[str, dict[str, Any]]  # root field name -> its arguments as plain Python values
    auth: str  # "account" | "read-only" | "pod:<id>" | "invalid" | "missing"
    status: int = 0
    errors: list[str] = field(default_factory=list)
    at: float = 0.0


@dataclass
class ProxyCall:
    """One request through the pod proxy."""

    pod_id: str
    port: int
    method: str
    path: str
    status: int = 0


@dataclass
class Injected:
    """A failure the next matching GraphQL request gets instead of its answer."""

    operation: str  # root field name, or "*" for any
    message: str | None
    http_status: int
    html: bool
    after: bool = False  # the request is carried out first: only its answer is lost


@dataclass
class SimPod:
    """A pod as the simulator keeps it (terminated pods stay here for tests; the API hides them)."""

    id: str
    name: str
    image_name: str
    gpu: GpuSpec
    gpu_count: int
    cloud: Literal["SECURE", "COMMUNITY"]
    cost_per_hr: Decimal
    env: dict[str, str]
    ports: str
    container_disk_in_gb: int
    volume_in_gb: int
    volume_mount_path: str | None
    docker_args: str | None
    data_center_id: str
    network_volume_id: str | None
    machine_id: str
    pod_host_id: str
    api_key: str  # the pod-scoped key RunPod puts in RUNPOD_API_KEY
    workdir: Path
    log_path: Path
    created_at: float
    input: dict[str, Any]  # the deploy input exactly as received
    desired_status: str = "RUNNING"
    phase: PodPhase = "booting"
    boot_at: float | None = None  # None: never boots (image cannot be pulled)
    started_at: float | None = None
    last_status_change: str = ""
    meter: RateMeter = field(default_factory=RateMeter)
    generation: int = 0
    container: ContainerProcess | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    terminated_by: str | None = None  # "account" | "pod" once terminated
    exit_reason: str | None = None  # why it left RUNNING on its own (exit_pod)

    @property
    def http_ports(self) -> list[int]:
        return [int(p.split("/")[0]) for p in self.ports.split(",") if p.strip().endswith("/http")]

    @property
    def tcp_ports(self) -> list[int]:
        return [int(p.split("/")[0]) for p in self.ports.split(",") if p.strip().endswith("/tcp")]

    def usage(self, now: float) -> Meter:
        """What RunPod has billed for this pod so far (GPU time and its disks)."""
        return self.meter.read(now)

    def cost(self, now: float) -> Decimal:
        return self.usage(now).total

    def bill(self, now: float) -> None:
        """Settle the meter and bill from ``now`` at the rates of the pod's current phase."""
        up = self.phase in ("booting", "running")
        compute = self.cost_per_hr if up else Decimal(0)
        storage = Decimal(0)
        if self.phase != "terminated":
            storage = storage_per_hour(
                container_gb=self.container_disk_in_gb, volume_gb=self.volume_in_gb, running=up
            )
        self.meter.set_rates(now, compute=compute, storage=storage)

    def log_text(self) -> str:
        """What the container printed (all starts)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass(frozen=True)
class _Auth:
    kind: Literal["account", "read-only", "pod"]
    pod_id: str | None = None


class RunPodSim:
    """The RunPod simulator. See the module docstring for what it does and how faithfully."""

    def __init__(
        self,
        *,
        api_key: str = "sim-runpod-key",
        read_only_keys: Iterable[str] = (),
        catalog: Iterable[GpuSpec] = DEFAULT_CATALOG,
        capacity: int = 8,
        boot_delay_s: float = DEFAULT_BOOT_S,
        pull_warp: float = DEFAULT_PULL_WARP,
        clock: SimClock | None = None,
        launcher: PodLauncher | None = None,
        proxy_timeout_s: float = 100.0,
        proxy_max_body_bytes: int | None = PROXY_MAX_BODY_BYTES,
        data_dir: Path | None = None,
        tick_interval_s: float = 0.02,
        stop_delay_s: float = 0.3,
        balance: Decimal | None = None,
        host_disk_gb: int | None = None,
    ) -> None:
        self.api_keys = {api_key}
        self.read_only_keys = set(read_only_keys)
        self.gpus: dict[str, GpuSpec] = {gpu.id: gpu for gpu in catalog}
        # GPUs of each type free to rent (across data centres); tests set 0 for "no capacity".
        self.capacity: dict[str, int] = dict.fromkeys(self.gpus, capacity)
        self.boot_delay_s = boot_delay_s
        self.clock = clock or SimClock()
        # While any pod pulls its image the clock runs ``pull_warp`` times faster (never a frozen
        # clock): minutes of pulling, as RunPod takes, pass in about a second. Whoever shares the clock
        # (the bot, through the harness) sees the same minutes, so its ledger still equals the meter.
        self.pull_warp = pull_warp
        self._base_scale = self.clock.scale
        self.launcher = launcher
        self.proxy_timeout_s = proxy_timeout_s
        self.proxy_max_body_bytes = proxy_max_body_bytes
        self.stuck_images: set[str] = set()  # pods with these images never get past "pulling"
        # The account's credit: when the meter reaches it RunPod stops every pod; None is unlimited.
        self.balance = balance
        # The most container + volume disk any host with a free GPU can give a pod (None: no limit).
        self.host_disk_gb = host_disk_gb
        # How the API reports ``costPerHr``: "actual", or "zero"/"null" as it has been seen to (the
        # pod still bills its real price).
        self.cost_per_hr_shown: Literal["actual", "zero", "null"] = "actual"
        self.network_volumes: dict[str, dict[str, Any]] = {}
        self.user_id = "user_" + _random_id(20)
        self.calls: list[GraphQLCall] = []
        self.proxy_calls: list[ProxyCall] = []
        self.pods: dict[str, SimPod] = {}  # every pod ever created, terminated ones included
        self._injected: deque[Injected] = deque()
        self._tick_interval_s = tick_interval_s
        # Real seconds between a stop/terminate answer and the container's SIGTERM: RunPod takes a
        # while too, and a pod terminating itself must get the API's answer before it dies.
        self.stop_delay_s = stop_delay_s
        self._own_data_dir = data_dir is None
        self._data_dir = data_dir
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._containers: dict[str, asyncio.Task[None]] = {}
        self.base_url = ""
        self.proxy_base_url = ""

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> str:
        """Start both sites; returns the API base URL (the SDK posts to ``{base}/graphql``)."""
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="runpod-sim-"))
        api = web.Application(client_max_size=1024 * 1024)
        api.router.add_post("/graphql", self._handle_graphql)
        proxy = web.Application(client_max_size=1024**4)
        proxy.router.add_route("*", "/proxy/{target}", self._handle_proxy)
        proxy.router.add_route("*", "/proxy/{target}/{tail:.*}", self._handle_proxy)
        self.base_url = await self._serve(api)
        self.proxy_base_url = await self._serve(proxy)
        self._session = aiohttp.ClientSession(
            auto_decompress=False,  # pass bytes through untouched, like a proxy
            timeout=aiohttp.ClientTimeout(total=None, sock_read=self.proxy_timeout_s),
        )
        self._ticker = asyncio.create_task(self._tick_forever())
        return self.base_url

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        """Stop every container, then both sites; removes the data dir if the simulator made it."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for pod in self.pods.values():
            if pod.phase in ("booting", "running"):
                pod.phase = "exited"
                pod.generation += 1
        await asyncio.gather(*(self._stop_container(pod) for pod in self.pods.values()))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._own_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    async def __aenter__(self) -> RunPodSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ test controls

    @property
    def proxy_url_template(self) -> str:
        """The ``runpod_proxy_url_template`` setting that reaches port 8000 of a pod through this proxy."""
        return f"{self.proxy_base_url}/proxy/{{pod_id}}-8000"

    def proxy_url(self, pod_id: str, port: int = 8000) -> str:
        return f"{self.proxy_base_url}/proxy/{pod_id}-{port}"

    def set_capacity(self, gpu_type_id: str, free_gpus: int) -> None:
        """How many more GPUs of this type can be rented now (0 → "no longer any instances available")."""
        if gpu_type_id not in self.gpus:
            raise KeyError(gpu_type_id)
        self.capacity[gpu_type_id] = free_gpus + self._used(gpu_type_id)

    def fail_next(
        self,
        operation: str = "*",
        message: str | None = None,
        *,
        http_status: int = 200,
        html: bool = False,
        after: bool = False,
    ) -> None:
        """Make the next request for ``operation`` (a root field name, or ``"*"``) fail.

        With ``message`` it gets ``{"errors":[{"message":...}]}`` (the SDK raises ``QueryError``); with
        ``html=True`` an HTML error page (the SDK leaks ``JSONDecodeError``); with neither, a JSON body
        without ``data`` (the SDK then fails with ``KeyError``), as RunPod's edge does on 429/5xx.

        ``after=True`` carries the request out first and loses only its answer: a create answered with
        "Something went wrong" (or a 5xx) that still made a billing pod, as public reports describe.
        """
        self._injected.append(Injected(operation, message, http_status, html, after))

    def fail_create_after_creating(
        self, message: str | None = GENERIC_ERROR, *, http_status: int = 500, html: bool = False
    ) -> None:
        """The next pod create makes its pod and then answers with an error (see :meth:`fail_next`)."""
        self.fail_next("podFindAndDeployOnDemand", message, http_status=http_status, html=html, after=True)

    def exit_pod(self, pod_id: str, *, dead: bool = False, reason: str = "host fault") -> None:
        """The pod leaves RUNNING on its own: ``EXITED`` (host restart, a stop from the console) or
        ``DEAD`` (the host is gone). ``runtime`` becomes null for good, GPU and container-disk billing
        stop, a volume disk goes on billing at the stopped rate until the pod is terminated."""
        pod = self.pods[pod_id]
        if pod.phase not in ("booting", "running"):
            return
        now = self.clock.time()
        pod.phase = "exited"
        pod.generation += 1
        pod.desired_status = "DEAD" if dead else "EXITED"
        pod.started_at = None
        pod.exit_reason = reason
        pod.bill(now)
        verb = "Pod died" if dead else "Exited"
        pod.last_status_change = f"{verb} ({reason}): {js_date(self.clock.now())}"
        self._schedule_stop(pod)

    def meter(self) -> Meter:
        """Everything RunPod has billed the account so far: pods (GPU and disks) and network volumes."""
        now = self.clock.time()
        total = sum((pod.usage(now) for pod in self.pods.values()), Meter())
        for volume in self.network_volumes.values():
            hours = Decimal(str(max(0.0, now - float(volume["_created_at"])))) / 3600
            total += Meter(storage=network_volume_per_hour(int(volume["size"])) * hours)
        return total

    def _check_balance(self) -> None:
        # RunPod stops every pod of an account whose balance runs out (volumes survive, stopped).
        if self.balance is None or self.meter().total < self.balance:
            return
        for pod in list(self.pods.values()):
            if pod.phase in ("booting", "running"):
                self.exit_pod(pod.id, reason="insufficient balance")

    def add_network_volume(self, name: str, size_gb: int, data_center_id: str) -> str:
        volume_id = _random_id(10)
        self.network_volumes[volume_id] = {
            "id": volume_id,
            "name": name,
            "size": size_gb,
            "dataCenterId": data_center_id,
            "_created_at": self.clock.time(),  # billed from now on, always (not in the API's answer)
        }
        return volume_id

    def live_pods(self) -> list[SimPod]:
        return [pod for pod in self.pods.values() if pod.phase != "terminated"]

    def total_cost(self) -> Decimal:
        return self.meter().total

    def calls_for(self, root_field: str) -> list[GraphQLCall]:
        return [call for call in self.calls if root_field in call.fields]

    async def tick(self) -> None:
        """Apply due transitions now (boots after :meth:`SimClock.advance`); the ticker does it anyway."""
        await self._tick()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait (real time) until ``predicate()`` holds, ticking meanwhile; TimeoutError otherwise."""
        async with asyncio.timeout(within):
            while not predicate():
                await self._tick()
                await asyncio.sleep(0.01)

    async def wait_listening(self, pod_id: str, within: float = 30.0) -> None:
        """Wait until the pod's container accepts TCP connections on its port."""

        async def probe() -> bool:
            pod = self.pods.get(pod_id)
            if pod is None or pod.container is None or pod.container.proc.returncode is not None:
                return False
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", pod.container.port)
            except OSError:
                return False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True

        async with asyncio.timeout(within):
            while not await probe():
                await self._tick()
                await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ GraphQL endpoint

    def _authenticate(self, request: web.Request) -> tuple[_Auth | None, str]:
        header = request.headers.get("Authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else header.strip()
        key = key or request.query.get("api_key", "")
        if not key:
            return None, "missing"
        if key in self.api_keys:
            return _Auth("account"), "account"
        if key in self.read_only_keys:
            return _Auth("read-only"), "read-only"
        for pod in self.pods.values():
            if pod.api_key == key and pod.phase != "terminated":
                return _Auth("pod", pod.id), f"pod:{pod.id}"
        return None, "invalid"

    async def _handle_graphql(self, request: web.Request) -> web.StreamResponse:
        await self._tick()
        auth, label = self._authenticate(request)
        raw = await request.read()
        call = GraphQLCall(query="", operation="", fields=[], args={}, auth=label, at=self.clock.time())
        self.calls.append(call)
        if auth is None:
            # RunPod answers an unknown key with a bare 401; the SDK turns it into AuthenticationError.
            return self._finish(call, 401, {"errors": [{"message": UNAUTHORIZED}]})
        try:
            payload = json.loads(raw)
            query = payload["query"]
            if not isinstance(query, str):
                raise TypeError("query must be a string")
        except (ValueError, KeyError, TypeError):
            return self._finish(call, 400, {"errors": [{"message": "POST body missing, invalid or empty."}]})
        call.query = query
        try:
            document = parse(query)
        except GraphQLSyntaxError as error:
            return self._finish(call, 400, {"errors": [_formatted(error, "GRAPHQL_PARSE_FAILED")]})
        operation, roots = _root_fields(document)
        call.operation = operation
        call.fields = [node.name.value for node in roots]
        problems = validate(schema(), document)
        if problems:
            return self._finish(
                call, 400, {"errors": [_formatted(error, "GRAPHQL_VALIDATION_FAILED") for error in problems]}
            )
        call.args = {node.name.value: _plain_args(node) for node in roots}
        injected = self._take_injected(call.fields)
        if injected is not None and injected.after:
            resolvers = _Resolvers(self, auth)
            execute_sync(schema(), document, root_value=resolvers)
            await resolvers.run_effects()
        if injected is not None:
            if injected.html:
                call.status = injected.http_status
                return _html(injected.http_status, "Bad Gateway")
            if injected.message is None:
                return self._finish(call, injected.http_status, {"message": "Too many requests"})
            error = {"message": injected.message, "path": call.fields[:1]}
            return self._finish(call, injected.http_status, {"errors": [error], "data": None})
        resolvers = _Resolvers(self, auth)
        result = execute_sync(schema(), document, root_value=resolvers)
        await resolvers.run_effects()
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body = {"errors": [error.formatted for error in result.errors], "data": result.data}
        return self._finish(call, 200, body)

    def _finish(self, call: GraphQLCall, status: int, body: dict[str, Any]) -> web.Response:
        call.status = status
        call.errors = [str(error.get("message")) for error in body.get("errors", [])]
        return web.json_response(body, status=status)

    def _take_injected(self, fields: list[str]) -> Injected | None:
        for injected in list(self._injected):
            if injected.operation == "*" or injected.operation in fields:
                self._injected.remove(injected)
                return injected
        return None

    # ------------------------------------------------------------------ state

    def _used(self, gpu_type_id: str, exclude: str | None = None) -> int:
        return sum(
            pod.gpu_count
            for pod in self.pods.values()
            if pod.gpu.id == gpu_type_id and pod.phase in ("booting", "running") and pod.id != exclude
        )

    def free_gpus(self, gpu_type_id: str) -> int:
        return max(0, self.capacity.get(gpu_type_id, 0) - self._used(gpu_type_id))

    def _gpu_dict(self, gpu: GpuSpec) -> dict[str, Any]:
        def lowest_price(_info: GraphQLResolveInfo, input: dict[str, Any] | None = None) -> dict[str, Any]:
            options = input or {}
            count = int(options.get("gpuCount") or 1)
            secure_only = options.get("secureCloud")
            clouds: list[tuple[Decimal | None, Decimal | None]] = []
            if secure_only is not False:
                clouds.append((gpu.secure_price, gpu.secure_spot_price))
            if secure_only is not True:
                clouds.append((gpu.community_price, gpu.community_spot_price))
            on_demand = [price for price, _ in clouds if price is not None]
            spot = [price for _, price in clouds if price is not None]
            free = self.free_gpus(gpu.id)
            return {
                "gpuName": gpu.display_name,
                "gpuTypeId": gpu.id,
                "minimumBidPrice": float(min(spot)) if spot else None,
                "uninterruptablePrice": float(min(on_demand)) if on_demand else None,
                "minMemory": gpu.ram_gb_per_gpu * count,
                "minVcpu": gpu.vcpus_per_gpu * count,
                "stockStatus": _stock_status(free, count) if on_demand else None,
                "availableGpuCounts": [n for n in range(1, gpu.max_gpu_count + 1) if n <= free],
            }

        return {
            "id": gpu.id,
            "displayName": gpu.display_name,
            "manufacturer": gpu.manufacturer,
            "memoryInGb": gpu.memory_gb,
            "cudaCores": gpu.cuda_cores,
            "maxGpuCount": gpu.max_gpu_count,
            "secureCloud": gpu.secure_cloud,
            "communityCloud": gpu.community_cloud,
            "securePrice": _float(gpu.secure_price),
            "communityPrice": _float(gpu.community_price),
            "oneMonthPrice": None,
            "threeMonthPrice": None,
            "oneWeekPrice": None,
            "communitySpotPrice": _float(gpu.community_spot_price),
            "secureSpotPrice": _float(gpu.secure_spot_price),
            "lowestPrice": lowest_price,
        }

    def _pod_dict(self, pod: SimPod) -> dict[str, Any]:
        now = self.clock.time()
        uptime = int(now - pod.started_at) if pod.phase == "running" and pod.started_at is not None else 0
        runtime = None
        if pod.phase == "running":
            ports = [
                {
                    "ip": "100.65.0." + str(sum(map(ord, pod.id)) % 250 + 2),
                    "isIpPublic": False,
                    "privatePort": port,
                    "publicPort": 60000 + (port + sum(map(ord, pod.id))) % 5000,
                    "type": "http",
                }
                for port in pod.http_ports
            ] + [
                {
                    "ip": "194.68.245." + str(sum(map(ord, pod.id)) % 250 + 2),
                    "isIpPublic": True,
                    "privatePort": port,
                    "publicPort": 22000 + (port + sum(map(ord, pod.id))) % 20000,
                    "type": "tcp",
                }
                for port in pod.tcp_ports
            ]
            runtime = {
                "uptimeInSeconds": uptime,
                "ports": ports,
                "gpus": [
                    {"id": f"GPU-{pod.machine_id}-{i}", "gpuUtilPercent": 0, "memoryUtilPercent": 0}
                    for i in range(pod.gpu_count)
                ],
                "container": {"cpuPercent": 0, "memoryPercent": 0},
            }
        return {
            "id": pod.id,
            "name": pod.name,
            "imageName": pod.image_name,
            "env": [f"{key}={value}" for key, value in pod.env.items()],
            "machineId": pod.machine_id,
            "machine": {
                "podHostId": pod.pod_host_id,
                "gpuDisplayName": pod.gpu.display_name,
                "gpuTypeId": pod.gpu.id,
                "location": pod.data_center_id.split("-")[0],
                "dataCenterId": pod.data_center_id,
            },
            "containerDiskInGb": pod.container_disk_in_gb,
            "costPerHr": self._shown_cost(pod),
            "adjustedCostPerHr": self._shown_cost(pod),
            "desiredStatus": pod.desired_status,
            "dockerArgs": pod.docker_args,
            "dockerId": None,
            "gpuCount": pod.gpu_count,
            "lastStatusChange": pod.last_status_change,
            "memoryInGb": pod.gpu.ram_gb_per_gpu * pod.gpu_count,
            "podType": "RESERVED",
            "port": None,
            "ports": pod.ports,
            "uptimeSeconds": uptime,
            "vcpuCount": pod.gpu.vcpus_per_gpu * pod.gpu_count,
            "volumeInGb": pod.volume_in_gb,
            "volumeMountPath": pod.volume_mount_path,
            "runtime": runtime,
        }

    def _shown_cost(self, pod: SimPod) -> float | None:
        if self.cost_per_hr_shown == "null":
            return None
        return 0.0 if self.cost_per_hr_shown == "zero" else float(pod.cost_per_hr)

    def _deploy(self, data: dict[str, Any]) -> SimPod:
        """Validate a ``podFindAndDeployOnDemand`` input and rent the GPU (or raise GraphQLError)."""
        gpu_type_id = data.get("gpuTypeId")
        gpu = self.gpus.get(gpu_type_id or "")
        if gpu is None:
            raise GraphQLError(NO_CAPACITY)
        if not data.get("imageName") and not data.get("templateId"):
            raise GraphQLError("Either imageName or templateId is required.")
        env_items = data.get("env") or []
        if len(env_items) > MAX_ENV_VARS:
            raise GraphQLError(f"A pod can have at most {MAX_ENV_VARS} environment variables.")
        count = int(data.get("gpuCount") or 1)
        if count < 1 or count > gpu.max_gpu_count:
            raise GraphQLError(NO_CAPACITY)
        data_center = data.get("dataCenterId")
        volume_id = data.get("networkVolumeId")
        cloud_type = data.get("cloudType") or "ALL"
        if volume_id is not None:
            volume = self.network_volumes.get(volume_id)
            if volume is None:
                raise GraphQLError("Network volume not found.")
            if cloud_type == "COMMUNITY":
                raise GraphQLError("Network volumes are only available on Secure Cloud.")
            if data_center is not None and data_center != volume["dataCenterId"]:
                raise GraphQLError(NO_CAPACITY)
            data_center = volume["dataCenterId"]
            cloud_type = "SECURE"
        choices: list[Literal["SECURE", "COMMUNITY"]]
        if cloud_type == "ALL":
            choices = ["COMMUNITY", "SECURE"]  # the cheaper cloud first
        else:
            choices = ["SECURE"] if cloud_type == "SECURE" else ["COMMUNITY"]
        offered: list[Literal["SECURE", "COMMUNITY"]] = [
            c for c in choices if (gpu.secure_price if c == "SECURE" else gpu.community_price)
        ]
        if not offered or self.free_gpus(gpu.id) < count:
            raise GraphQLError(NO_CAPACITY)
        disk = int(data.get("containerDiskInGb") or 0) + int(data.get("volumeInGb") or 0)
        if self.host_disk_gb is not None and disk > self.host_disk_gb:
            raise GraphQLError(NO_CAPACITY_DISK)
        cloud = offered[0]
        price = gpu.secure_price if cloud == "SECURE" else gpu.community_price
        assert price is not None
        # RunPod wants at least an hour of the pod's price in credit before it deploys one.
        if self.balance is not None and self.balance - self.meter().total < price * count:
            raise GraphQLError(INSUFFICIENT_BALANCE)
        now = self.clock.time()
        pod_id = _random_id(14)
        while pod_id in self.pods:
            pod_id = _random_id(14)
        assert self._data_dir is not None
        root = self._data_dir / "pods" / pod_id
        workdir = root / "workspace"
        workdir.mkdir(parents=True)
        image = str(data.get("imageName") or "")
        ports = str(data.get("ports") or "")
        pod = SimPod(
            id=pod_id,
            name=str(data.get("name") or ""),
            image_name=image,
            gpu=gpu,
            gpu_count=count,
            cloud=cloud,
            cost_per_hr=price * count,
            env={str(item["key"]): str(item.get("value") or "") for item in env_items},
            ports=ports,
            container_disk_in_gb=int(data.get("containerDiskInGb") or 0),
            volume_in_gb=int(data.get("volumeInGb") or 0),
            volume_mount_path=data.get("volumeMountPath"),
            docker_args=data.get("dockerArgs"),
            data_center_id=data_center or secrets.choice(DATA_CENTERS),
            network_volume_id=volume_id,
            machine_id=_random_id(12),
            pod_host_id=f"{pod_id}-{secrets.randbelow(10**8):08d}",
            api_key="rpa_" + secrets.token_hex(20).upper(),
            workdir=workdir,
            log_path=root / "container.log",
            created_at=now,
            input=dict(data),
            last_status_change=f"Rented by User: {js_date(self.clock.now())}",
        )
        pod.boot_at = None if image in self.stuck_images else now + self.boot_delay_s
        pod.bill(now)
        self.pods[pod_id] = pod
        return pod

    def _visible_pod(self, pod_id: str) -> SimPod | None:
        pod = self.pods.get(pod_id)
        return None if pod is None or pod.phase == "terminated" else pod

    # ------------------------------------------------------------------ containers

    async def _tick_forever(self) -> None:
        while True:
            await self._tick()
            await asyncio.sleep(self._tick_interval_s)

    async def _tick(self) -> None:
        self._check_balance()
        if self._base_scale > 0 and self.pull_warp > 1:
            pulling = any(pod.phase == "booting" and pod.boot_at is not None for pod in self.pods.values())
            self.clock.set_scale(self._base_scale * (self.pull_warp if pulling else 1.0))
        now = self.clock.time()
        for pod in list(self.pods.values()):
            if pod.phase == "booting" and pod.boot_at is not None and now >= pod.boot_at:
                pod.phase = "running"
                pod.started_at = now
                pod.generation += 1
                if self.launcher is not None:
                    task = asyncio.create_task(self._run_container(pod, pod.generation, self.launcher))
                    self._containers[pod.id] = task
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    def _container_env(
        self, pod: SimPod, port: int, launcher: PodLauncher, replacements: Mapping[str, str]
    ) -> dict[str, str]:
        env = base_environment()
        env.update(pod.env)
        # What RunPod itself sets inside every pod (docs: pods/templates/environment-variables).
        env.update(
            {
                "RUNPOD_POD_ID": pod.id,
                "RUNPOD_API_KEY": pod.api_key,
                "RUNPOD_POD_HOSTNAME": pod.pod_host_id,
                "RUNPOD_DC_ID": pod.data_center_id,
                "RUNPOD_GPU_COUNT": str(pod.gpu_count),
                "RUNPOD_CPU_COUNT": str(pod.gpu.vcpus_per_gpu * pod.gpu_count),
                "PUBLIC_KEY": "",
                "CUDA_VERSION": "12.4.1",
            }
        )
        if pod.network_volume_id:
            env["RUNPOD_VOLUME_ID"] = pod.network_volume_id
        # The NVIDIA runtime's part: the pod's GPUs behind nvidia-smi (sim/gpu.py).
        env.update(
            install_driver(
                pod.workdir.parent / "driver", [pod.gpu.id] * pod.gpu_count, seed=pod.id, path=env.get("PATH")
            )
        )
        # Simulator only: the API to call from inside the pod, and where to listen instead of 8000.
        env.update({"RUNPOD_API_BASE_URL": self.base_url, "PORT": str(port), "HOST": "127.0.0.1"})
        env.update({key: _fill(value, replacements) for key, value in launcher.extra_env.items()})
        return env

    async def _run_container(self, pod: SimPod, generation: int, launcher: PodLauncher) -> None:
        while pod.generation == generation and pod.phase == "running":
            port = free_port()
            replacements = {"{port}": str(port), "{host}": "127.0.0.1", "{pod_id}": pod.id}
            replacements["{workdir}"] = str(pod.workdir)
            command = [_fill(part, replacements) for part in launcher.command]
            try:
                container = await ContainerProcess.start(
                    command,
                    env=self._container_env(pod, port, launcher, replacements),
                    cwd=pod.workdir,
                    log_path=pod.log_path,
                    port=port,
                )
            except OSError as error:
                with pod.log_path.open("a") as log:
                    log.write(f"container failed to start: {error}\n")
                pod.exit_codes.append(127)
            else:
                pod.container = container
                pod.starts += 1
                if pod.generation != generation or pod.phase != "running":
                    await container.stop(launcher.stop_grace_s)  # stopped while it was starting
                    return
                code = await container.wait()
                container.kill_leftovers()
                pod.exit_codes.append(code)
            if pod.generation != generation or pod.phase != "running" or not launcher.restart_on_exit:
                return
            await asyncio.sleep(launcher.restart_delay_s)

    async def _stop_container(self, pod: SimPod) -> None:
        task = self._containers.pop(pod.id, None)
        container = pod.container
        grace = self.launcher.stop_grace_s if self.launcher is not None else 5.0
        if container is not None:
            await container.stop(grace)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _schedule_stop(self, pod: SimPod) -> None:
        async def later() -> None:
            await asyncio.sleep(self.stop_delay_s)
            await self._stop_container(pod)

        task = asyncio.create_task(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ proxy

    async def _handle_proxy(self, request: web.Request) -> web.StreamResponse:
        match = _PROXY_TARGET.fullmatch(request.match_info["target"])
        if match is None:
            return _html(404, "Not Found")
        pod_id, port = match.group(1), int(match.group(2))
        tail = request.match_info.get("tail", "")
        call = ProxyCall(pod_id, port, request.method, "/" + tail)
        self.proxy_calls.append(call)
        response = await self._forward(request, pod_id, port, tail)
        call.status = response.status
        return response

    async def _forward(self, request: web.Request, pod_id: str, port: int, tail: str) -> web.StreamResponse:
        await self._tick()
        pod = self._visible_pod(pod_id)
        if pod is None or port not in pod.http_ports:
            return _html(404, "Not Found")
        container = pod.container
        if pod.phase != "running" or container is None or container.proc.returncode is not None:
            return _html(502, "Bad Gateway")
        length = request.content_length
        if self.proxy_max_body_bytes is not None and (length or 0) > self.proxy_max_body_bytes:
            return _html(413, "Request Entity Too Large")
        url = f"http://127.0.0.1:{container.port}/{tail}"
        if request.query_string:
            url += "?" + request.query_string
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["X-Forwarded-Proto"] = "https"
        headers["X-Forwarded-Host"] = f"{pod_id}-{port}.proxy.runpod.net"
        data = request.content if request.body_exists else None
        assert self._session is not None
        try:
            async with asyncio.timeout(self.proxy_timeout_s):
                upstream = await self._session.request(
                    request.method, url, headers=headers, data=data, allow_redirects=False
                )
        except TimeoutError:
            return _html(524, "A timeout occurred")
        except aiohttp.ClientError:
            return _html(502, "Bad Gateway")
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    response.headers.add(key, value)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_chunked(64 * 1024):
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError):
                # The container went away mid-body: cut the connection, as the real edge does.
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response
        finally:
            upstream.release()


class _Resolvers:
    """Root resolvers for one request (graphql-core calls ``root.<field>(info, **args)``).

    Effects that need the event loop (stopping a container) are collected and run after execution.
    """

    def __init__(self, sim: RunPodSim, auth: _Auth) -> None:
        self.sim = sim
        self.auth = auth
        self._effects: list[SimPod] = []

    async def run_effects(self) -> None:
        for pod in self._effects:
            self.sim._schedule_stop(pod)

    def _require_account(self, *, write: bool) -> None:
        if self.auth.kind == "pod" or (write and self.auth.kind == "read-only"):
            raise GraphQLError(UNAUTHORIZED)

    def _own_pod(self, pod_id: str, *, write: bool) -> SimPod:
        if self.auth.kind == "pod" and self.auth.pod_id != pod_id:
            raise GraphQLError(UNAUTHORIZED)
        if write and self.auth.kind == "read-only":
            raise GraphQLError(UNAUTHORIZED)
        pod = self.sim._visible_pod(pod_id)
        if pod is None:
            raise GraphQLError(POD_NOT_FOUND)
        return pod

    # Query
    def gpuTypes(
        self, _info: GraphQLResolveInfo, input: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        self._require_account(write=False)
        wanted: set[str] | None = None
        if input:
            wanted = set(input.get("ids") or [])
            if input.get("id") is not None:
                wanted.add(input["id"])
        gpus = self.sim.gpus.values()
        return [self.sim._gpu_dict(gpu) for gpu in gpus if wanted is None or gpu.id in wanted]

    def pod(self, _info: GraphQLResolveInfo, input: dict[str, Any] | None = None) -> dict[str, Any] | None:
        pod_id = str((input or {}).get("podId") or "")
        if self.auth.kind == "pod" and self.auth.pod_id != pod_id:
            raise GraphQLError(UNAUTHORIZED)
        pod = self.sim._visible_pod(pod_id)
        return None if pod is None else self.sim._pod_dict(pod)

    def myself(self, _info: GraphQLResolveInfo) -> dict[str, Any]:
        self._require_account(write=False)
        return {
            "id": self.sim.user_id,
            "pubKey": "",
            "pods": [self.sim._pod_dict(pod) for pod in self.sim.live_pods()],
            "networkVolumes": [
                {k: v for k, v in volume.items() if not k.startswith("_")}
                for volume in self.sim.network_volumes.values()
            ],
        }

    # Mutation
    def podFindAndDeployOnDemand(
        self, _info: GraphQLResolveInfo, input: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self._require_account(write=True)
        return self.sim._pod_dict(self.sim._deploy(dict(input or {})))

    def podStop(self, _info: GraphQLResolveInfo, input: Mapping[str, Any]) -> dict[str, Any]:
        pod = self._own_pod(str(input["podId"]), write=True)
        if pod.phase in ("booting", "running"):
            now = self.sim.clock.time()
            pod.phase = "exited"
            pod.generation += 1
            pod.desired_status = "EXITED"
            pod.started_at = None
            pod.bill(now)
            pod.last_status_change = f"Stopped by User: {js_date(self.sim.clock.now())}"
            self._effects.append(pod)
        return self.sim._pod_dict(pod)

    def podResume(self, _info: GraphQLResolveInfo, input: Mapping[str, Any]) -> dict[str, Any]:
        pod = self._own_pod(str(input["podId"]), write=True)
        if pod.desired_status == "DEAD":
            raise GraphQLError(RESUME_DEAD)
        if pod.phase == "exited":
            count = int(input.get("gpuCount") or pod.gpu_count)
            if self.sim.free_gpus(pod.gpu.id) < count:
                raise GraphQLError(RESUME_NO_GPUS)
            now = self.sim.clock.time()
            pod.gpu_count = count
            pod.phase = "booting"
            pod.desired_status = "RUNNING"
            pod.boot_at = None if pod.image_name in self.sim.stuck_images else now + self.sim.boot_delay_s
            pod.bill(now)
            pod.last_status_change = f"Rented by User: {js_date(self.sim.clock.now())}"
        return self.sim._pod_dict(pod)

    def podTerminate(self, _info: GraphQLResolveInfo, input: Mapping[str, Any]) -> None:
        pod = self._own_pod(str(input["podId"]), write=True)
        pod.phase = "terminated"
        pod.generation += 1
        pod.desired_status = "TERMINATED"
        pod.bill(self.sim.clock.time())
        pod.terminated_by = "pod" if self.auth.kind == "pod" else "account"
        self._effects.append(pod)


def _stock_status(free: int, count: int) -> str | None:
    if free < count:
        return None
    if free < 3 * count:
        return "Low"
    if free < 8 * count:
        return "Medium"
    return "High"


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _fill(template: str, replacements: Mapping[str, str]) -> str:
    # Plain replacement, not str.format: commands may contain other braces (python -c "{...}").
    for placeholder, value in replacements.items():
        template = template.replace(placeholder, value)
    return template


def _formatted(error: GraphQLError, code: str) -> dict[str, Any]:
    formatted = dict(error.formatted)
    formatted["extensions"] = {"code": code}
    return formatted


def _root_fields(document: DocumentNode) -> tuple[str, list[FieldNode]]:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            fields = [node for node in definition.selection_set.selections if isinstance(node, FieldNode)]
            return definition.operation.value, fields
    return "", []


def _plain_args(node: FieldNode) -> dict[str, Any]:
    return {arg.name.value: value_from_ast_untyped(arg.value) for arg in node.arguments or ()}
