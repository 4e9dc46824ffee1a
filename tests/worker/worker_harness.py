"""Harness for the worker tests (conftest.py re-exports the fixtures).

The worker runs as a real subprocess with the sd-scripts stand-in.

Around it, one local aiohttp server plays Hugging Face (``/{repo}/resolve/main/{file}`` with Range
and bearer auth) and RunPod's GraphQL endpoint (records ``podTerminate``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sim.gpu import install_driver
from sim.testdata import STANDIN_CONFIG_TOML, STANDIN_DATASET_TOML, TESTDATA_FACES
from worker.protocol import BaseModelSource, JobSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
FACES = TESTDATA_FACES
TOKEN = "worker-token-0123456789abcdef"
HF_TOKEN = "hf_secretTOKEN_abcdef123456"
RUNPOD_KEY = "rp_podkey_0123456789"
POD_ID = "pod-abc123"
ACCELERATE = "accelerate launch --num_cpu_threads_per_process 1"
BASE_MODEL = b"fake-base-model-weights " * 4096


def make_spec(
    *,
    steps: int = 12,
    zip_bytes: bytes,
    deadline_in: float = 600.0,
    model_sha: str | None = None,
    prompts: str = "",
    budget_stop_in: float | None = None,
    unattended_stop_s: float = 0.0,
) -> JobSpec:
    return JobSpec(
        job_id=7,
        model_family="sd15",
        base_model=BaseModelSource(
            kind="hf",
            repo="someone/base",
            filename="base.safetensors",
            sha256=model_sha if model_sha is not None else hashlib.sha256(BASE_MODEL).hexdigest(),
        ),
        config_toml=STANDIN_CONFIG_TOML.format(steps=steps, save_every=6),
        dataset_toml=STANDIN_DATASET_TOML,
        prompts_txt=prompts or "ohwx man, portrait --w 256 --h 256 --d 1\nohwx man, beach --w 256 --h 256\n",
        total_steps=steps,
        dataset_sha256=hashlib.sha256(zip_bytes).hexdigest(),
        deadline_unix=time.time() + deadline_in,
        budget_stop_unix=0.0 if budget_stop_in is None else time.time() + budget_stop_in,
        unattended_stop_s=unattended_stop_s,
    )


@dataclass
class Stubs:
    """Hugging Face + RunPod GraphQL stand-ins with request recorders."""

    base_url: str = ""
    hf_requests: list[dict[str, str]] = field(default_factory=list)
    graphql: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def stubs() -> AsyncIterator[Stubs]:
    record = Stubs()

    async def hf_file(request: web.Request) -> web.StreamResponse:
        record.hf_requests.append(dict(request.headers))
        if request.headers.get("Authorization") != f"Bearer {HF_TOKEN}":
            return web.Response(status=401, text="unauthorized")
        if request.match_info["path"] != "someone/base/resolve/main/base.safetensors":
            return web.Response(status=404)
        data = BASE_MODEL
        ranged = request.headers.get("Range")
        if ranged:
            start = int(ranged.removeprefix("bytes=").split("-")[0])
            return web.Response(
                status=206,
                body=data[start:],
                headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
            )
        return web.Response(body=data)

    async def graphql(request: web.Request) -> web.Response:
        body = await request.json()
        record.graphql.append({"query": body["query"], "auth": request.headers.get("Authorization")})
        if request.headers.get("Authorization") != f"Bearer {RUNPOD_KEY}":
            return web.Response(status=401)
        return web.json_response({"data": {"podTerminate": None}})

    app = web.Application()
    app.router.add_post("/graphql", graphql)
    app.router.add_get("/hf/{path:.+}", hf_file)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    record.base_url = f"http://127.0.0.1:{port}"
    yield record
    await runner.cleanup()


@dataclass
class Worker:
    proc: asyncio.subprocess.Process
    url: str
    work_dir: Path
    session: aiohttp.ClientSession
    spec: JobSpec

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    async def status(self) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/status", headers=self.auth) as response:
            assert response.status == 200
            return await response.json()

    async def upload(self, data: bytes, sha: str | None = None) -> aiohttp.ClientResponse:
        headers = {**self.auth, "X-Content-SHA256": sha or hashlib.sha256(data).hexdigest()}
        async with self.session.put(f"{self.url}/dataset", data=data, headers=headers) as response:
            await response.read()
            return response

    async def wait_for(self, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = await self.status()
            if predicate(status):
                return status
            await asyncio.sleep(0.1)
        raise AssertionError(f"condition not reached; last status: {json.dumps(status)[:3000]}")

    async def wait_state(self, *states: str, timeout: float = 60.0) -> dict[str, Any]:
        return await self.wait_for(lambda s: s["state"] in states, timeout)


@pytest.fixture
async def start_worker(tmp_path: Path, stubs: Stubs) -> AsyncIterator[Any]:
    started: list[Worker] = []
    session = aiohttp.ClientSession()

    async def start(
        spec: JobSpec, extra_env: dict[str, str] | None = None, cache_dir: Path | None = None
    ) -> Worker:
        work = tmp_path / f"work{len(started)}"
        port_file = tmp_path / f"port{len(started)}"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "LORAOPS_JOB_SPEC": spec.to_env(),
            "LORAOPS_WORKER_TOKEN": TOKEN,
            "LORAOPS_HF_BASE_URL": f"{stubs.base_url}/hf",
            "HF_TOKEN": HF_TOKEN,
            # The stand-in in its accelerate-launch role, so failures look as they do in the pod.
            "LORAOPS_TRAINER_CMD": f"{sys.executable} -m sim.sdscripts {ACCELERATE}",
            "LORAOPS_SD_SCRIPTS_DIR": "/opt/sd-scripts",
            "LORAOPS_SCAN_SECONDS": "0.2",
            "RUNPOD_POD_ID": POD_ID,
            "RUNPOD_API_KEY": RUNPOD_KEY,
            "RUNPOD_API_BASE_URL": stubs.base_url,
            "SDSTANDIN_STEP_SECONDS": "0.02",
            **install_driver(tmp_path / "driver", ["NVIDIA RTX A5000"]),  # the pod's GPU
            **(extra_env or {}),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--work-dir",
            str(work),
            "--cache-dir",
            str(cache_dir or tmp_path / "cache"),
            env=env,
            cwd=str(REPO_ROOT),
        )
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert proc.returncode is None, "worker exited during start-up"
            assert time.monotonic() < deadline, "worker did not start"
            await asyncio.sleep(0.05)
        worker = Worker(proc, f"http://127.0.0.1:{port_file.read_text()}", work, session, spec)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.returncode is None:
            worker.proc.kill()
            await worker.proc.wait()
    await session.close()


def with_deadline(spec: JobSpec, seconds: float) -> JobSpec:
    return replace(spec, deadline_unix=time.time() + seconds)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
