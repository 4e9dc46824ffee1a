"""Turning candidate files into dataset images: download, unpack, decode, dedupe, store, record.

Work happens in chunks so memory stays bounded, progress can be reported, and each chunk is one
short transaction. Decoding and hashing run in threads (``asyncio.to_thread``); the event loop only
coordinates. One ingest at a time per dataset (an in-process lock), so position numbers are assigned
in order and duplicates within concurrent gatherings are still caught.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.datasets.dedupe import DuplicateIndex
from bot.datasets.imaging import ImageFacts, ImageRejectedError, NotAnImageError, analyse
from bot.datasets.report import (
    AddedImage,
    DuplicateFile,
    IngestReport,
    ProgressCallback,
    RejectedFile,
    SkippedFile,
    notify,
)
from bot.datasets.sniff import has_image_extension
from bot.datasets.zips import ZipRefusedError, expand_zip, is_zip
from bot.errors import NotFoundError, UserError
from bot.locks import KeyedLocks
from bot.text import mib
from storage import datasets as store
from storage.blobs import BlobStore
from storage.db import unit_of_work

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NamedBytes:
    """A file handed to us with its name (a Discord attachment, an uploaded zip…)."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Candidate:
    """One file that may become a dataset image. Either ``data`` or ``fetch`` is set."""

    name: str
    source_kind: str  # attachment | url | zip | cloudinary
    source_ref: str
    data: bytes | None = None
    fetch: Callable[[], Awaitable[bytes]] | None = None
    tags: tuple[str, ...] = ()
    context: dict[str, str] = field(default_factory=dict)
    # A listed source (Cloudinary) knows its identity before download: skip known ones cheaply.
    dedupe_by_source: bool = False


@dataclass(frozen=True)
class IngestLimits:
    max_image_pixels: int = 80_000_000
    phash_threshold: int = 4
    zip_max_entries: int = 2000
    zip_max_total_bytes: int = 1024 * 1024 * 1024
    max_file_bytes: int = 50 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Any) -> IngestLimits:
        return cls(
            max_image_pixels=settings.max_image_pixels,
            phash_threshold=settings.phash_threshold,
            zip_max_entries=settings.zip_max_entries,
            zip_max_total_bytes=settings.zip_max_total_bytes,
            max_file_bytes=settings.fetch_max_bytes,
        )


@dataclass(frozen=True)
class _Ready:
    candidate: Candidate
    name: str
    source_kind: str
    source_ref: str
    data: bytes


