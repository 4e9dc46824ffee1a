"""RunPod: an async, typed facade over the ``runpod`` SDK (GraphQL), for renting one pod per job.

The SDK is synchronous (``requests``, 30 s timeout, no retries), so every call runs in a thread. It also
reads two pieces of process-global state on every call: the ``RUNPOD_API_BASE_URL`` environment
variable and the module attribute ``runpod.api_key`` (``create_pod`` and ``terminate_pod`` take no key
argument). Each call therefore holds one process-wide lock while it sets both, makes the request and
restores what was there before: calls are serialised (one at a time per process, which suits polling
every 10–30 s per job), two clients with different keys or base URLs never see each other's, and
nothing lingers in the environment for child processes to inherit. The key is never logged.

Queries that need more than the SDK's own selections (``costPerHr`` right after deploy,
``machine.gpuTypeId``, ``runtime.uptimeInSeconds``, prices and stock for every GPU at once) go through the
SDK's transport, ``runpod.api.graphql.run_graphql_query``, with every string literal JSON-quoted.
``create_pod`` uses the SDK's ``create_pod``, which pastes name, image and env values inside ``"..."``
unescaped; values that would break or inject into that query are refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import SecretStr

from bot.errors import ServiceUnavailableError
from bot.retry import RUNPOD_READ_BACK, RetryLater

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
CloudType = Literal["SECURE", "COMMUNITY", "ALL"]

_BASE_URL_ENV = "RUNPOD_API_BASE_URL"
_SDK_LOCK = threading.Lock()
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# RunPod pod ids are short lower-case alphanumerics; anything else is refused before it reaches a query.
_POD_ID = re.compile(r"[a-z0-9]{1,64}")
_MAX_ENV_VARS = 50
_NO_CAPACITY_MARKERS = ("no longer any instances available", "not enough free gpus")
_DISK_MARKER = "disk space"
_BALANCE_MARKERS = ("enough credits", "insufficient balance", "insufficient funds")
_NOT_FOUND_MARKERS = ("not found", "does not exist", "no pod")

_POD_FIELDS = """
    id name imageName desiredStatus costPerHr gpuCount env lastStatusChange uptimeSeconds ports
    containerDiskInGb volumeInGb
    machine { gpuTypeId gpuDisplayName }
    runtime { uptimeInSeconds ports { privatePort publicPort type isIpPublic } }
"""
_GPU_FIELDS = (
    "id displayName memoryInGb maxGpuCount secureCloud communityCloud securePrice communityPrice"
    " lowestPrice(input: {gpuCount: 1%s}) { uninterruptablePrice stockStatus }"
)
# Stock differs between the clouds: ask for the one pods are rented in (RunPod's docs pass secureCloud).
_STOCK_FILTER = {"SECURE": ", secureCloud: true", "COMMUNITY": ", secureCloud: false", "ALL": ""}
# Desired statuses of a pod that left RUNNING and will not come back by itself.
STOPPED_STATUSES = frozenset({"EXITED", "DEAD", "PAUSED", "TERMINATED"})


class RunPodError(ServiceUnavailableError):
    """RunPod failed or refused; ``str(error)`` is safe to show. ``transient``: worth retrying later."""

    def __init__(self, message: str, *, transient: bool = False, definite: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        # RunPod refused the request itself (it could not parse it, the balance is too low): nothing
        # was done. Any other failure of a mutation may have happened after it took effect.
        self.definite = definite


class NoCapacityError(RunPodError):
    """No GPU of the requested type (and cloud) can be rented right now; try another or wait.

    ``disk``: GPUs are free but no host has the disk the pod asks for (less disk may fit)."""

    def __init__(self, message: str, *, disk: bool = False) -> None:
        super().__init__(message, transient=True)
        self.disk = disk


class AmbiguousCreateError(RunPodError):
    """A create call failed in a way that does not say whether a pod was made (a server error,
    "Something went wrong", a page from the edge). RunPod has been seen to make a billing pod while
    answering so: look for the pod by its name before renting again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class RunPodBalanceError(RunPodError):
    """RunPod refuses to rent: the account's balance is too low (it wants an hour of credit)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, definite=True)


class RunPodAuthError(RunPodError):
    """The API key is missing, wrong, or lacks permission for the call."""


class PodNotReadableError(RunPodError):
    """The pod was created but could not be read back. Its name still identifies it: find it with
    :meth:`RunPodClient.list_pods` (or let the reconciler terminate it)."""

    def __init__(self, pod_id: str) -> None:
        super().__init__(f"RunPod created pod {pod_id} but did not report it back yet.", transient=True)
        self.pod_id = pod_id


class UnsafeGraphQLValueError(ValueError):
    """A value would break the SDK's hand-built GraphQL (quote, backslash, line break, control char)."""


