"""Base-model download: Hugging Face file or plain URL, resumable, sha256-checked, cached.

The cache directory is normally the network volume (``/workspace/models``) so a second pod in the
same data centre skips the download. A cached file is trusted only when it verifies against the
given sha256 (or, when none is given, when it is simply there). Downloads go to a ``.part`` file
named after the pod, resume with ``Range`` after a dropped connection, and are renamed into place
only once complete and verified: several pods may share the volume, and a half-written file must
never carry the final name.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import aiohttp
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from .protocol import BaseModelSource

log = logging.getLogger(__name__)

DEFAULT_HF_BASE_URL = "https://huggingface.co"
_CHUNK = 1 << 20
# The pod shares only worker.protocol with the bot, so this is tenacity itself rather than bot.retry;
# the same library and the same shape of policy: 5 tries, waits of 1, 2, 4, 8 s.
_ATTEMPTS = 5
_DROPPED = (aiohttp.ClientError, TimeoutError, ConnectionError)


class FetchError(Exception):
    """The base model could not be obtained; the message is shown to users."""


def source_url(source: BaseModelSource, hf_base_url: str) -> str:
    if source.kind == "hf":
        return f"{hf_base_url.rstrip('/')}/{source.repo}/resolve/main/{source.filename}"
    return source.url


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


async def fetch_model(
    session: aiohttp.ClientSession,
    source: BaseModelSource,
    cache_dir: Path,
    *,
    hf_base_url: str = DEFAULT_HF_BASE_URL,
    hf_token: str | None = None,
    part_tag: str = "local",
) -> Path:
    """The verified local file for ``source`` (downloaded unless the cache already holds it)."""
    await asyncio.to_thread(cache_dir.mkdir, parents=True, exist_ok=True)
    final = cache_dir / source.local_name
    expected = source.sha256.lower() if source.sha256 else None
    if await asyncio.to_thread(final.is_file):
        if expected is None:
            log.info("base model %s: using cached file (no sha256 to check)", final.name)
            return final
        if await asyncio.to_thread(_sha256, final) == expected:
            log.info("base model %s: cached file verified", final.name)
            return final
        log.warning("base model %s: cached file does not match its sha256; downloading again", final.name)
    part = cache_dir / f".{source.local_name}.{part_tag}.part"
    url = source_url(source, hf_base_url)
    headers: dict[str, str] = {}
    if source.kind == "hf" and hf_token:
        headers["Authorization"] = f"Bearer {hf_token}"
    retrying = AsyncRetrying(  # each try resumes from the bytes the .part file holds
        stop=stop_after_attempt(_ATTEMPTS),
        wait=wait_exponential(multiplier=1, max=30),
        retry=retry_if_exception_type(_DROPPED),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    try:
        await retrying(_download, session, url, part, headers)
    except _DROPPED as exc:
        raise FetchError(f"base model download failed after {_ATTEMPTS} attempts: {exc}") from exc
    if expected is not None:
        actual = await asyncio.to_thread(_sha256, part)
        if actual != expected:
            part.unlink(missing_ok=True)
            raise FetchError(
                f"base model {source.local_name}: sha256 mismatch (got {actual[:12]}…, want {expected[:12]}…)"
            )
    os.replace(part, final)
    log.info("base model %s: downloaded", final.name)
    return final


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def _download(session: aiohttp.ClientSession, url: str, part: Path, headers: dict[str, str]) -> None:
    have = await asyncio.to_thread(_size, part)
    request_headers = dict(headers)
    if have:
        request_headers["Range"] = f"bytes={have}-"
    async with session.get(url, headers=request_headers) as response:
        if response.status == 416 and have:
            return  # the part file already holds everything
        if response.status in (401, 403):
            raise FetchError(
                f"base model download refused ({response.status}): check HF_TOKEN and the licence"
            )
        if response.status == 404:
            raise FetchError(f"base model not found (404): {url}")
        if response.status not in (200, 206):
            raise aiohttp.ClientResponseError(
                response.request_info, response.history, status=response.status, message=response.reason or ""
            )
        mode = "ab" if response.status == 206 and have else "wb"
        handle = await asyncio.to_thread(part.open, mode)
        try:
            async for block in response.content.iter_chunked(_CHUNK):
                await asyncio.to_thread(handle.write, block)
        finally:
            await asyncio.to_thread(handle.close)
        if response.content_length is not None and response.status == 200:
            size = await asyncio.to_thread(_size, part)
            if size != response.content_length:
                raise ConnectionError(f"short read: {size} of {response.content_length} bytes")