class Ingestor:
    """Shared by every gathering: owns the per-dataset locks and the limits."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        blobs: BlobStore,
        limits: IngestLimits,
        *,
        chunk_size: int = 16,
        download_concurrency: int = 4,
        cpu_concurrency: int | None = None,
    ) -> None:
        self.sessions = sessions
        self.blobs = blobs
        self.limits = limits
        self.chunk_size = chunk_size
        self.download_concurrency = download_concurrency
        self.cpu_concurrency = cpu_concurrency or max(1, min(4, os.cpu_count() or 1))
        # Held while a dataset's positions are being assigned; other writers of images take it too.
        self.dataset_lock = KeyedLocks[int]()

    @asynccontextmanager
    async def run(
        self,
        dataset_id: int,
        *,
        added_by: int,
        source: str,
        progress: ProgressCallback | None = None,
        total: int | None = None,
    ) -> AsyncIterator[IngestRun]:
        """An ingest run for one dataset. Feed it with ``add()``; read ``report`` afterwards."""
        async with self.dataset_lock(dataset_id):
            async with self.sessions() as session:
                dataset = await store.get_dataset(session, dataset_id)
                if dataset is None:
                    raise NotFoundError(f"dataset {dataset_id} does not exist")
                rows = await store.image_index(session, dataset_id)
                name = dataset.name
            index = DuplicateIndex(self.limits.phash_threshold)
            for position, sha256, phash, kind, ref in rows:
                index.add(position, sha256, phash, f"{kind}:{ref}" if ref else None)
            run = IngestRun(
                self, dataset_id, added_by, index, IngestReport(dataset_id, name, source), progress
            )
            run.total = total
            yield run
            await notify(progress, run.report.progress("done", run.total))


class IngestRun:
    """One gathering in progress. Not shared between tasks."""

    def __init__(
        self,
        ingestor: Ingestor,
        dataset_id: int,
        added_by: int,
        index: DuplicateIndex,
        report: IngestReport,
        progress: ProgressCallback | None,
    ) -> None:
        self._ingestor = ingestor
        self.dataset_id = dataset_id
        self.added_by = added_by
        self.index = index
        self.report = report
        self.progress = progress
        self.total: int | None = None
        self._limits = ingestor.limits

    def reject(self, name: str, reason: str) -> None:
        self.report.rejected.append(RejectedFile(name, reason))

    def skip(self, name: str, reason: str) -> None:
        self.report.skipped.append(SkippedFile(name, reason))

    async def add(self, candidates: Sequence[Candidate]) -> None:
        """Process ``candidates`` in order, chunk by chunk, reporting progress after each chunk."""
        size = self._ingestor.chunk_size
        for start in range(0, len(candidates), size):
            await self._chunk(candidates[start : start + size])
            await notify(self.progress, self.report.progress("processing", self.total))

    async def _chunk(self, chunk: Sequence[Candidate]) -> None:
        pending: list[Candidate] = []
        for candidate in chunk:
            match = (
                self.index.by_source(f"{candidate.source_kind}:{candidate.source_ref}")
                if candidate.dedupe_by_source
                else None
            )
            if match is not None:
                self.report.duplicates.append(DuplicateFile(candidate.name, match.position, match.kind))
            else:
                pending.append(candidate)
        loaded = await self._download(pending)
        ready: list[_Ready] = []
        for item in loaded:
            ready.extend(await self._unpack(item))
        for start in range(0, len(ready), self._ingestor.chunk_size):
            await self._store(ready[start : start + self._ingestor.chunk_size])

    async def _download(self, candidates: list[Candidate]) -> list[_Ready]:
        limiter = asyncio.Semaphore(self._ingestor.download_concurrency)

        async def one(candidate: Candidate) -> _Ready | None:
            if candidate.data is not None:
                data = candidate.data
            elif candidate.fetch is not None:
                async with limiter:
                    try:
                        data = await candidate.fetch()
                    except UserError as exc:
                        self.reject(candidate.name, _reason_of(exc))
                        return None
            else:
                raise ValueError("a candidate needs data or fetch")
            if len(data) > self._limits.max_file_bytes:
                self.reject(candidate.name, f"too large ({mib(len(data))})")
                return None
            return _Ready(candidate, candidate.name, candidate.source_kind, candidate.source_ref, data)

        results = await asyncio.gather(*(one(c) for c in candidates))
        return [r for r in results if r is not None]

    async def _unpack(self, item: _Ready) -> list[_Ready]:
        if not is_zip(item.data):
            return [item]
        limits = self._limits
        try:
            contents = await asyncio.to_thread(
                expand_zip,
                item.data,
                max_entries=limits.zip_max_entries,
                max_total_bytes=limits.zip_max_total_bytes,
                max_entry_bytes=limits.max_file_bytes,
            )
        except ZipRefusedError as exc:
            self.reject(item.name, str(exc))
            return []
        for path, reason in contents.rejected:
            self.reject(f"{item.name}/{path}", reason)
        for path, reason in contents.skipped:
            self.skip(f"{item.name}/{path}", reason)
        if self.total is not None:
            self.total += len(contents.members) + len(contents.rejected) + len(contents.skipped) - 1
        ref = item.source_ref or item.name
        return [
            _Ready(item.candidate, f"{item.name}/{m.name}", "zip", f"{ref}!{m.name}", m.data)
            for m in contents.members
        ]

    async def _analyse(self, items: list[_Ready]) -> list[tuple[_Ready, ImageFacts]]:
        limiter = asyncio.Semaphore(self._ingestor.cpu_concurrency)
        max_pixels = self._limits.max_image_pixels

        async def one(item: _Ready) -> tuple[_Ready, ImageFacts] | None:
            async with limiter:
                try:
                    facts = await asyncio.to_thread(analyse, item.data, max_pixels)
                except NotAnImageError as exc:
                    if has_image_extension(item.name) or item.source_kind in ("url", "cloudinary"):
                        # It claimed to be an image (by name, or by where it came from): say so loudly.
                        self.reject(item.name, f"not an image: {exc}")
                    else:
                        self.skip(item.name, f"not an image ({exc})")
                    return None
                except ImageRejectedError as exc:
                    self.reject(item.name, str(exc))
                    return None
            return item, facts

        results = await asyncio.gather(*(one(i) for i in items))
        return [r for r in results if r is not None]

    async def _store(self, items: list[_Ready]) -> None:
        analysed = await self._analyse(items)
        if not analysed:
            return
        blobs = self._ingestor.blobs
        async with unit_of_work(self._ingestor.sessions) as session:
            dataset = await store.dataset_for_update(session, self.dataset_id)
            if dataset is None:
                raise NotFoundError(f"dataset {self.dataset_id} was deleted during gathering")
            position = dataset.next_position
            new: list[tuple[_Ready, ImageFacts, int]] = []
            for item, facts in analysed:
                match = self.index.find(facts.sha256, facts.phash)
                if match is not None:
                    self.report.duplicates.append(
                        DuplicateFile(item.name, match.position, match.kind, match.distance)
                    )
                    continue
                self.index.add(position, facts.sha256, facts.phash, f"{item.source_kind}:{item.source_ref}")
                new.append((item, facts, position))
                position += 1
            if not new:
                return
            # Each put fsyncs; running them side by side overlaps the disk waits.
            await asyncio.gather(*(asyncio.to_thread(blobs.put, item.data) for item, _f, _p in new))
            for item, facts, pos in new:
                store.add_image(
                    session,
                    dataset_id=self.dataset_id,
                    position=pos,
                    subset="full",
                    sha256=facts.sha256,
                    phash=facts.phash,
                    width=facts.width,
                    height=facts.height,
                    format=facts.format,
                    byte_size=facts.byte_size,
                    source_kind=item.source_kind,
                    source_ref=item.source_ref,
                    tags=list(item.candidate.tags),
                    context=dict(item.candidate.context),
                    added_by=self.added_by,
                )
            dataset.next_position = position
        # Only after the commit: the report never claims an image that is not in the database.
        for item, facts, pos in new:
            self.report.added.append(
                AddedImage(
                    pos, item.name, facts.width, facts.height, facts.format, facts.byte_size, facts.frames
                )
            )


def _reason_of(exc: UserError) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else str(exc)