@dataclass(frozen=True)
class GpuType:
    """A GPU type with its on-demand prices in USD per GPU-hour (``None``: that cloud lacks it)."""

    id: str
    display_name: str
    memory_gb: int
    secure_price: Decimal | None
    community_price: Decimal | None
    max_gpu_count: int | None = None
    lowest_price: Decimal | None = None
    # RunPod's stock hint ("High"/"Medium"/"Low", None when none is free). A listing is not a promise:
    # creating a pod may still fail with NoCapacityError.
    stock_status: str | None = None

    @property
    def available(self) -> bool:
        return self.stock_status is not None and self.stock_status.lower() != "none"

    def price(self, cloud_type: CloudType) -> Decimal | None:
        """The hourly price a pod on ``cloud_type`` would most likely cost, per GPU."""
        if cloud_type == "SECURE":
            return self.secure_price
        if cloud_type == "COMMUNITY":
            return self.community_price
        prices = [p for p in (self.secure_price, self.community_price) if p is not None]
        return min(prices) if prices else None


@dataclass(frozen=True)
class Pod:
    """A pod as RunPod reports it. ``running``: desired RUNNING and the container is up (runtime set).

    ``cost_per_hr`` is ``None`` when RunPod reports it missing or zero: a pod is never free, so the
    caller prices it from the catalogue instead."""

    id: str
    name: str
    desired_status: str
    cost_per_hr: Decimal | None
    gpu_type_id: str | None
    gpu_count: int
    uptime_s: int
    running: bool
    image_name: str = ""
    gpu_display_name: str | None = None
    last_status_change: str | None = None
    container_disk_gb: int = 0
    volume_gb: int = 0
    # The pod's environment holds the worker's bearer token: keep it out of reprs and logs.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def stopped(self) -> bool:
        """The pod left RUNNING (exited, died, was stopped): its container will not come back."""
        return self.desired_status in STOPPED_STATUSES


@dataclass(frozen=True)
class NetworkVolume:
    """A network volume of the account (RunPod bills its size every hour, pods or not)."""

    id: str
    name: str
    size_gb: int
    data_center_id: str | None = None


