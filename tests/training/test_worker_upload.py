"""The dataset upload against the edge RunPod's proxy really has: a body limit and a 100 s cut.

A small aiohttp server stands in for proxy and worker together: it answers 413 above its body limit,
cuts one part with 524 (Cloudflare's timeout page) after storing nothing, and otherwise speaks the
worker's parts protocol (``worker/app.py``). The client must end with the exact bytes, in parts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.training.worker_client import MIN_UPLOAD_PART, IntegrityError, WorkerClient
from worker.protocol import SHA256_HEADER

TOKEN = "upload-test-token-0123456789"
RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass
class Edge:
    limit: int
    cut_once_at: int | None = None  # the first part starting here is cut (524)
    received: bytearray = field(default_factory=bytearray)
    statuses: list[int] = field(default_factory=list)

    async def put(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, payload = self._answer(request, body)
        self.statuses.append(status)
        if status in (413, 524):
            return web.Response(status=status, text="<html>edge</html>", content_type="text/html")
        return web.json_response(payload, status=status)

    def _answer(self, request: web.Request, body: bytes) -> tuple[int, dict[str, object]]:
        if len(body) > self.limit:
            return 413, {}
        match = RANGE.fullmatch(request.headers.get("Content-Range", ""))
        if match is None:
            self.received[:] = body
            return self._finish(request)
        first, last, total = (int(g) for g in match.groups())
        if first == self.cut_once_at:
            self.cut_once_at = None
            return 524, {}
        if first != len(self.received):
            return 409, {"received": len(self.received)}
        self.received += body
        if last + 1 < total:
            return 202, {"received": len(self.received), "total": total}
        return self._finish(request)

    def _finish(self, request: web.Request) -> tuple[int, dict[str, object]]:
        if hashlib.sha256(self.received).hexdigest() != request.headers[SHA256_HEADER]:
            self.received.clear()
            return 400, {"error": "sha256 mismatch"}
        return 201, {"ok": True}

    async def progress(self, _request: web.Request) -> web.Response:
        return web.json_response({"received": len(self.received), "total": None, "complete": False})


@pytest.fixture
async def served() -> AsyncIterator[tuple[Edge, str, aiohttp.ClientSession]]:
    edge = Edge(limit=4 * MIN_UPLOAD_PART)
    app = web.Application(client_max_size=1 << 30)
    app.router.add_put("/dataset", edge.put)
    app.router.add_get("/dataset", edge.progress)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    async with aiohttp.ClientSession() as http:
        yield edge, f"http://127.0.0.1:{runner.addresses[0][1]}", http
    await runner.cleanup()


async def test_a_large_dataset_is_halved_on_413_and_resumed_after_a_cut(
    served: tuple[Edge, str, aiohttp.ClientSession], tmp_path: Path
) -> None:
    edge, url, http = served
    data = bytes(range(256)) * (10 * MIN_UPLOAD_PART // 256)  # ten smallest parts' worth
    path = tmp_path / "dataset.zip"
    path.write_bytes(data)
    # 413 for the whole file and for halves; quarters pass; the third quarter is cut once (524).
    edge.cut_once_at = 5 * MIN_UPLOAD_PART
    client = WorkerClient(http, url, TOKEN, upload_part_size=16 * MIN_UPLOAD_PART)
    assert await client.upload_dataset(path, hashlib.sha256(data).hexdigest()) is True
    assert bytes(edge.received) == data
    assert edge.statuses[:3] == [413, 413, 202] and 524 in edge.statuses and edge.statuses[-1] == 201


async def test_a_wrong_hash_after_the_last_part_is_an_integrity_error(
    served: tuple[Edge, str, aiohttp.ClientSession], tmp_path: Path
) -> None:
    _edge, url, http = served
    path = tmp_path / "dataset.zip"
    path.write_bytes(b"x" * (6 * MIN_UPLOAD_PART))
    client = WorkerClient(http, url, TOKEN, upload_part_size=2 * MIN_UPLOAD_PART)
    with pytest.raises(IntegrityError):
        await client.upload_dataset(path, "0" * 64)
