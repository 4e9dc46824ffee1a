"""A small Hugging Face Hub file server: ``/{repo}/resolve/{revision}/{filename}`` as the worker fetches it.

What the real Hub does and this one imitates:

- ``GET`` (and ``HEAD``) ``/{owner}/{name}/resolve/{revision}/{path}`` answers ``302 Found`` with a
  ``Location`` on its CDN (here ``/cdn/{sha256}`` on the same host), carrying ``ETag``,
  ``X-Repo-Commit`` and ``X-Linked-Size``; the CDN serves the bytes with ``Accept-Ranges: bytes`` and
  honours ``Range: bytes=N-`` (206, or 416 past the end), which is how interrupted downloads resume.
- Gated or private repos (``token`` given): no ``Authorization: Bearer`` → 401, a wrong token → 401
  (``Invalid credentials in Authorization header``); the CDN link itself is not checked (it is signed
  on the real Hub).
- An unknown repo or file → 404 with ``X-Error-Code: EntryNotFound`` / ``RepoNotFound``.

Files are deterministic bytes derived from ``repo/filename`` (``file_bytes``), unless ``files`` pins
some; ``only_known=True`` makes every other path a 404. Every request is recorded in ``requests``, and
``fail_next(status)`` makes the next resolve answer ``status`` (a 5xx the client should retry).
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def file_bytes(repo: str, filename: str, size: int = 64 * 1024) -> bytes:
    """The deterministic content served for ``repo/filename`` (a sha256 chain, ``size`` bytes long)."""
    seed = f"{repo}/{filename}".encode()
    blocks = []
    block = hashlib.sha256(seed).digest()
    while len(blocks) * len(block) < size:
        blocks.append(block)
        block = hashlib.sha256(block).digest()
    return b"".join(blocks)[:size]


@dataclass(frozen=True)
class HubRequest:
    method: str
    path: str
    authorization: str | None
    range: str | None
    status: int


class HuggingFaceSim:
    """Start with ``await hub.start()`` (returns the base URL for ``LORAOPS_HF_BASE_URL``)."""

    def __init__(
        self,
        *,
        token: str | None = None,
        files: Mapping[str, bytes] | None = None,
        only_known: bool = False,
        size: int = 64 * 1024,
    ) -> None:
        self.token = token
        self.files: dict[str, bytes] = dict(files or {})  # "owner/name/filename" → bytes
        self.only_known = only_known
        self.size = size
        self.requests: list[HubRequest] = []
        self._failures: deque[int] = deque()
        self._by_sha: dict[str, bytes] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HuggingFaceSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def content(self, repo: str, filename: str) -> bytes:
        """What ``/{repo}/resolve/main/{filename}`` serves."""
        key = f"{repo}/{filename}"
        return self.files[key] if key in self.files else file_bytes(repo, filename, self.size)

    def sha256(self, repo: str, filename: str) -> str:
        return hashlib.sha256(self.content(repo, filename)).hexdigest()

    def fail_next(self, status: int = 503, times: int = 1) -> None:
        self._failures.extend([status] * times)

    def downloads(self) -> list[HubRequest]:
        """Successful CDN reads (200/206)."""
        return [r for r in self.requests if r.path.startswith("/cdn/") and r.status in (200, 206)]

    # ------------------------------------------------------------------ handlers

    def _record(self, request: web.Request, status: int) -> None:
        self.requests.append(
            HubRequest(
                request.method,
                request.path,
                request.headers.get("Authorization"),
                request.headers.get("Range"),
                status,
            )
        )

    def _error(
        self, request: web.Request, status: int, message: str, code: str | None = None
    ) -> web.Response:
        self._record(request, status)
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        return web.json_response({"error": message}, status=status, headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return self._error(request, 405, "Method not allowed")
        if request.path.startswith("/cdn/"):
            return self._cdn(request)
        match = _RESOLVE.match(request.path)
        if match is None:
            return self._error(request, 404, "Repository not found", "RepoNotFound")
        if self._failures:
            return self._error(request, self._failures.popleft(), "Service unavailable")
        if self.token is not None:
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.token}":
                message = (
                    "Invalid credentials in Authorization header"
                    if auth
                    else "Access to this repository is restricted. You must be authenticated."
                )
                return self._error(request, 401, message, "GatedRepo")
        repo, filename = match["repo"], match["filename"]
        if self.only_known and f"{repo}/{filename}" not in self.files:
            return self._error(request, 404, "Entry not found", "EntryNotFound")
        data = self.content(repo, filename)
        sha = hashlib.sha256(data).hexdigest()
        self._by_sha[sha] = data
        self._record(request, 302)
        commit = hashlib.sha1(repo.encode()).hexdigest()  # a fake commit id, not security
        raise web.HTTPFound(
            f"/cdn/{sha}",
            headers={
                "ETag": f'"{sha}"',
                "X-Repo-Commit": commit,
                "X-Linked-Size": str(len(data)),
                "X-Linked-Etag": f'"{sha}"',
            },
        )

    def _cdn(self, request: web.Request) -> web.StreamResponse:
        data = self._by_sha.get(request.path.removeprefix("/cdn/"))
        if data is None:
            return self._error(request, 404, "Not found")
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        wanted = request.headers.get("Range")
        if wanted:
            match = _RANGE.match(wanted.strip())
            if match is None:
                return self._error(request, 416, "Bad range")
            start = int(match[1])
            end = int(match[2]) if match[2] else len(data) - 1
            if start >= len(data):
                self._record(request, 416)
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            end = min(end, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._record(request, 206)
            body = data[start : end + 1] if request.method == "GET" else b""
            return web.Response(
                status=206, body=body, headers=headers, content_type="application/octet-stream"
            )
        self._record(request, 200)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=200, headers=headers)
        return web.Response(body=data, headers=headers, content_type="application/octet-stream")