class RunPodClient:
    """RunPod pods and GPU types. Build one at start-up; safe to share between tasks."""

    def __init__(
        self,
        *,
        api_key: SecretStr,
        api_base_url: str = "https://api.runpod.io",
        proxy_url_template: str = "https://{pod_id}-8000.proxy.runpod.net",
        cloud_type: CloudType = "ALL",
    ) -> None:
        if not api_key.get_secret_value():
            raise RunPodAuthError("RunPod is not configured: RUNPOD_API_KEY is empty.")
        if "{pod_id}" not in proxy_url_template:
            raise ValueError("the proxy URL template needs a {pod_id} placeholder")
        self._api_key = api_key
        self.api_base_url = api_base_url.rstrip("/")
        self.proxy_url_template = proxy_url_template
        self.cloud_type: CloudType = cloud_type

    @classmethod
    def from_settings(cls, settings: Settings) -> RunPodClient:
        if settings.runpod_api_key is None:
            raise RunPodAuthError("RunPod is not configured: set RUNPOD_API_KEY.")
        return cls(
            api_key=settings.runpod_api_key,
            api_base_url=settings.runpod_api_base_url,
            proxy_url_template=settings.runpod_proxy_url_template,
            cloud_type=settings.runpod_cloud_type,
        )

    def __repr__(self) -> str:
        return f"RunPodClient(api_base_url={self.api_base_url!r})"

    def worker_base_url(self, pod_id: str) -> str:
        """Where the pod's worker (port 8000) answers: ``https://{pod_id}-8000.proxy.runpod.net``."""
        _check_pod_id(pod_id)
        return self.proxy_url_template.replace("{pod_id}", pod_id).rstrip("/")

    # ------------------------------------------------------------------ GPU types

    async def list_gpu_types(self) -> list[GpuType]:
        """Every GPU type with prices and a stock hint, in one request."""
        query = "query GpuTypes { gpuTypes { " + self._gpu_fields() + " } }"
        data = await self._query(query, "list GPU types")
        return [_gpu_from(item) for item in data["gpuTypes"] or [] if item]

    def _gpu_fields(self) -> str:
        return _GPU_FIELDS % _STOCK_FILTER[self.cloud_type]

    async def get_gpu_type(self, gpu_type_id: str) -> GpuType | None:
        """One GPU type, or ``None`` when RunPod has no such id."""
        query = (
            "query GpuTypes { gpuTypes(input: {id: "
            + json.dumps(gpu_type_id)
            + "}) { "
            + self._gpu_fields()
            + " } }"
        )
        data = await self._query(query, "read GPU type")
        items = data["gpuTypes"] or []
        return _gpu_from(items[0]) if items else None

    # ------------------------------------------------------------------ pods

    async def create_pod(
        self,
        *,
        name: str,
        gpu_type_id: str,
        image: str,
        env: Mapping[str, str],
        cloud_type: str = "SECURE",
        volume_in_gb: int = 0,
        container_disk_in_gb: int = 40,
        ports: str = "8000/http",
        network_volume_id: str | None = None,
        data_center_id: str | None = None,
        volume_mount_path: str = "/workspace",
    ) -> Pod:
        """Rent an on-demand pod; returns it as RunPod reports it right after (with ``costPerHr``).

        Raises :class:`NoCapacityError` when the GPU cannot be had now, :class:`UnsafeGraphQLValueError`
        for values the SDK cannot carry, :class:`PodNotReadableError` (with ``pod_id``) when the pod
        was created but could not be read back, :class:`AmbiguousCreateError` when RunPod's answer
        does not say whether a pod was made (look for it by name).
        """
        if cloud_type not in ("SECURE", "COMMUNITY", "ALL"):
            raise ValueError(f"cloud_type must be SECURE, COMMUNITY or ALL, not {cloud_type!r}")
        for label, value in (
            ("name", name),
            ("gpu_type_id", gpu_type_id),
            ("image", image),
            ("ports", ports),
            ("volume_mount_path", volume_mount_path),
            ("network_volume_id", network_volume_id or ""),
            ("data_center_id", data_center_id or ""),
        ):
            _check_literal(label, value)
        if not name or not image or not gpu_type_id:
            raise ValueError("name, image and gpu_type_id are required")
        env = dict(env)
        _check_env(env)

        def call() -> dict[str, Any]:
            import runpod

            try:
                return runpod.create_pod(
                    name,
                    image_name=image,
                    gpu_type_id=gpu_type_id,
                    cloud_type=cloud_type,
                    support_public_ip=False,  # the HTTP proxy needs none; it only narrows the choice
                    start_ssh=False,
                    data_center_id=data_center_id,
                    gpu_count=1,
                    volume_in_gb=volume_in_gb,
                    container_disk_in_gb=container_disk_in_gb,
                    ports=ports,
                    volume_mount_path=volume_mount_path,
                    env=env,
                    network_volume_id=network_volume_id,
                )
            except ValueError as error:
                if "No GPU found" in str(error):
                    raise RunPodError(f"RunPod has no GPU type {gpu_type_id!r}.", definite=True) from None
                raise

        try:
            created = await self._run(call, "create a pod")
        except RunPodError as error:
            if isinstance(error, NoCapacityError | RunPodAuthError) or error.definite:
                raise
            raise AmbiguousCreateError(str(error)) from error
        pod_id = str(created["id"])
        log.info("RunPod pod %s created (%s, %s, %s)", pod_id, name, gpu_type_id, cloud_type)

        # The deploy answer lacks costPerHr and status: read the pod back (RunPod may lag a moment).
        async def read_back() -> Pod:
            try:
                pod = await self.get_pod(pod_id)
            except RunPodError as error:
                if isinstance(error, RunPodAuthError) or not error.transient:
                    raise PodNotReadableError(pod_id) from error
                raise RetryLater(str(error)) from error
            if pod is None:
                raise RetryLater(f"pod {pod_id} is not listed yet")
            return pod

        try:
            return await RUNPOD_READ_BACK.call(read_back, what=f"reading pod {pod_id} back")
        except RetryLater:
            raise PodNotReadableError(pod_id) from None

    async def get_pod(self, pod_id: str) -> Pod | None:
        """The pod, or ``None`` once it is terminated or unknown."""
        _check_pod_id(pod_id)
        query = "query pod { pod(input: {podId: " + json.dumps(pod_id) + "}) {" + _POD_FIELDS + "} }"
        try:
            data = await self._query(query, "read a pod")
        except RunPodError as error:
            if not isinstance(error, RunPodAuthError) and _looks_not_found(error):
                return None
            raise
        return _pod_from(data["pod"]) if data.get("pod") else None

    async def list_pods(self, *, name_prefix: str | None = None) -> list[Pod]:
        """Every pod on the account (optionally only those whose name starts with ``name_prefix``)."""
        data = await self._query("query myPods { myself { pods {" + _POD_FIELDS + "} } }", "list pods")
        pods = [_pod_from(item) for item in (data["myself"] or {}).get("pods") or [] if item]
        return [pod for pod in pods if name_prefix is None or pod.name.startswith(name_prefix)]

    async def get_network_volume(self, volume_id: str) -> NetworkVolume | None:
        """The account's network volume with that id, or ``None``."""
        query = "query myVolumes { myself { networkVolumes { id name size dataCenterId } } }"
        data = await self._query(query, "list network volumes")
        for item in (data["myself"] or {}).get("networkVolumes") or []:
            if item and item.get("id") == volume_id:
                return NetworkVolume(
                    id=str(item["id"]),
                    name=str(item.get("name") or ""),
                    size_gb=int(item.get("size") or 0),
                    data_center_id=item.get("dataCenterId"),
                )
        return None

    async def terminate_pod(self, pod_id: str) -> None:
        """Terminate the pod (stops billing, deletes its disks). A pod already gone is fine."""
        _check_pod_id(pod_id)

        def call() -> None:
            import runpod

            runpod.terminate_pod(pod_id)

        try:
            await self._run(call, "terminate a pod")
        except RunPodError as error:
            if isinstance(error, RunPodAuthError) or error.transient:
                raise
            # RunPod answers a terminate of a vanished pod with an error: check before complaining.
            if await self.get_pod(pod_id) is not None:
                raise
            log.info("RunPod pod %s was already gone", pod_id)
            return
        log.info("RunPod pod %s terminated", pod_id)

    # ------------------------------------------------------------------ plumbing

    async def _query(self, query: str, action: str) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            from runpod.api.graphql import run_graphql_query

            return run_graphql_query(query, api_key=self._api_key.get_secret_value())["data"]

        return await self._run(call, action)

    async def _run(self, fn: Callable[[], T], action: str) -> T:
        return await asyncio.to_thread(self._locked_call, fn, action)

    def _locked_call(self, fn: Callable[[], T], action: str) -> T:
        with _sdk_state(self._api_key.get_secret_value(), self.api_base_url):
            try:
                return fn()
            except RunPodError:
                raise
            except Exception as error:
                mapped = _map_error(error, action)
                if mapped is None:
                    raise
                raise mapped from None


