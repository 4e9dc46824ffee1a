"""The RunPod simulator driven by the real ``runpod`` SDK (and the pod proxy driven by aiohttp)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import requests

from sim.runpod import NO_CAPACITY, NO_CAPACITY_DISK, Meter, PodLauncher, RunPodSim, SimClock

KEY = "rpa_TESTACCOUNTKEY0123456789"
READ_ONLY_KEY = "rpa_READONLYKEY0123456789"
A5000 = "NVIDIA RTX A5000"
T = TypeVar("T")

# A stand-in container: a tiny HTTP server on $PORT that reports what it sees.
STUB = r"""
import hashlib, http.server, json, os, subprocess, sys, time

class Handler(http.server.BaseHTTPRequestHandler):
    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.split("=", 1)[1]))
        if self.path == "/exit":
            self._send(200, {"bye": True})
            self.wfile.flush()
            os._exit(3)
        if self.path == "/child":
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            self._send(200, {"pid": child.pid})
            return
        if self.path == "/terminate-self":
            import runpod
            runpod.api_key = os.environ["RUNPOD_API_KEY"]
            runpod.terminate_pod(os.environ["RUNPOD_POD_ID"])
            self._send(200, {"terminated": True})
            return
        env = {k: v for k, v in os.environ.items() if k.startswith(("RUNPOD_", "JOB_", "PORT", "HOST"))}
        self._send(200, {"path": self.path, "pid": os.getpid(), "env": env,
                         "auth": self.headers.get("Authorization")})

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._send(201, {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def stub_launcher() -> PodLauncher:
    return PodLauncher(command=[sys.executable, "-c", STUB], stop_grace_s=2.0, restart_delay_s=0.05)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


@pytest.fixture
def runpod(monkeypatch: pytest.MonkeyPatch) -> Any:
    import runpod as sdk

    monkeypatch.setattr(sdk, "api_key", KEY)
    return sdk


async def _started(sim: RunPodSim, monkeypatch: pytest.MonkeyPatch) -> RunPodSim:
    monkeypatch.setenv("RUNPOD_API_BASE_URL", await sim.start())
    return sim


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[RunPodSim]:
    sim = RunPodSim(  # pods start at once: these tests are about the API and the proxy
        api_key=KEY,
        read_only_keys=[READ_ONLY_KEY],
        data_dir=tmp_path / "rp",
        launcher=stub_launcher(),
        boot_delay_s=0,
    )
    yield await _started(sim, monkeypatch)
    await sim.close()


@pytest.fixture
async def frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[RunPodSim]:
    """Time stands still unless the test advances it; pods take two minutes to boot; no containers."""
    clock = SimClock(scale=0, start=datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    sim = RunPodSim(api_key=KEY, clock=clock, boot_delay_s=120, data_dir=tmp_path / "rp")
    yield await _started(sim, monkeypatch)
    await sim.close()


def create(runpod: Any, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": "loraops-7",
        "image_name": "ghcr.io/loraops/worker:0.1.0",
        "gpu_type_id": A5000,
        "cloud_type": "SECURE",
        "ports": "8000/http",
        "env": {"JOB_ID": "7", "LORAOPS_WORKER_TOKEN": "t0k3n-abcdefghijklmnop"},
        "container_disk_in_gb": 40,
    }
    options.update(overrides)
    return runpod.create_pod(**options)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


# ---------------------------------------------------------------------- GPU types


async def test_gpu_catalogue_has_real_ids_memory_and_prices(sim: RunPodSim, runpod: Any) -> None:
    gpus = await call(runpod.get_gpus)
    by_id = {gpu["id"]: gpu for gpu in gpus}
    assert by_id[A5000] == {"id": A5000, "displayName": "RTX A5000", "memoryInGb": 24}
    assert by_id["NVIDIA H100 80GB HBM3"]["memoryInGb"] == 80

    gpu = await call(runpod.get_gpu, A5000)
    assert gpu["securePrice"] == 0.27 and gpu["communityPrice"] == 0.16
    assert gpu["lowestPrice"] == {"minimumBidPrice": 0.11, "uninterruptablePrice": 0.16}
    assert gpu["secureCloud"] is True and gpu["maxGpuCount"] == 8

    a40 = await call(runpod.get_gpu, "NVIDIA A40")
    assert a40["communityCloud"] is False and a40["communityPrice"] is None

    with pytest.raises(ValueError, match="No GPU found"):
        await call(runpod.get_gpu, "NVIDIA GeForce GTX 1080")


# ---------------------------------------------------------------------- pods


async def test_create_pod_delivers_name_env_and_sends_the_sdk_calls(sim: RunPodSim, runpod: Any) -> None:
    created = await call(create, runpod)
    assert sorted(created) == ["env", "id", "imageName", "machine", "machineId"]
    assert created["env"] == ["JOB_ID=7", "LORAOPS_WORKER_TOKEN=t0k3n-abcdefghijklmnop"]
    pod = sim.pods[created["id"]]
    assert pod.name == "loraops-7"
    assert pod.env == {"JOB_ID": "7", "LORAOPS_WORKER_TOKEN": "t0k3n-abcdefghijklmnop"}
    assert [call.fields for call in sim.calls] == [["gpuTypes"], ["podFindAndDeployOnDemand"]]
    deploy = sim.calls[-1].args["podFindAndDeployOnDemand"]["input"]
    assert deploy["cloudType"] == "SECURE" and deploy["gpuTypeId"] == A5000
    assert deploy["containerDiskInGb"] == 40 and deploy["ports"] == "8000/http"
    assert {call.auth for call in sim.calls} == {"account"}

    listed = await call(runpod.get_pods)
    assert [p["name"] for p in listed] == ["loraops-7"]


async def test_network_volume_without_data_centre_makes_three_calls(sim: RunPodSim, runpod: Any) -> None:
    volume = sim.add_network_volume("models", 50, "EU-RO-1")
    created = await call(create, runpod, network_volume_id=volume, volume_mount_path="/workspace")
    assert [call.fields for call in sim.calls] == [["gpuTypes"], ["myself"], ["podFindAndDeployOnDemand"]]
    assert sim.pods[created["id"]].data_center_id == "EU-RO-1"


async def test_pod_boots_after_the_delay_then_reports_runtime_and_uptime(
    frozen: RunPodSim, runpod: Any
) -> None:
    created = await call(create, runpod)
    pod = await call(runpod.get_pod, created["id"])
    assert pod["desiredStatus"] == "RUNNING"
    assert pod["runtime"] is None and pod["uptimeSeconds"] == 0
    assert pod["costPerHr"] == 0.27 and pod["name"] == "loraops-7"
    assert pod["lastStatusChange"].startswith("Rented by User: ")
    assert pod["machine"] == {"gpuDisplayName": "RTX A5000"}

    frozen.clock.advance(119)
    await frozen.tick()
    assert (await call(runpod.get_pod, created["id"]))["runtime"] is None

    frozen.clock.advance(1)
    await frozen.tick()
    frozen.clock.advance(30)
    pod = await call(runpod.get_pod, created["id"])
    assert pod["uptimeSeconds"] == 30
    assert pod["runtime"]["ports"][0]["privatePort"] == 8000
    assert pod["runtime"]["ports"][0]["type"] == "http"


async def test_cost_per_hour_follows_cloud_and_billing_accrues(frozen: RunPodSim, runpod: Any) -> None:
    secure = await call(create, runpod)
    community = await call(create, runpod, cloud_type="COMMUNITY")
    cheapest = await call(create, runpod, cloud_type="ALL")
    costs = [(await call(runpod.get_pod, p["id"]))["costPerHr"] for p in (secure, community, cheapest)]
    assert costs == [0.27, 0.16, 0.16]

    frozen.clock.advance(3600)
    disk_hour = Decimal(40) * Decimal("0.10") / 730  # 40 GB of container disk for an hour
    assert frozen.pods[secure["id"]].usage(frozen.clock.time()) == Meter(Decimal("0.27"), disk_hour)
    await call(runpod.terminate_pod, secure["id"])
    frozen.clock.advance(3600)
    assert frozen.pods[secure["id"]].usage(frozen.clock.time()) == Meter(Decimal("0.27"), disk_hour)
    assert frozen.meter() == Meter(Decimal("0.27") + 2 * Decimal("0.16") * 2, 5 * disk_hour)
    assert frozen.total_cost() == frozen.meter().total


async def test_no_capacity_is_the_real_graphql_error(sim: RunPodSim, runpod: Any) -> None:
    sim.set_capacity(A5000, 0)
    with pytest.raises(runpod.error.QueryError) as caught:
        await call(create, runpod)
    assert str(caught.value) == NO_CAPACITY
    assert NO_CAPACITY == (
        "There are no longer any instances available with the requested specifications. "
        "Please refresh and try again."
    )
    # A40 has no community cloud at all: same answer.
    with pytest.raises(runpod.error.QueryError, match="no longer any instances"):
        await call(create, runpod, gpu_type_id="NVIDIA A40", cloud_type="COMMUNITY")


async def test_capacity_is_used_by_live_pods_and_freed_by_terminate(frozen: RunPodSim, runpod: Any) -> None:
    frozen.set_capacity(A5000, 1)
    first = await call(create, runpod)
    with pytest.raises(runpod.error.QueryError, match="no longer any instances"):
        await call(create, runpod)
    await call(runpod.terminate_pod, first["id"])
    await call(create, runpod)


async def test_wrong_key_is_401_and_read_only_key_cannot_mutate(
    sim: RunPodSim, runpod: Any, monkeypatch: Any
) -> None:
    with pytest.raises(runpod.error.AuthenticationError):
        await call(runpod.get_gpus, api_key="rpa_WRONG")
    assert sim.calls[-1].status == 401 and sim.calls[-1].auth == "invalid"

    assert await call(runpod.get_gpus, api_key=READ_ONLY_KEY)
    monkeypatch.setattr(runpod, "api_key", READ_ONLY_KEY)
    with pytest.raises(runpod.error.QueryError, match=r"^Unauthorized$"):
        await call(create, runpod)
    assert not sim.pods


async def test_older_sdks_api_key_query_parameter_is_accepted(sim: RunPodSim) -> None:
    response = await call(
        requests.post,
        f"{sim.base_url}/graphql?api_key={KEY}",
        json={"query": "query { gpuTypes { id } }"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["data"]["gpuTypes"]


async def test_terminate_removes_the_pod_from_every_view(sim: RunPodSim, runpod: Any) -> None:
    created = await call(create, runpod)
    assert await call(runpod.terminate_pod, created["id"]) is None
    assert await call(runpod.get_pod, created["id"]) is None
    assert await call(runpod.get_pods) == []
    assert sim.pods[created["id"]].terminated_by == "account"
    with pytest.raises(runpod.error.QueryError):
        await call(runpod.terminate_pod, created["id"])


async def test_stop_and_resume(frozen: RunPodSim, runpod: Any) -> None:
    created = await call(create, runpod)
    frozen.clock.advance(120)
    await frozen.tick()
    assert await call(runpod.stop_pod, created["id"]) == {"id": created["id"], "desiredStatus": "EXITED"}
    pod = await call(runpod.get_pod, created["id"])
    assert pod["desiredStatus"] == "EXITED" and pod["runtime"] is None
    assert pod["lastStatusChange"].startswith("Stopped by User: ")
    resumed = await call(runpod.resume_pod, created["id"], 1)
    assert resumed["desiredStatus"] == "RUNNING" and resumed["env"] == created["env"]


async def test_unescaped_quote_in_env_is_a_syntax_error_and_nothing_is_created(
    sim: RunPodSim, runpod: Any
) -> None:
    with pytest.raises(runpod.error.QueryError, match="Syntax Error"):
        await call(create, runpod, env={"X": 'say "hi"'})
    assert not sim.pods and sim.calls[-1].status == 400


async def test_unknown_fields_fail_validation_like_graphql_js(sim: RunPodSim, runpod: Any) -> None:
    from runpod.api.graphql import run_graphql_query

    with pytest.raises(runpod.error.QueryError, match=r"Cannot query field .gpuFoo. on type .Pod."):
        await call(run_graphql_query, 'query { pod(input: {podId: "x"}) { id gpuFoo } }', api_key=KEY)


async def test_injected_failures(sim: RunPodSim, runpod: Any) -> None:
    sim.fail_next("gpuTypes", html=True, http_status=502)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        await call(runpod.get_gpus)
    sim.fail_next("pod", http_status=429)
    with pytest.raises(KeyError):
        await call(runpod.get_pod, "abc")
    sim.fail_next("*", "Something went wrong. Please try again later or contact support.")
    with pytest.raises(runpod.error.QueryError, match="Something went wrong"):
        await call(runpod.get_pods)
    assert await call(runpod.get_pods) == []


async def test_image_that_never_pulls_keeps_runtime_null(sim: RunPodSim, runpod: Any) -> None:
    sim.stuck_images.add("ghcr.io/loraops/worker:broken")
    created = await call(create, runpod, image_name="ghcr.io/loraops/worker:broken")
    await asyncio.sleep(0.1)
    await sim.tick()
    pod = await call(runpod.get_pod, created["id"])
    assert pod["desiredStatus"] == "RUNNING" and pod["runtime"] is None


# ---------------------------------------------------------------------- containers and the proxy


async def _running(sim: RunPodSim, runpod: Any, **overrides: Any) -> str:
    created = await call(create, runpod, **overrides)
    await sim.wait_listening(created["id"])
    return created["id"]


async def test_proxy_reaches_the_container_with_the_pods_environment(sim: RunPodSim, runpod: Any) -> None:
    pod_id = await _running(sim, runpod)
    url = sim.proxy_url_template.format(pod_id=pod_id)
    assert url == f"{sim.proxy_base_url}/proxy/{pod_id}-8000"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/status?x=1", headers={"Authorization": "Bearer abc"}) as response:
            assert response.status == 200
            seen = await response.json()
        payload = os.urandom(300_000)
        async with http.put(f"{url}/dataset", data=payload) as response:
            assert response.status == 201
            assert await response.json() == {
                "size": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
    assert seen["path"] == "/status?x=1" and seen["auth"] == "Bearer abc"
    env = seen["env"]
    assert env["JOB_ID"] == "7" and env["RUNPOD_POD_ID"] == pod_id
    assert env["RUNPOD_API_BASE_URL"] == sim.base_url
    assert env["RUNPOD_API_KEY"] == sim.pods[pod_id].api_key != KEY
    assert [c.path for c in sim.proxy_calls] == ["/status", "/dataset"]


async def test_proxy_answers_404_502_and_524_like_the_real_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runpod: Any
) -> None:
    sim = RunPodSim(
        api_key=KEY, data_dir=tmp_path / "rp", launcher=stub_launcher(), proxy_timeout_s=0.5, boot_delay_s=0
    )
    await _started(sim, monkeypatch)
    try:
        async with aiohttp.ClientSession() as http:

            async def status(url: str) -> int:
                async with http.get(url) as response:
                    await response.read()
                    return response.status

            assert await status(sim.proxy_url("nosuchpod") + "/health") == 404
            sim.stuck_images.add("never:1")
            booting = await call(create, runpod, image_name="never:1")
            assert await status(sim.proxy_url(booting["id"]) + "/health") == 502
            pod_id = await _running(sim, runpod)
            assert await status(sim.proxy_url(pod_id, 8888) + "/health") == 404  # not an exposed port
            assert await status(sim.proxy_url(pod_id) + "/slow?s=2") == 524
            assert await status(sim.proxy_url(pod_id) + "/health") == 200
            await call(runpod.terminate_pod, pod_id)
            assert await status(sim.proxy_url(pod_id) + "/health") == 404
    finally:
        await sim.close()


async def test_terminate_kills_the_whole_process_group(sim: RunPodSim, runpod: Any) -> None:
    pod_id = await _running(sim, runpod)
    async with aiohttp.ClientSession() as http, http.get(sim.proxy_url(pod_id) + "/child") as response:
        child = (await response.json())["pid"]
    container = sim.pods[pod_id].container
    assert container is not None and alive(container.pid) and alive(child)
    await call(runpod.terminate_pod, pod_id)
    await sim.wait_for(lambda: not alive(container.pid) and not alive(child))


async def test_container_restarts_when_its_main_process_exits(sim: RunPodSim, runpod: Any) -> None:
    pod_id = await _running(sim, runpod)
    async with aiohttp.ClientSession() as http, http.get(sim.proxy_url(pod_id) + "/exit") as response:
        assert response.status == 200
    await sim.wait_for(lambda: sim.pods[pod_id].starts == 2)
    assert sim.pods[pod_id].exit_codes == [3]
    await sim.wait_listening(pod_id)
    assert (await call(runpod.get_pod, pod_id))["desiredStatus"] == "RUNNING"


async def test_pod_terminates_itself_with_its_own_key(sim: RunPodSim, runpod: Any) -> None:
    pod_id = await _running(sim, runpod)
    async with (
        aiohttp.ClientSession() as http,
        http.get(sim.proxy_url(pod_id) + "/terminate-self") as response,
    ):
        assert response.status == 200
    await sim.wait_for(lambda: sim.pods[pod_id].phase == "terminated")
    assert sim.pods[pod_id].terminated_by == "pod"
    assert sim.calls[-1].auth == f"pod:{pod_id}" and sim.calls[-1].fields == ["podTerminate"]
    assert await call(runpod.get_pods) == []
    container = sim.pods[pod_id].container
    assert container is not None
    await sim.wait_for(lambda: container.proc.returncode is not None)


async def test_a_pods_key_only_reaches_its_own_pod(frozen: RunPodSim, runpod: Any) -> None:
    mine = await call(create, runpod)
    other = await call(create, runpod, name="loraops-8")
    pod_key = frozen.pods[mine["id"]].api_key
    assert (await call(runpod.get_pod, mine["id"], api_key=pod_key))["id"] == mine["id"]
    for denied in (
        lambda: runpod.get_pod(other["id"], api_key=pod_key),
        lambda: runpod.get_pods(api_key=pod_key),
        lambda: runpod.get_gpus(api_key=pod_key),
    ):
        with pytest.raises(runpod.error.QueryError, match=r"^Unauthorized$"):
            await call(denied)


# ---------------------------------------------------------------------- failures RunPod produces


async def test_a_create_that_errors_after_creating_leaves_a_billing_pod(
    frozen: RunPodSim, runpod: Any
) -> None:
    frozen.fail_create_after_creating()
    with pytest.raises(runpod.error.QueryError, match="Something went wrong"):
        await call(create, runpod)
    (ghost,) = await call(runpod.get_pods)
    assert ghost["name"] == "loraops-7" and ghost["desiredStatus"] == "RUNNING"
    frozen.clock.advance(3600)
    assert frozen.meter().compute == Decimal("0.27")
    # The edge's HTML page after creating: the SDK leaks JSONDecodeError, and a second pod exists.
    frozen.fail_create_after_creating(None, http_status=502, html=True)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        await call(create, runpod)
    assert len(await call(runpod.get_pods)) == 2


async def test_exited_and_dead_pods_stop_gpu_billing_but_keep_volume_billing(
    frozen: RunPodSim, runpod: Any
) -> None:
    exited = await call(create, runpod, volume_in_gb=20)
    dead = await call(create, runpod)
    frozen.clock.advance(600)
    await frozen.tick()
    frozen.exit_pod(exited["id"], reason="host restart")
    frozen.exit_pod(dead["id"], dead=True)
    for pod_id, status in ((exited["id"], "EXITED"), (dead["id"], "DEAD")):
        pod = await call(runpod.get_pod, pod_id)
        assert pod["desiredStatus"] == status and pod["runtime"] is None and pod["uptimeSeconds"] == 0
    before = frozen.meter()
    frozen.clock.advance(3600)
    after = frozen.meter()
    assert after.compute == before.compute  # no GPU time once it left RUNNING
    # The volume bills on at the stopped rate.
    assert round(after.storage - before.storage, 12) == round(Decimal(20) * Decimal("0.20") / 730, 12)
    with pytest.raises(runpod.error.QueryError, match="cannot be resumed"):
        await call(runpod.resume_pod, dead["id"], 1)


async def test_balance_running_out_stops_every_pod(frozen: RunPodSim, runpod: Any) -> None:
    frozen.balance = Decimal("1.00")
    created = await call(create, runpod)
    frozen.clock.advance(4 * 3600)  # $1.08 of GPU time
    await frozen.tick()
    pod = await call(runpod.get_pod, created["id"])
    assert pod["desiredStatus"] == "EXITED" and pod["runtime"] is None
    assert "insufficient balance" in pod["lastStatusChange"]
    with pytest.raises(runpod.error.QueryError, match="enough credits"):
        await call(create, runpod)


async def test_network_volumes_bill_always_and_disk_space_has_its_own_no_instances(
    frozen: RunPodSim, runpod: Any
) -> None:
    frozen.add_network_volume("models", 1100, "EU-RO-1")
    frozen.clock.advance(730 * 3600)
    meter = frozen.meter()
    assert meter.compute == 0 and round(meter.storage, 9) == Decimal(1000) * Decimal("0.07") + 100 * Decimal(
        "0.05"
    )
    frozen.host_disk_gb = 100
    with pytest.raises(runpod.error.QueryError) as caught:
        await call(create, runpod, container_disk_in_gb=80, volume_in_gb=40)
    assert str(caught.value) == NO_CAPACITY_DISK
    await call(create, runpod, container_disk_in_gb=80, volume_in_gb=20)


async def test_desired_status_is_typed_and_cost_per_hour_may_show_zero(
    frozen: RunPodSim, runpod: Any
) -> None:
    from runpod.api.graphql import run_graphql_query

    created = await call(create, runpod)
    frozen.cost_per_hr_shown = "zero"
    pod = await call(runpod.get_pod, created["id"])
    assert pod["costPerHr"] == 0.0 and pod["desiredStatus"] == "RUNNING"
    frozen.clock.advance(3600)
    assert frozen.meter().compute == Decimal("0.27")  # billed at the real price all the same
    with pytest.raises(runpod.error.QueryError, match="must not have a selection"):
        await call(
            run_graphql_query, 'query { pod(input: {podId: "x"}) { desiredStatus { id } } }', api_key=KEY
        )


async def test_by_default_a_pod_pulls_its_image_for_minutes_on_a_fast_clock(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runpod: Any
) -> None:
    sim = await _started(RunPodSim(api_key=KEY, data_dir=tmp_path / "rp"), monkeypatch)
    try:
        created = await call(create, runpod)
        pod = await call(runpod.get_pod, created["id"])
        assert pod["runtime"] is None and pod["desiredStatus"] == "RUNNING"
        loop = asyncio.get_running_loop()
        real = loop.time()
        simulated = sim.pods[created["id"]]
        await sim.wait_for(lambda: simulated.phase == "running", within=10)
        assert simulated.started_at is not None
        assert simulated.started_at - simulated.created_at >= 180  # three minutes of pulling
        assert loop.time() - real < 5  # in a second or two of the test's time
        assert (await call(runpod.get_pod, created["id"]))["runtime"] is not None
        # The pull was billed like RunPod bills it: the whole time, GPU and container disk.
        assert sim.meter().compute >= Decimal("0.27") * 180 / 3600
        later = sim.clock.time()
        await asyncio.sleep(0.5)
        assert sim.clock.time() - later < 2  # back to real time once nothing pulls
    finally:
        await sim.close()
