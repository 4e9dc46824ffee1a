"""The gathering service: every source (Cloudinary, attachments, URLs, zips) into one ingest path,
plus the contact sheets and exclude/include by position number.

A cog calls it like this::

    report = await gather.from_cloudinary(dataset_id, folder="elena", added_by=user.id, progress=edit)
    await interaction.followup.send(report.summary())
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clients.cloudinary import CloudinaryAsset, CloudinaryClient
from bot.clients.fetch import SafeFetcher
from bot.datasets.contact_sheet import PER_PAGE, SheetTile, page_count, render_page
from bot.datasets.imaging import thumbnail
from bot.datasets.ingest import Candidate, IngestLimits, Ingestor, IngestRun, NamedBytes
from bot.datasets.positions import position_list
from bot.datasets.report import IngestReport, ProgressCallback, notify
from bot.errors import InvalidInputError, NotFoundError, ServiceUnavailableError, UserError
from bot.text import plain
from storage import datasets as store
from storage.blobs import BlobNotFoundError, BlobStore
from storage.db import unit_of_work

MAX_URLS = 20
MAX_POSITIONS = 1000


@dataclass
class ExclusionResult:
    """What ``exclude``/``include`` changed."""

    changed: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)  # already in the requested state
    missing: list[int] = field(default_factory=list)  # no image with that number

    def summary(self, verb: str) -> str:
        parts = []
        if self.changed:
            parts.append(f"{verb} {position_list(self.changed)}")
        if self.unchanged:
            parts.append(f"already {verb}: {position_list(self.unchanged)}")
        if self.missing:
            parts.append(f"no such image: {position_list(self.missing)}")
        return "; ".join(parts) + "." if parts else "Nothing to do."


def parse_positions(text: str) -> list[int]:
    """``"1-5, 8 12"`` → ``[1, 2, 3, 4, 5, 8, 12]``. Raises ``InvalidInputError`` with the bad part."""
    positions: set[int] = set()
    for part in re.split(r"[,\s]+", text.strip().replace("#", "")):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:\s*[-–]\s*(\d+))?", part)
        if not match:
            raise InvalidInputError(f"“{part}” is not an image number or a range like 3-7")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if last < first:
            first, last = last, first
        if last - first >= MAX_POSITIONS or len(positions) > MAX_POSITIONS:
            raise InvalidInputError(f"at most {MAX_POSITIONS} numbers at once")
        positions.update(range(first, last + 1))
    if not positions:
        raise InvalidInputError("give image numbers, e.g. 3, 7-9")
    return sorted(positions)


class DatasetGatherService:
    """Gathering, contact sheets and exclusions for datasets (``bot.datasets.manage`` delegates here)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        blobs: BlobStore,
        fetcher: SafeFetcher,
        *,
        cloudinary: CloudinaryClient | None = None,
        limits: IngestLimits | None = None,
        chunk_size: int = 16,
    ) -> None:
        self.sessions = sessions
        self.blobs = blobs
        self.fetcher = fetcher
        self.cloudinary = cloudinary
        self.ingestor = Ingestor(sessions, blobs, limits or IngestLimits(), chunk_size=chunk_size)

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        sessions: async_sessionmaker[AsyncSession],
        blobs: BlobStore,
        fetcher: SafeFetcher | None = None,
    ) -> DatasetGatherService:
        cloudinary = None
        if settings.cloudinary_url is not None:
            cloudinary = CloudinaryClient.from_url(settings.cloudinary_url.get_secret_value())
        return cls(
            sessions,
            blobs,
            fetcher or SafeFetcher.from_settings(settings),
            cloudinary=cloudinary,
            limits=IngestLimits.from_settings(settings),
        )

    # -- sources -----------------------------------------------------------------------------------------

    async def from_cloudinary(
        self,
        dataset_id: int,
        *,
        folder: str | None = None,
        tag: str | None = None,
        query: str | None = None,
        added_by: int,
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Gather every image of a Cloudinary asset folder, tag, or Search expression (exactly one).

        Pages are ingested as they arrive. If the listing fails before anything was listed, the error
        is raised (``ServiceUnavailableError`` & co., with a clear message); if it fails later, what was
        gathered is kept and ``report.stopped_early`` says why the rest is missing.
        """
        client = self.cloudinary
        if client is None:
            raise ServiceUnavailableError("Cloudinary is not configured (set CLOUDINARY_URL)")
        chosen = [
            (k, v.strip()) for k, v in (("folder", folder), ("tag", tag), ("query", query)) if v and v.strip()
        ]
        if len(chosen) != 1:
            raise InvalidInputError("choose exactly one of folder, tag or query")
        kind, value = chosen[0]
        if kind == "folder":
            label = f"Cloudinary folder “{plain(value, 80)}”"  # typed text: shown, never markup
            pages = client.iter_asset_folder(value)
        elif kind == "tag":
            label = f"Cloudinary tag “{plain(value, 80)}”"  # typed text: shown, never markup
            pages = client.iter_tag(value)
        else:
            label = f"Cloudinary search “{plain(value, 80)}”"  # typed text: shown, never markup
            pages = client.iter_search(value)

        async with self.ingestor.run(dataset_id, added_by=added_by, source=label, progress=progress) as run:
            listed = await self._ingest_pages(run, pages)
            if kind == "folder" and listed == 0 and run.report.stopped_early is None:
                # Fixed-folder accounts (before June 2024) have folders in the public_id, not asset folders.
                listed = await self._ingest_pages(run, client.iter_prefix(value.strip("/") + "/"))
                if listed:
                    run.report.notes.append("(found by public_id prefix: a fixed-folder account)")
            if listed == 0 and run.report.stopped_early is None:
                run.report.notes.append(f"Nothing found in {label}.")
        return run.report

    async def _ingest_pages(self, run: IngestRun, pages: Any) -> int:
        listed = 0
        run.total = 0
        iterator = pages.__aiter__()
        while True:
            await notify(run.progress, run.report.progress("listing", run.total))
            try:
                page: list[CloudinaryAsset] = await iterator.__anext__()
            except StopAsyncIteration:
                return listed
            except UserError as exc:
                if run.report.seen == 0:  # nothing gathered yet: a plain error reads best
                    raise
                run.report.stopped_early = str(exc)
                return listed
            listed += len(page)
            run.total = (run.total or 0) + len(page)
            candidates = []
            for asset in page:
                if asset.resource_type != "image":
                    run.skip(asset.display_name, f"a {asset.resource_type} asset, not an image")
                    continue
                candidates.append(self._cloudinary_candidate(asset))
            await run.add(candidates)

    def _cloudinary_candidate(self, asset: CloudinaryAsset) -> Candidate:
        return Candidate(
            name=asset.display_name,
            source_kind="cloudinary",
            source_ref=asset.source_ref,
            fetch=self._download(asset.secure_url),
            tags=asset.tags,
            context=dict(asset.context),
            dedupe_by_source=True,
        )

    async def from_attachments(
        self,
        dataset_id: int,
        items: Sequence[NamedBytes | tuple[str, bytes]],
        *,
        added_by: int,
        progress: ProgressCallback | None = None,
        source: str | None = None,
    ) -> IngestReport:
        """Gather files handed over directly (Discord attachments, the "Add to dataset" menu).

        ``items`` are ``NamedBytes`` or ``(filename, bytes)`` pairs. Zips among them are unpacked.
        ``source`` labels the report (default "N attachments").
        """
        items = [item if isinstance(item, NamedBytes) else NamedBytes(*item) for item in items]
        if not items:
            raise InvalidInputError("no files to add")
        label = source or (f"{len(items)} attachment" + ("" if len(items) == 1 else "s"))
        candidates = [
            Candidate(name=item.name, source_kind="attachment", source_ref=item.name, data=item.data)
            for item in items
        ]
        async with self.ingestor.run(
            dataset_id, added_by=added_by, source=label, progress=progress, total=len(candidates)
        ) as run:
            await run.add(candidates)
        return run.report

    async def from_urls(
        self,
        dataset_id: int,
        urls: Sequence[str] | str,
        *,
        added_by: int,
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Gather images (or zips of images) from http(s) links, one per line/space if a string."""
        if isinstance(urls, str):
            urls = urls.split()
        urls = [u.strip().strip("<>") for u in urls if u.strip()]
        if not urls:
            raise InvalidInputError("give at least one http(s) link")
        if len(urls) > MAX_URLS:
            raise InvalidInputError(f"at most {MAX_URLS} links at once")
        label = "1 link" if len(urls) == 1 else f"{len(urls)} links"
        candidates = [self._url_candidate(url) for url in urls]
        async with self.ingestor.run(
            dataset_id, added_by=added_by, source=label, progress=progress, total=len(candidates)
        ) as run:
            await run.add(candidates)
        return run.report

    def _url_candidate(self, url: str) -> Candidate:
        return Candidate(name=url, source_kind="url", source_ref=url, fetch=self._download(url))

    def _download(self, url: str) -> Callable[[], Awaitable[bytes]]:
        """The candidate's fetch: the bytes at ``url``, through the safe fetcher, when the ingestor asks."""

        async def fetch() -> bytes:
            return (await self.fetcher.fetch(url)).data

        return fetch

    # -- curation by number --------------------------------------------------------------------------------

    async def exclude(self, dataset_id: int, positions: Iterable[int], reason: str) -> ExclusionResult:
        """Exclude images by position number (kept, but left out of training), with a reason."""
        reason = " ".join(reason.split())
        if not reason:
            raise InvalidInputError("say why these images are excluded")
        return await self._set_excluded(dataset_id, positions, True, reason[:200])

    async def include(self, dataset_id: int, positions: Iterable[int]) -> ExclusionResult:
        """Bring excluded images back."""
        return await self._set_excluded(dataset_id, positions, False, None)

    async def _set_excluded(
        self, dataset_id: int, positions: Iterable[int], excluded: bool, reason: str | None
    ) -> ExclusionResult:
        wanted = sorted(set(positions))
        if not wanted:
            raise InvalidInputError("give image numbers, e.g. 3, 7-9")
        result = ExclusionResult()
        async with unit_of_work(self.sessions) as session:
            if await store.get_dataset(session, dataset_id) is None:
                raise NotFoundError(f"dataset {dataset_id} does not exist")
            images = await store.images_at(session, dataset_id, wanted)
            for position in wanted:
                image = images.get(position)
                if image is None:
                    result.missing.append(position)
                elif image.excluded == excluded and (not excluded or image.exclusion_reason == reason):
                    result.unchanged.append(position)
                else:
                    image.excluded = excluded
                    image.exclusion_reason = reason
                    result.changed.append(position)
        return result

    # -- contact sheets ------------------------------------------------------------------------------------

    async def render_contact_sheets(
        self,
        dataset_id: int,
        *,
        per_page: int = PER_PAGE,
        include_excluded: bool = True,
        badges: dict[int, tuple[str, ...]] | None = None,
    ) -> list[bytes]:
        """JPEG pages (≤ 48 numbered thumbnails each, each under 10 MiB). Empty list: no images.

        ``badges`` maps position → short labels (curation's "no face", "blurry"…).
        """
        async with self.sessions() as session:
            dataset = await store.get_dataset(session, dataset_id)
            if dataset is None:
                raise NotFoundError(f"dataset {dataset_id} does not exist")
            rows = await store.sheet_tiles(session, dataset_id, include_excluded=include_excluded)
            title = dataset.name
        if not rows:
            return []
        pages = page_count(len(rows), per_page)
        out = []
        for number in range(pages):
            chunk = rows[number * per_page : (number + 1) * per_page]
            # One thread hop per page: decoding thumbnails is the heavy part.
            out.append(
                await asyncio.to_thread(
                    self._render_page_blocking, chunk, badges or {}, title, number + 1, pages
                )
            )
        return out

    def _render_page_blocking(
        self, rows: Sequence[Any], badges: dict[int, tuple[str, ...]], title: str, page: int, pages: int
    ) -> bytes:
        tiles = []
        for position, sha256, excluded in rows:
            try:
                thumb = thumbnail(self.blobs.get(sha256), 192)
            except (BlobNotFoundError, OSError, ValueError):
                thumb = None
            tiles.append(SheetTile(position, thumb, bool(excluded), badges.get(position, ())))
        return render_page(tiles, title=title, page=page, pages=pages)