@contextmanager
def _sdk_state(api_key: str, base_url: str) -> Iterator[None]:
    """Hold the SDK lock with our key and base URL in place; restore the previous values after."""
    import runpod  # ~1 s on first import; never at bot import time

    with _SDK_LOCK:
        previous_url = os.environ.get(_BASE_URL_ENV)
        previous_key = runpod.api_key
        os.environ[_BASE_URL_ENV] = base_url
        runpod.api_key = api_key
        try:
            yield
        finally:
            runpod.api_key = previous_key
            if previous_url is None:
                os.environ.pop(_BASE_URL_ENV, None)
            else:
                os.environ[_BASE_URL_ENV] = previous_url


def _map_error(error: Exception, action: str) -> RunPodError | None:
    import requests
    from runpod import error as rp_error

    if isinstance(error, rp_error.AuthenticationError):
        return RunPodAuthError("RunPod refused the API key; check RUNPOD_API_KEY.")
    if isinstance(error, rp_error.QueryError):
        message = (error.message or "").strip()
        lowered = message.lower()
        if any(marker in lowered for marker in _NO_CAPACITY_MARKERS):
            if _DISK_MARKER in lowered:
                return NoCapacityError(
                    "RunPod has GPUs of that type, but no host with enough disk space for this pod.",
                    disk=True,
                )
            return NoCapacityError("RunPod has no GPU of that type available right now.")
        if any(marker in lowered for marker in _BALANCE_MARKERS):
            return RunPodBalanceError(
                "RunPod refused: the account's balance is too low. Add credit in the RunPod console."
            )
        if "unauthorized" in lowered or "permission" in lowered:
            return RunPodAuthError(f"RunPod refused to {action}: the API key lacks permission.")
        if lowered.startswith("syntax error"):
            # The message may quote part of the query (env values): never pass it on.
            return RunPodError(f"RunPod could not parse the request to {action}.", definite=True)
        return RunPodError(f"RunPod could not {action}: {message[:200]}")
    if isinstance(error, requests.RequestException | KeyError | TypeError):
        # Network trouble, a non-JSON page from the edge (JSONDecodeError), or JSON without "data".
        log.warning("RunPod call failed (%s): %s", action, type(error).__name__)
        return RunPodError(
            f"RunPod did not answer properly when trying to {action}; try again shortly.", transient=True
        )
    return None


