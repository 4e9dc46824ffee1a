"""Fixtures for gathering tests: a migrated SQLite database, a blob store, a dataset, the simulators."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clients.cloudinary import CloudinaryClient
from bot.clients.fetch import SafeFetcher
from bot.datasets.gather import DatasetGatherService
from bot.datasets.ingest import IngestLimits
from bot.retry import RetryPolicy
from sim.cloudinary import CloudinarySim
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Dataset


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


@pytest.fixture
async def dataset_id(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with unit_of_work(sessions) as session:
        dataset = Dataset(guild_id=1, name="elena", trigger_word="ohwx", class_word="woman", owner_id=42)
        session.add(dataset)
        await session.flush()
        return dataset.id


@pytest.fixture
async def cloud() -> AsyncIterator[CloudinarySim]:
    sim = CloudinarySim()
    await sim.start()
    yield sim
    await sim.close()


class Sleeps:
    """An injected sleep that records the back-off delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def make_service(
    sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, sleeps: Sleeps
) -> AsyncIterator[Callable[..., DatasetGatherService]]:
    fetchers: list[SafeFetcher] = []

    def build(
        *,
        cloud: CloudinarySim | None = None,
        allow_private: bool = True,
        page_size: int = 50,
        attempts: int = 3,
        max_wait_for_reset_s: float = 120.0,
        limits: IngestLimits | None = None,
        fetcher: SafeFetcher | None = None,
        **client_kwargs: Any,
    ) -> DatasetGatherService:
        if fetcher is None:
            fetcher = SafeFetcher(allow_private=allow_private, max_bytes=20 * 1024 * 1024, timeout_s=10)
        fetchers.append(fetcher)
        client = None
        if cloud is not None:
            client = CloudinaryClient.from_url(
                cloud.cloudinary_url,
                page_size=page_size,
                retry=RetryPolicy(
                    attempts=attempts,
                    base_delay_s=0.5,
                    max_delay_s=4.0,
                    max_wait_for_reset_s=max_wait_for_reset_s,
                ),
                sleep=sleeps,
                **client_kwargs,
            )
        return DatasetGatherService(sessions, blobs, fetcher, cloudinary=client, limits=limits)

    yield build
    for fetcher in fetchers:
        await fetcher.close()
