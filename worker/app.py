"""The worker's HTTP API (see ``worker.protocol``): aiohttp, bearer-token auth, short requests only."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .intake import DatasetRejected, HashingWriter, check_dataset, unpack
from .job import TERMINAL_STATES, Job
from .protocol import PROTOCOL_VERSION, SHA256_HEADER

log = logging.getLogger(__name__)

JOB_KEY = web.AppKey("job", Job)
_BUFFER = 4 << 20  # write and hash the upload in 4 MiB pieces, in a thread
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/health":
        return await handler(request)
    job = request.app[JOB_KEY]
    expected = f"Bearer {job.settings.token}".encode()
    given = request.headers.get("Authorization", "").encode()
    # Constant-time: the proxy URL is public, so the token is the only lock.
    if not hmac.compare_digest(given, expected):
        return web.json_response(
            {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )
    job.heard_from_bot()  # only the bot holds the token: this is the bot, alive
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "protocol": PROTOCOL_VERSION})


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[JOB_KEY].status().to_json())


async def dataset_progress(request: web.Request) -> web.Response:
    """How much of a dataset sent in parts has arrived, so an interrupted upload resumes there."""
    job = request.app[JOB_KEY]
    return web.json_response(
        {"received": job.dataset_offset, "total": job.dataset_total, "complete": job.dataset_received}
    )


async def put_dataset(request: web.Request) -> web.Response:
    job = request.app[JOB_KEY]
    claimed = request.headers.get(SHA256_HEADER, "").strip().lower()
    if not claimed:
        return _error(400, f"missing {SHA256_HEADER} header")
    if claimed != job.spec.dataset_sha256.lower():
        return _error(400, "sha256 does not match the job's dataset snapshot")
    if job.dataset_received:
        return _error(409, "dataset already received", received=job.dataset_offset, complete=True)
    if job.dataset_lock.locked():
        return _error(409, "a dataset upload is in progress", received=job.dataset_offset)
    if job.state in TERMINAL_STATES:
        return _error(409, f"job is {job.state}")
    if "Content-Range" in request.headers:
        return await _put_dataset_part(request, job, claimed)
    async with job.dataset_lock:
        work = job.settings.work_dir
        await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
        zip_path = work / "dataset.zip"
        writer = await asyncio.to_thread(HashingWriter, zip_path)
        buffer = bytearray()
        try:
            async for block in request.content.iter_chunked(1 << 20):
                buffer += block
                if len(buffer) >= _BUFFER:
                    await asyncio.to_thread(writer.write, bytes(buffer))
                    buffer.clear()
            if buffer:
                await asyncio.to_thread(writer.write, bytes(buffer))
        finally:
            digest = await asyncio.to_thread(writer.close)
        return await _accept_zip(job, zip_path, claimed, digest, writer.size)


async def _accept_zip(job: Job, zip_path: Path, claimed: str, digest: str, size: int) -> web.Response:
    """The whole zip is on disk: verify, unpack and check it (the dataset lock is held)."""
    if digest != claimed:
        await asyncio.to_thread(zip_path.unlink, missing_ok=True)
        job.note(f"[worker] dataset upload rejected: sha256 mismatch ({size} bytes)")
        return _error(400, "sha256 mismatch", sha256=digest, size=size)
    work = job.settings.work_dir
    target = job.dataset_dir
    try:
        count = await asyncio.to_thread(unpack, zip_path, target)
        images = await asyncio.to_thread(check_dataset, job.spec.dataset_toml, work)
    except DatasetRejected as exc:
        await asyncio.to_thread(shutil.rmtree, target, ignore_errors=True)
        job.note(f"[worker] dataset upload rejected: {exc}")
        return _error(400, str(exc))
    finally:
        await asyncio.to_thread(zip_path.unlink, missing_ok=True)
    job.dataset_received = True
    job.dataset_offset = size
    job.dataset_ready.set()
    job.note(f"[worker] dataset received and verified: {count} files, {images} images")
    return web.json_response({"ok": True, "files": count, "sha256": digest}, status=201)


async def _put_dataset_part(request: web.Request, job: Job, claimed: str) -> web.Response:
    """One part of a dataset sent in pieces (``Content-Range: bytes a-b/total``), each a short
    request under the proxy's body and time limits. Parts come in order: a part that does not start
    where the received bytes end gets 409 with ``received``, so the sender resumes from there."""
    match = _CONTENT_RANGE.fullmatch(request.headers["Content-Range"].strip())
    if match is None:
        return _error(400, "Content-Range must be 'bytes <first>-<last>/<total>'")
    first, last, total = (int(group) for group in match.groups())
    if not first <= last < total:
        return _error(400, "Content-Range out of order")
    async with job.dataset_lock:
        if first != job.dataset_offset or (first > 0 and total != job.dataset_total):
            return _error(409, "resume where the received bytes end", received=job.dataset_offset)
        work = job.settings.work_dir
        await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
        part_path = work / "dataset.zip.part"
        expected = last - first + 1
        body = bytearray()
        async for block in request.content.iter_chunked(1 << 20):
            body += block
            if len(body) > expected:
                return _error(400, "the part is longer than its Content-Range says")
        if len(body) != expected:
            return _error(400, f"the part has {len(body)} bytes, its Content-Range says {expected}")
        await asyncio.to_thread(_append, part_path, bytes(body), truncate=first == 0)
        job.dataset_total = total
        job.dataset_offset = last + 1
        if job.dataset_offset < total:
            return web.json_response({"received": job.dataset_offset, "total": total}, status=202)
        digest, size = await asyncio.to_thread(_sha256_of, part_path)
        job.note(f"[worker] dataset received in parts: {size} bytes")
        response = await _accept_zip(job, part_path, claimed, digest, size)
        if response.status != 201:
            job.dataset_offset, job.dataset_total = 0, None  # start over
        return response


def _append(path: Path, data: bytes, *, truncate: bool) -> None:
    with path.open("wb" if truncate else "ab") as handle:
        handle.write(data)


def _sha256_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(4 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


async def get_file(request: web.Request) -> web.StreamResponse:
    job = request.app[JOB_KEY]
    found = job.artifacts.find(request.match_info["kind"], request.match_info["name"])
    if found is None:
        return _error(404, "no such file")
    path, info = found
    # FileResponse answers Range with 206 + Content-Range (416 when unsatisfiable) and streams with
    # sendfile; the header carries the whole file's hash so the bot can verify the assembled file.
    return web.FileResponse(path, headers={SHA256_HEADER: info.sha256, "Accept-Ranges": "bytes"})


async def cancel(request: web.Request) -> web.Response:
    job = request.app[JOB_KEY]
    if not await job.cancel():
        return _error(409, f"job is already {job.state}", state=job.state)
    return web.json_response({"ok": True, "state": job.state})


async def ack(request: web.Request) -> web.Response:
    job = request.app[JOB_KEY]
    await job.acknowledge()
    return web.json_response({"ok": True, "state": job.state})


def build_app(job: Job) -> web.Application:
    app = web.Application(middlewares=[_auth])
    app[JOB_KEY] = job
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_put("/dataset", put_dataset)
    app.router.add_get("/dataset", dataset_progress)
    app.router.add_get(r"/files/{kind:samples|checkpoints}/{name}", get_file)
    app.router.add_post("/cancel", cancel)
    app.router.add_post("/ack", ack)
    return app