def _looks_not_found(error: RunPodError) -> bool:
    return any(marker in str(error).lower() for marker in _NOT_FOUND_MARKERS)


def _check_pod_id(pod_id: str) -> None:
    if not _POD_ID.fullmatch(pod_id):
        raise ValueError(f"not a RunPod pod id: {pod_id!r}")


def _check_literal(label: str, value: str) -> None:
    bad = [ch for ch in value if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F]
    if bad:
        raise UnsafeGraphQLValueError(
            f"{label} contains {bad[0]!r}, which the RunPod SDK cannot send (no quotes, backslashes or "
            "line breaks; pass such data base64-encoded)"
        )


def _check_env(env: Mapping[str, str]) -> None:
    if len(env) > _MAX_ENV_VARS:
        raise UnsafeGraphQLValueError(f"RunPod allows at most {_MAX_ENV_VARS} environment variables")
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise UnsafeGraphQLValueError(f"invalid environment variable name {key!r}")
        if not isinstance(value, str):
            raise UnsafeGraphQLValueError(f"environment variable {key} must be a string")
        # The label names the variable, never its value (it may be a secret).
        _check_literal(f"environment variable {key}", value)


def _decimal(value: object) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    return Decimal(str(value))


def _gpu_from(data: Mapping[str, Any]) -> GpuType:
    lowest = data.get("lowestPrice") or {}
    return GpuType(
        id=str(data["id"]),
        display_name=str(data.get("displayName") or data["id"]),
        memory_gb=int(data.get("memoryInGb") or 0),
        secure_price=_decimal(data.get("securePrice")) if data.get("secureCloud", True) else None,
        community_price=_decimal(data.get("communityPrice")) if data.get("communityCloud", True) else None,
        max_gpu_count=data.get("maxGpuCount"),
        lowest_price=_decimal(lowest.get("uninterruptablePrice")),
        stock_status=lowest.get("stockStatus"),
    )


def _env_from(items: object) -> dict[str, str]:
    env: dict[str, str] = {}
    if isinstance(items, list):
        for item in items:
            if isinstance(item, str) and "=" in item:
                key, value = item.split("=", 1)
                env[key] = value
    return env


def _pod_from(data: Mapping[str, Any]) -> Pod:
    runtime = data.get("runtime")
    machine = data.get("machine") or {}
    desired = str(data.get("desiredStatus") or "")
    uptime = (runtime or {}).get("uptimeInSeconds")
    if uptime is None:
        uptime = data.get("uptimeSeconds") or 0
    return Pod(
        id=str(data["id"]),
        name=str(data.get("name") or ""),
        desired_status=desired,
        cost_per_hr=_decimal(data.get("costPerHr")) or None,
        gpu_type_id=machine.get("gpuTypeId"),
        gpu_count=int(data.get("gpuCount") or 0),
        uptime_s=int(uptime),
        running=desired == "RUNNING" and runtime is not None,
        image_name=str(data.get("imageName") or ""),
        gpu_display_name=machine.get("gpuDisplayName"),
        last_status_change=data.get("lastStatusChange"),
        container_disk_gb=int(data.get("containerDiskInGb") or 0),
        volume_gb=int(data.get("volumeInGb") or 0),
        env=_env_from(data.get("env")),
    )
