"""The bot's client for the in-pod worker's HTTP API (``worker/protocol.py``).

The worker sits behind RunPod's public proxy, which cuts every request at 100 s: each call here has
a total timeout well under that, and files come down in HTTP Range chunks, each its own short
request, verified by size and sha256 before they enter the blob store. Every call but ``/health``
carries the job's bearer token; the token is never logged.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import aiohttp
from yarl import URL

from bot.retry import TRANSIENT_HTTP_STATUSES, WORKER_DATASET_PARTS, WORKER_DOWNLOAD_CHUNK, RetryLater
from storage.blobs import BlobStore
from worker.protocol import PROTOCOL_VERSION, SHA256_HEADER, FileInfo, WorkerStatus

log = logging.getLogger(__name__)

FileKind = Literal["samples", "checkpoints"]

DEFAULT_TIMEOUT_S = 30.0
UPLOAD_TIMEOUT_S = 90.0  # still under the proxy's 100 s
DEFAULT_CHUNK = 8 * 1024 * 1024
# Datasets go up in parts of at most this: under Cloudflare's 100 MB request body limit in front of
# RunPod's proxy, and a part takes well under 100 s at a few MB/s. Halved on 413 or a cut request.
DEFAULT_UPLOAD_PART = 64 * 1024 * 1024
MIN_UPLOAD_PART = 16 * 1024


class WorkerError(Exception):
    """The worker could not do what was asked."""


class WorkerUnavailableError(WorkerError, RetryLater):
    """Not reachable right now (connection refused, proxy 502/503/524, timeout): try again later."""


class WorkerAuthError(WorkerError):
    """The worker refused our bearer token (401/403)."""


class WorkerProtocolError(WorkerError):
    """The worker answered something this client does not understand."""


class IntegrityError(WorkerError):
    """Bytes did not match their announced size or sha256."""


class WorkerClient:
    """One job's worker. Cheap to build; shares the caller's ``aiohttp.ClientSession``."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        token: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        chunk_size: int = DEFAULT_CHUNK,
        upload_part_size: int = DEFAULT_UPLOAD_PART,
    ) -> None:
        self._http = http
        self._base = URL(base_url.rstrip("/"))
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=min(timeout_s, 95.0))
        self._chunk_size = chunk_size
        self._part_size = max(MIN_UPLOAD_PART, upload_part_size)

    def __repr__(self) -> str:  # never show the token
        return f"WorkerClient({str(self._base)!r})"

    def _url(self, *parts: str) -> URL:
        url = self._base
        for part in parts:
            url = url / part
        return url

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._token}"}
        if extra:
            headers.update(extra)
        return headers

    async def _request(
        self,
        method: str,
        url: URL,
        *,
        auth: bool = True,
        headers: dict[str, str] | None = None,
        data: Any = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, dict[str, str], bytes]:
        all_headers = self._headers(headers) if auth else dict(headers or {})
        try:
            async with self._http.request(
                method, url, headers=all_headers, data=data, timeout=client_timeout or self._timeout
            ) as response:
                body = await response.read()
                status = response.status
                response_headers = dict(response.headers)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise WorkerUnavailableError(f"{method} {url.path}: {type(exc).__name__}") from exc
        if status in (401, 403):
            raise WorkerAuthError(f"{method} {url.path}: the worker refused the token ({status})")
        if status in TRANSIENT_HTTP_STATUSES:
            raise WorkerUnavailableError(f"{method} {url.path}: HTTP {status}")
        content_type = next((v for k, v in response_headers.items() if k.lower() == "content-type"), "")
        if status == 404 and content_type.startswith("text/html"):
            # The proxy's own page, not the worker's answer: no pod (or port) behind this address any
            # more. The caller asks RunPod whether the pod still exists.
            raise WorkerUnavailableError(f"{method} {url.path}: the RunPod proxy has no such pod (404)")
        if status not in ok:
            raise WorkerProtocolError(f"{method} {url.path}: HTTP {status}: {body[:200]!r}")
        return status, response_headers, body

    async def _json(self, method: str, *parts: str, auth: bool = True) -> dict[str, Any]:
        _status, _headers, body = await self._request(method, self._url(*parts), auth=auth)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise WorkerProtocolError(f"{method} /{'/'.join(parts)}: not JSON") from exc
        if not isinstance(data, dict):
            raise WorkerProtocolError(f"{method} /{'/'.join(parts)}: not a JSON object")
        return data

    async def health(self) -> bool:
        """True when the worker answers ``/health`` with our protocol version."""
        try:
            data = await self._json("GET", "health", auth=False)
        except WorkerError:
            return False
        return bool(data.get("ok")) and data.get("protocol") == PROTOCOL_VERSION

    async def status(self) -> WorkerStatus:
        data = await self._json("GET", "status")
        try:
            status = WorkerStatus.from_json(data)
        except (TypeError, KeyError, ValueError) as exc:
            raise WorkerProtocolError(f"GET /status: unexpected shape: {exc}") from exc
        if status.protocol != PROTOCOL_VERSION:
            raise WorkerProtocolError(f"worker speaks protocol {status.protocol}, not {PROTOCOL_VERSION}")
        return status

    async def upload_dataset(self, path: Path, sha256: str) -> bool:
        """PUT the snapshot zip. True when stored now, False when the worker already had it (409).

        RunPod's proxy refuses bodies over its limit (413) and cuts requests at 100 s, so a zip larger
        than one part goes in parts (``Content-Range``), each a short request; a part the proxy still
        refuses or cuts is halved. After an interruption the upload resumes where the worker's bytes
        end (``GET /dataset``). A 400 means the worker computed a different sha256:
        :class:`IntegrityError`.
        """
        size = await asyncio.to_thread(lambda: path.stat().st_size)
        part = self._part_size
        if size <= part:
            status, body = await self._put_dataset(sha256, await asyncio.to_thread(path.read_bytes))
            if status != 413:
                return self._upload_outcome(status, body)
            part = max(MIN_UPLOAD_PART, size // 2)
        return await self._upload_in_parts(path, sha256, size, part)

    async def _upload_in_parts(self, path: Path, sha256: str, size: int, part: int) -> bool:
        offset = await self._dataset_received()
        failures = 0
        while True:
            last = min(offset + part, size) - 1
            data = await asyncio.to_thread(_read_range, path, offset, last - offset + 1)
            try:
                status, body = await self._put_dataset(
                    sha256, data, content_range=f"bytes {offset}-{last}/{size}"
                )
            except WorkerUnavailableError:
                failures += 1
                if failures >= WORKER_DATASET_PARTS.attempts:
                    raise
                part = max(MIN_UPLOAD_PART, part // 2)  # a 524: the part took too long
                offset = await self._dataset_received()
                continue
            if status == 413:
                if part <= MIN_UPLOAD_PART:
                    raise WorkerProtocolError("the proxy refuses even the smallest dataset part (413)")
                part = max(MIN_UPLOAD_PART, part // 2)
                continue
            if status == 202:
                offset = last + 1
                continue
            if status == 409:
                info = _json_object(body)
                if info.get("complete"):
                    return False
                received = info.get("received")
                if not isinstance(received, int):
                    raise WorkerProtocolError(f"PUT /dataset: 409 without a received offset: {body[:200]!r}")
                offset = received
                continue
            return self._upload_outcome(status, body)

    async def _put_dataset(
        self, sha256: str, data: bytes, *, content_range: str | None = None
    ) -> tuple[int, bytes]:
        headers = {SHA256_HEADER: sha256, "Content-Type": "application/zip"}
        if content_range is not None:
            headers["Content-Range"] = content_range
        status, _headers, body = await self._request(
            "PUT",
            self._url("dataset"),
            headers=headers,
            data=data,
            client_timeout=aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT_S),
            ok=(200, 201, 202, 400, 409, 413),
        )
        return status, body

    async def _dataset_received(self) -> int:
        """Bytes of a dataset sent in parts the worker already has (0 for a worker without parts)."""
        try:
            data = await self._json("GET", "dataset")
        except WorkerProtocolError:
            return 0
        received = data.get("received")
        return received if isinstance(received, int) and received >= 0 else 0

    @staticmethod
    def _upload_outcome(status: int, body: bytes) -> bool:
        if status == 400:
            raise IntegrityError(f"the worker rejected the dataset zip: HTTP 400: {body[:200]!r}")
        if status == 413:
            raise WorkerProtocolError("the proxy refused the dataset upload as too large (413)")
        return status in (200, 201)

    async def cancel(self) -> None:
        await self._request("POST", self._url("cancel"), ok=(200, 202, 204, 409))

    async def ack(self) -> None:
        await self._request("POST", self._url("ack"), ok=(200, 202, 204, 409))

    async def download(self, kind: FileKind, info: FileInfo, blobs: BlobStore) -> str:
        """Fetch one file in Range chunks, verify size and sha256, store it; returns its sha256.

        Already-stored blobs are not fetched again (the store is content-addressed).
        """
        if blobs.exists(info.sha256):
            return info.sha256
        incoming = blobs.root / ".incoming"
        await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=incoming, prefix=".dl-")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            digest = await self._download_to(kind, info, tmp)
            if digest != info.sha256:
                raise IntegrityError(f"{kind}/{info.name}: sha256 {digest} != announced {info.sha256}")
            stored = await asyncio.to_thread(blobs.put_file, tmp)
            if stored != info.sha256:  # the file changed under us: refuse rather than mislabel
                raise IntegrityError(f"{kind}/{info.name}: stored bytes hash to {stored}")
            return stored
        finally:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)

    async def _download_to(self, kind: FileKind, info: FileInfo, target: Path) -> str:
        url = self._url("files", kind, info.name)
        hasher = hashlib.sha256()
        offset = 0
        with open(target, "wb") as handle:  # noqa: ASYNC230 - chunk writes go through to_thread below
            while offset < info.size or (info.size == 0 and offset == 0):
                end = min(offset + self._chunk_size, info.size) - 1
                chunk = await WORKER_DOWNLOAD_CHUNK.call(
                    functools.partial(self._fetch_range, url, offset, end, info),
                    what=f"downloading {kind}/{info.name}",
                )
                if not chunk and info.size == 0:
                    break
                hasher.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
                offset += len(chunk)
        if offset != info.size:
            raise IntegrityError(f"{kind}/{info.name}: got {offset} bytes, expected {info.size}")
        return hasher.hexdigest()

    async def _fetch_range(self, url: URL, start: int, end: int, info: FileInfo) -> bytes:
        if info.size == 0:
            _status, headers, body = await self._request("GET", url)
            return body
        status, headers, body = await self._request(
            "GET", url, headers={"Range": f"bytes={start}-{end}"}, ok=(200, 206)
        )
        announced = headers.get(SHA256_HEADER)
        if announced and announced != info.sha256:
            raise IntegrityError(
                f"{url.path}: worker announces sha256 {announced}, status said {info.sha256}"
            )
        if status == 200:
            # Range ignored: the whole file came back. Use the slice we asked for.
            if len(body) != info.size:
                raise IntegrityError(f"{url.path}: full body of {len(body)} bytes, expected {info.size}")
            return body[start : end + 1]
        if len(body) != end - start + 1:
            raise IntegrityError(f"{url.path}: range {start}-{end} returned {len(body)} bytes")
        return body


def _read_range(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
