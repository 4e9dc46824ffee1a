"""``RunPodClient``: the real ``runpod`` SDK against the RunPod simulator, and the pod proxy."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bot.clients.runpod import (
    AmbiguousCreateError,
    NoCapacityError,
    Pod,
    PodNotReadableError,
    RunPodAuthError,
    RunPodClient,
    RunPodError,
    UnsafeGraphQLValueError,
)
from bot.config import Settings
from bot.errors import ServiceUnavailableError
from sim.runpod import PodLauncher, RunPodSim, SimClock, worker_launcher
from worker.protocol import ENV_JOB_SPEC, ENV_WORKER_TOKEN, PROTOCOL_VERSION, BaseModelSource, JobSpec

from .conftest import BASE_MODEL

KEY = "rpa_CLIENTTESTKEY0123456789"
READ_ONLY_KEY = "rpa_CLIENTREADONLY0123456789"
A5000 = "NVIDIA RTX A5000"
TOKEN = "tok-" + "x" * 28

# A stand-in container that echoes the request and the environment it was started with.
ECHO = r"""
import http.server, json, os

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        data = json.dumps({"path": self.path, "token": os.environ.get("LORAOPS_WORKER_TOKEN"),
                           "pod": os.environ.get("RUNPOD_POD_ID")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture(autouse=True)
def _no_base_url_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The client must point the SDK at its base URL itself, and leave nothing behind.
    monkeypatch.delenv("RUNPOD_API_BASE_URL", raising=False)


async def _sim(tmp_path: Path, **options: Any) -> RunPodSim:
    options.setdefault("launcher", PodLauncher(command=[sys.executable, "-c", ECHO], stop_grace_s=2.0))
    options.setdefault("boot_delay_s", 0)  # the client's calls are under test, not the pull
    sim = RunPodSim(api_key=KEY, read_only_keys=[READ_ONLY_KEY], data_dir=tmp_path / "rp", **options)
    await sim.start()
    return sim


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[RunPodSim]:
    sim = await _sim(tmp_path)
    yield sim
    await sim.close()


@pytest.fixture
async def frozen(tmp_path: Path) -> AsyncIterator[RunPodSim]:
    clock = SimClock(scale=0, start=datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    sim = await _sim(tmp_path, clock=clock, boot_delay_s=90, launcher=None)
    yield sim
    await sim.close()


def client_for(sim: RunPodSim, key: str = KEY) -> RunPodClient:
    return RunPodClient(
        api_key=SecretStr(key), api_base_url=sim.base_url, proxy_url_template=sim.proxy_url_template
    )


async def create(client: RunPodClient, **overrides: Any) -> Pod:
    options: dict[str, Any] = {
        "name": "loraops-42",
        "gpu_type_id": A5000,
        "image": "ghcr.io/loraops/worker:0.1.0",
        "env": {ENV_WORKER_TOKEN: TOKEN, "JOB": "42"},
        "cloud_type": "SECURE",
        "volume_in_gb": 0,
        "container_disk_in_gb": 60,
    }
    options.update(overrides)
    return await client.create_pod(**options)


async def test_list_gpu_types_is_typed_with_decimal_prices(sim: RunPodSim) -> None:
    gpus = {gpu.id: gpu for gpu in await client_for(sim).list_gpu_types()}
    a5000 = gpus[A5000]
    assert (a5000.display_name, a5000.memory_gb) == ("RTX A5000", 24)
    assert a5000.secure_price == Decimal("0.27") and a5000.community_price == Decimal("0.16")
    assert a5000.price("ALL") == Decimal("0.16") and a5000.available
    assert gpus["NVIDIA A40"].community_price is None
    assert gpus["NVIDIA H100 80GB HBM3"].secure_price == Decimal("3.99")
    assert len(sim.calls) == 1  # prices for every GPU in one request

    sim.set_capacity(A5000, 0)
    assert (await client_for(sim).get_gpu_type(A5000)).available is False  # type: ignore[union-attr]
    assert await client_for(sim).get_gpu_type("NVIDIA GeForce GTX 1080") is None


async def test_stock_is_asked_for_the_cloud_pods_are_rented_in(sim: RunPodSim) -> None:
    def client(cloud: Any) -> RunPodClient:
        return RunPodClient(api_key=SecretStr(KEY), api_base_url=sim.base_url, cloud_type=cloud)

    secure = {gpu.id: gpu for gpu in await client("SECURE").list_gpu_types()}
    assert sim.calls[-1].args["gpuTypes"] == {}
    assert "lowestPrice(input: {gpuCount: 1, secureCloud: true})" in sim.calls[-1].query
    community = {gpu.id: gpu for gpu in await client("COMMUNITY").list_gpu_types()}
    assert "secureCloud: false" in sim.calls[-1].query
    # The A40 is only in the secure cloud: in stock there, none in the community cloud.
    assert secure["NVIDIA A40"].available and not community["NVIDIA A40"].available
    await client("SECURE").get_gpu_type(A5000)
    assert "secureCloud: true" in sim.calls[-1].query


async def test_disk_space_is_its_own_no_capacity_and_a_generic_create_error_is_ambiguous(
    sim: RunPodSim,
) -> None:
    sim.host_disk_gb = 50
    with pytest.raises(NoCapacityError, match="disk space") as caught:
        await create(client_for(sim))
    assert caught.value.disk and not sim.pods
    sim.host_disk_gb = None
    sim.fail_create_after_creating()
    with pytest.raises(AmbiguousCreateError):
        await create(client_for(sim))
    (made,) = await client_for(sim).list_pods()  # the pod exists all the same: look for it by name
    assert made.name == "loraops-42" and made.container_disk_gb == 60


async def test_a_pod_shown_at_zero_per_hour_has_no_price_and_a_stopped_pod_says_so(sim: RunPodSim) -> None:
    pod = await create(client_for(sim))
    sim.cost_per_hr_shown = "zero"
    shown = await client_for(sim).get_pod(pod.id)
    assert shown is not None and shown.cost_per_hr is None  # never "free"
    sim.exit_pod(pod.id, dead=True)
    dead = await client_for(sim).get_pod(pod.id)
    assert dead is not None and dead.stopped and not dead.running and dead.desired_status == "DEAD"


async def test_create_pod_keeps_name_delivers_env_and_reads_cost(frozen: RunPodSim) -> None:
    client = client_for(frozen)
    pod = await create(client)
    assert pod.name == "loraops-42" and pod.gpu_type_id == A5000
    assert pod.cost_per_hr == Decimal("0.27") and isinstance(pod.cost_per_hr, Decimal)
    assert pod.desired_status == "RUNNING" and not pod.running and pod.uptime_s == 0
    assert pod.env == {ENV_WORKER_TOKEN: TOKEN, "JOB": "42"}
    assert frozen.pods[pod.id].env == {ENV_WORKER_TOKEN: TOKEN, "JOB": "42"}
    assert [call.fields[0] for call in frozen.calls] == ["gpuTypes", "podFindAndDeployOnDemand", "pod"]
    sent = frozen.calls[1].args["podFindAndDeployOnDemand"]["input"]
    assert sent["ports"] == "8000/http" and sent["volumeMountPath"] == "/workspace"
    assert sent["supportPublicIp"] is False and "startSsh" not in sent
    assert sent["containerDiskInGb"] == 60 and sent["cloudType"] == "SECURE"
    assert "RUNPOD_API_BASE_URL" not in os.environ

    frozen.clock.advance(90)
    await frozen.tick()
    frozen.clock.advance(45)
    booted = await client.get_pod(pod.id)
    assert booted is not None and booted.running and booted.uptime_s == 45

    community = await create(client, cloud_type="COMMUNITY", name="loraops-43")
    assert community.cost_per_hr == Decimal("0.16")


async def test_no_capacity_raises_no_capacity_error(sim: RunPodSim) -> None:
    sim.set_capacity(A5000, 0)
    with pytest.raises(NoCapacityError) as caught:
        await create(client_for(sim))
    assert isinstance(caught.value, ServiceUnavailableError) and caught.value.transient
    assert not sim.pods


async def test_wrong_or_read_only_key_is_an_auth_error_that_never_shows_the_key(sim: RunPodSim) -> None:
    wrong = client_for(sim, "rpa_WRONGKEY0123456789")
    for attempt in (wrong.list_gpu_types(), wrong.get_pod("abc123"), wrong.list_pods(), create(wrong)):
        with pytest.raises(RunPodAuthError) as caught:
            await attempt
        assert "rpa_" not in str(caught.value)
    assert {call.status for call in sim.calls} == {401}

    read_only = client_for(sim, READ_ONLY_KEY)
    assert await read_only.list_pods() == []
    with pytest.raises(RunPodAuthError, match="lacks permission"):
        await create(read_only)
    assert not sim.pods


async def test_terminate_is_idempotent_and_the_pod_is_gone(sim: RunPodSim) -> None:
    client = client_for(sim)
    pod = await create(client)
    await client.terminate_pod(pod.id)
    assert await client.get_pod(pod.id) is None
    assert await client.list_pods() == []
    await client.terminate_pod(pod.id)  # already gone: fine
    await client.terminate_pod("neverexisted01")
    assert sim.pods[pod.id].phase == "terminated"


@pytest.mark.parametrize("value", ['say "hi"', "back\\slash", "two\nlines", "cr\rhere", "nul\x00"])
async def test_env_values_that_break_the_sdks_query_are_refused(sim: RunPodSim, value: str) -> None:
    with pytest.raises(UnsafeGraphQLValueError) as caught:
        await create(client_for(sim), env={"SECRET": value})
    assert value not in str(caught.value) and "SECRET" in str(caught.value)
    assert sim.calls == []


async def test_bad_env_names_names_and_images_are_refused(sim: RunPodSim) -> None:
    client = client_for(sim)
    with pytest.raises(UnsafeGraphQLValueError):
        await create(client, env={"BAD-NAME": "x"})
    with pytest.raises(UnsafeGraphQLValueError):
        await create(client, name='loraops-"1')
    with pytest.raises(UnsafeGraphQLValueError):
        await create(client, env={f"V{i}": "x" for i in range(51)})
    with pytest.raises(ValueError, match="pod id"):
        await client.get_pod('x") { id } }')
    assert sim.calls == []


async def test_list_pods_filters_by_name_prefix(sim: RunPodSim) -> None:
    client = client_for(sim)
    mine = await create(client)
    await create(client, name="someone-elses-notebook")
    assert [pod.id for pod in await client.list_pods(name_prefix="loraops-")] == [mine.id]
    assert len(await client.list_pods()) == 2


async def test_edge_failures_are_transient_errors(sim: RunPodSim) -> None:
    client = client_for(sim)
    sim.fail_next("myself", html=True, http_status=502)
    with pytest.raises(RunPodError) as caught:
        await client.list_pods()
    assert caught.value.transient
    sim.fail_next("gpuTypes", http_status=429)
    with pytest.raises(RunPodError) as caught:
        await client.list_gpu_types()
    assert caught.value.transient
    sim.fail_next("gpuTypes", "Something went wrong. Please try again later or contact support.")
    with pytest.raises(RunPodError, match="Something went wrong") as caught:
        await client.list_gpu_types()
    assert not caught.value.transient


async def test_create_pod_that_cannot_be_read_back_still_names_the_pod(sim: RunPodSim) -> None:
    sim.fail_next("pod", "Something went wrong. Please try again later or contact support.")
    with pytest.raises(PodNotReadableError) as caught:
        await create(client_for(sim))
    assert caught.value.pod_id in sim.pods


async def test_sdk_state_is_restored_and_clients_do_not_leak_into_each_other(
    sim: RunPodSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runpod

    monkeypatch.setattr(runpod, "api_key", "previous-key")
    other = await _sim(tmp_path / "other")
    try:
        first, second = client_for(sim), client_for(other)
        await create(first)
        results = await asyncio.gather(*(c.list_pods() for c in [first, second] * 5))
        assert [len(pods) for pods in results] == [1, 0] * 5
    finally:
        await other.close()
    assert runpod.api_key == "previous-key"
    assert "RUNPOD_API_BASE_URL" not in os.environ


async def test_repr_hides_key_and_env(sim: RunPodSim) -> None:
    client = client_for(sim)
    pod = await create(client)
    assert KEY not in repr(client) and TOKEN not in repr(pod)


async def test_from_settings(sim: RunPodSim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        runpod_api_key=SecretStr(KEY),
        runpod_api_base_url=sim.base_url,
        runpod_proxy_url_template=sim.proxy_url_template,
    )
    client = RunPodClient.from_settings(settings)
    assert await client.list_pods() == []
    assert client.worker_base_url("abc123") == f"{sim.proxy_base_url}/proxy/abc123-8000"
    with pytest.raises(RunPodAuthError):
        RunPodClient.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    production = RunPodClient(api_key=SecretStr(KEY))
    assert production.worker_base_url("abc123") == "https://abc123-8000.proxy.runpod.net"


async def test_worker_base_url_reaches_the_pods_container(sim: RunPodSim) -> None:
    client = client_for(sim)
    pod = await create(client)
    await sim.wait_listening(pod.id)
    running = await client.get_pod(pod.id)
    assert running is not None and running.running
    async with (
        aiohttp.ClientSession() as http,
        http.get(client.worker_base_url(pod.id) + "/health") as response,
    ):
        assert response.status == 200
        assert await response.json() == {"path": "/health", "token": TOKEN, "pod": pod.id}


# ---------------------------------------------------------------------- the real worker


async def test_the_real_worker_runs_in_a_simulated_pod_and_terminates_it(
    tmp_path: Path, model_url: str
) -> None:
    url, digest = model_url, hashlib.sha256(BASE_MODEL).hexdigest()  # model_url: tests/training/conftest.py
    launcher = worker_launcher(trainer_cmd=f"{sys.executable} -m sim.sdscripts accelerate launch")
    sim = await _sim(tmp_path, launcher=launcher)
    try:
        client = client_for(sim)
        spec = JobSpec(
            job_id=42,
            model_family="sd15",
            base_model=BaseModelSource(kind="url", url=url, sha256=digest),
            config_toml='output_dir = "output"\noutput_name = "elena"\n',
            dataset_toml="[general]\n",
            prompts_txt="ohwx woman\n",
            total_steps=10,
            dataset_sha256="0" * 64,
            deadline_unix=time.time() + 600,
        )
        token = secrets.token_urlsafe(24)
        pod = await create(client, env={ENV_JOB_SPEC: spec.to_env(), ENV_WORKER_TOKEN: token})
        base = client.worker_base_url(pod.id)
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            health: dict[str, Any] = {}
            async with asyncio.timeout(60):
                while True:  # 502 until the worker listens, exactly as through RunPod's proxy
                    async with http.get(f"{base}/health") as response:
                        if response.status == 200:
                            health = await response.json()
                            break
                        assert response.status == 502
                    await asyncio.sleep(0.1)
            assert health["ok"] is True and health["protocol"] == PROTOCOL_VERSION
            async with http.get(f"{base}/status") as response:
                assert response.status == 401  # the proxy is public: the token guards the worker
            async with asyncio.timeout(60):
                while True:
                    async with http.get(f"{base}/status", headers=auth) as response:
                        assert response.status == 200
                        status = await response.json()
                    if status["state"] == "waiting_dataset":
                        break
                    assert status["state"] == "starting", (status, sim.pods[pod.id].log_text())
                    await asyncio.sleep(0.1)
            async with http.post(f"{base}/ack", headers=auth) as response:
                assert response.status == 200
        # The worker asks RunPod (the simulator) to terminate its own pod with the pod-scoped key.
        await sim.wait_for(lambda: sim.pods[pod.id].phase == "terminated", within=60)
        assert sim.pods[pod.id].terminated_by == "pod"
        assert await client.get_pod(pod.id) is None
        container = sim.pods[pod.id].container
        assert container is not None
        await sim.wait_for(lambda: container.proc.returncode is not None, within=30)
    finally:
        await sim.close()
