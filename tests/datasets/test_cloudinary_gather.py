"""Gathering from Cloudinary through the real SDK and the simulator."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clients.cloudinary import CloudinaryRateLimitedError
from bot.datasets.gather import DatasetGatherService
from bot.datasets.report import IngestProgress
from bot.errors import InvalidInputError, ServiceUnavailableError
from sim.cloudinary import CloudinarySim
from storage.blobs import BlobStore
from storage.models import Image

from .conftest import Sleeps

Build = Callable[..., DatasetGatherService]


async def _images(sessions: async_sessionmaker[AsyncSession], dataset_id: int) -> list[Image]:
    async with sessions() as session:
        rows = await session.scalars(
            select(Image).where(Image.dataset_id == dataset_id).order_by(Image.position)
        )
        return list(rows.all())


async def test_folder_of_120_over_3_pages_adds_each_once_and_again_adds_none(
    cloud: CloudinarySim,
    make_service: Build,
    dataset_id: int,
    sessions: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
) -> None:
    seeded = cloud.seed_folder("elena", 120, tags=["elena", "portrait"], context={"caption": "smiling"})
    cloud.seed_folder("someone-else", 5, first_seed=500)
    service = make_service(cloud=cloud, page_size=50)
    snapshots: list[IngestProgress] = []

    async def progress(snapshot: IngestProgress) -> None:
        snapshots.append(snapshot)

    report = await service.from_cloudinary(dataset_id, folder="elena", added_by=7, progress=progress)

    listings = [r for r in cloud.admin_calls() if r.path.endswith("/resources/by_asset_folder")]
    assert len(listings) == 3
    assert [("next_cursor" in r.query) for r in listings] == [False, True, True]
    assert {r.query["asset_folder"] for r in listings} == {"elena"}
    assert len(report.added) == 120 and not report.duplicates and not report.rejected
    images = await _images(sessions, dataset_id)
    assert [i.position for i in images] == list(range(1, 121))
    assert len({i.sha256 for i in images}) == 120
    first = images[0]
    assert first.source_kind == "cloudinary" and first.added_by == 7
    assert first.tags == ["elena", "portrait"] and first.context == {"caption": "smiling"}
    # Oldest first, so position numbers follow the folder's upload order.
    assert first.source_ref.startswith(f"image/upload/{seeded[0].public_id}@v")
    assert blobs.get(first.sha256) == seeded[0].data
    assert "added 120 images (#1–#120)" in report.summary()
    assert snapshots[-1].phase == "done" and snapshots[-1].added == 120
    assert [s.done for s in snapshots] == sorted(s.done for s in snapshots)

    downloads_before = len([r for r in cloud.requests if r.api == "delivery"])
    again = await service.from_cloudinary(dataset_id, folder="elena", added_by=7)
    assert again.added == []
    assert len(again.duplicates) == 120
    assert {d.kind for d in again.duplicates} == {"same source"}
    assert "no new images: all 120 files were already in the dataset" in again.summary()
    # Known assets are recognised from the listing: nothing is downloaded a second time.
    assert len([r for r in cloud.requests if r.api == "delivery"]) == downloads_before
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Image)) == 120


async def test_same_picture_in_two_folders_is_a_duplicate_by_content(
    cloud: CloudinarySim, make_service: Build, dataset_id: int
) -> None:
    cloud.seed_folder("a", 3, first_seed=1)
    cloud.seed_folder("b", 3, first_seed=1)  # same pictures, different assets
    service = make_service(cloud=cloud)
    await service.from_cloudinary(dataset_id, folder="a", added_by=1)
    report = await service.from_cloudinary(dataset_id, folder="b", added_by=1)
    assert report.added == []
    assert sorted(d.of_position for d in report.duplicates) == [1, 2, 3]
    assert {d.kind for d in report.duplicates} == {"same file"}


async def test_tag_gathering(cloud: CloudinarySim, make_service: Build, dataset_id: int) -> None:
    cloud.seed_folder("x", 4, tags=["elena"], first_seed=10)
    cloud.seed_folder("y", 3, tags=["other"], first_seed=20)
    report = await make_service(cloud=cloud, page_size=3).from_cloudinary(dataset_id, tag="elena", added_by=1)
    assert len(report.added) == 4
    tag_calls = [r for r in cloud.admin_calls() if "/resources/image/tags/elena" in r.path]
    assert len(tag_calls) == 2 and tag_calls[0].query["tags"] == "true"


async def test_search_gathering(
    cloud: CloudinarySim, make_service: Build, dataset_id: int, sessions: async_sessionmaker[AsyncSession]
) -> None:
    cloud.seed_folder("elena", 5, tags=["close-up"], context={"alt": "face"}, first_seed=30)
    cloud.seed_folder("elena", 4, tags=["full-body"], first_seed=40)
    cloud.seed_folder("other", 3, tags=["close-up"], first_seed=50)
    service = make_service(cloud=cloud, page_size=2)
    report = await service.from_cloudinary(
        dataset_id, query='asset_folder="elena" AND tags=close-up', added_by=1
    )
    assert len(report.added) == 5
    searches = [r for r in cloud.admin_calls() if r.api == "search"]
    assert len(searches) == 3
    assert searches[0].body["expression"] == 'asset_folder="elena" AND tags=close-up'
    assert "tags" in searches[0].body["with_field"] and "next_cursor" in searches[1].body
    images = await _images(sessions, dataset_id)
    assert all(i.tags == ["close-up"] and i.context == {"alt": "face"} for i in images)


async def test_bad_search_expression_is_a_clear_user_error(
    cloud: CloudinarySim, make_service: Build, dataset_id: int
) -> None:
    with pytest.raises(InvalidInputError, match="Cloudinary rejected the request: Unsupported search field"):
        await make_service(cloud=cloud).from_cloudinary(dataset_id, query="colour=red", added_by=1)


async def test_exactly_one_selector(cloud: CloudinarySim, make_service: Build, dataset_id: int) -> None:
    service = make_service(cloud=cloud)
    with pytest.raises(InvalidInputError):
        await service.from_cloudinary(dataset_id, folder="a", tag="b", added_by=1)
    with pytest.raises(InvalidInputError):
        await service.from_cloudinary(dataset_id, added_by=1)


async def test_rate_limited_listing_backs_off_resumes_and_completes(
    cloud: CloudinarySim, make_service: Build, dataset_id: int, sleeps: Sleeps
) -> None:
    cloud.seed_folder("elena", 30)
    service = make_service(cloud=cloud, page_size=10, attempts=4)
    cloud.force_rate_limit(2, status=420, retry_after_s=1)
    report = await service.from_cloudinary(dataset_id, folder="elena", added_by=1)
    assert len(report.added) == 30 and report.stopped_early is None
    statuses = [r.status for r in cloud.admin_calls()]
    assert statuses == [420, 420, 200, 200, 200]
    assert len(sleeps.delays) == 2 and all(0 < d <= 4.0 for d in sleeps.delays)


async def test_429_burst_limit_mid_listing_resumes(
    cloud: CloudinarySim, make_service: Build, dataset_id: int, sleeps: Sleeps
) -> None:
    cloud.seed_folder("elena", 25)
    service = make_service(cloud=cloud, page_size=10, attempts=3)
    injected = False

    async def progress(snapshot: IngestProgress) -> None:
        nonlocal injected
        if snapshot.phase == "processing" and not injected:
            injected = True
            cloud.force_rate_limit(1, status=429, retry_after_s=1)

    report = await service.from_cloudinary(dataset_id, folder="elena", added_by=1, progress=progress)
    assert len(report.added) == 25
    assert [r.status for r in cloud.admin_calls()] == [200, 429, 200, 200]
    assert len(sleeps.delays) == 1


async def test_persistent_rate_limiting_gives_a_clear_message(
    cloud: CloudinarySim, make_service: Build, dataset_id: int, sleeps: Sleeps
) -> None:
    cloud.seed_folder("elena", 5)
    service = make_service(cloud=cloud, attempts=3)
    cloud.force_rate_limit(50, retry_after_s=1)
    with pytest.raises(CloudinaryRateLimitedError) as caught:
        await service.from_cloudinary(dataset_id, folder="elena", added_by=1)
    message = str(caught.value)
    assert "Cloudinary is rate-limiting our requests and still was after 3 tries with back-off" in message
    assert "try again later" in message
    assert len(cloud.admin_calls()) == 3 and len(sleeps.delays) == 2


async def test_persistent_rate_limiting_after_some_pages_keeps_what_was_gathered(
    cloud: CloudinarySim, make_service: Build, dataset_id: int
) -> None:
    cloud.seed_folder("elena", 25)
    service = make_service(cloud=cloud, page_size=10, attempts=2)

    async def progress(snapshot: IngestProgress) -> None:
        if snapshot.phase == "processing":
            cloud.force_rate_limit(10)

    report = await service.from_cloudinary(dataset_id, folder="elena", added_by=1, progress=progress)
    assert len(report.added) == 10
    assert report.stopped_early is not None and "rate-limiting" in report.stopped_early
    assert report.summary().startswith("⚠️ Stopped early: Cloudinary is rate-limiting")


async def test_exhausted_hourly_allowance_fails_fast_with_the_reset_time(
    make_service: Build, dataset_id: int, sleeps: Sleeps
) -> None:
    sim = CloudinarySim(hourly_limit=2)
    await sim.start()
    try:
        sim.seed_folder("elena", 30)
        # The hourly window resets on the hour, which may be seconds away; "too far to wait" is then
        # any wait at all, so the test does not depend on the wall clock.
        service = make_service(cloud=sim, page_size=10, attempts=5, max_wait_for_reset_s=0)
        report = await service.from_cloudinary(dataset_id, folder="elena", added_by=1)
        assert len(report.added) == 20
        assert report.stopped_early is not None
        assert "its allowance resets at" in report.stopped_early and ":00 UTC" in report.stopped_early
        # Not worth waiting for: no back-off sleeps at all.
        assert sleeps.delays == []
        assert [r.status for r in sim.admin_calls()] == [200, 200, 420]
    finally:
        await sim.close()


async def test_wrong_credentials_are_reported_plainly(
    cloud: CloudinarySim, make_service: Build, dataset_id: int
) -> None:
    service = make_service(cloud=cloud)
    cloud.api_secret = "rotated-secret-xxxxxxxx"  # rotated in the console; the bot has the old one
    with pytest.raises(ServiceUnavailableError, match=r"refused our credentials \(api_secret mismatch\)"):
        await service.from_cloudinary(dataset_id, folder="elena", added_by=1)
    assert [r.status for r in cloud.admin_calls()] == [401]


async def test_non_image_assets_are_listed_as_skipped(
    cloud: CloudinarySim, make_service: Build, dataset_id: int
) -> None:
    cloud.seed_folder("elena", 2)
    cloud.add_asset("elena/notes.txt", b"hello", asset_folder="elena", resource_type="raw")
    report = await make_service(cloud=cloud).from_cloudinary(dataset_id, folder="elena", added_by=1)
    assert len(report.added) == 2
    assert [(s.name, s.reason) for s in report.skipped] == [("elena/notes.txt", "a raw asset, not an image")]


async def test_fixed_folder_account_falls_back_to_public_id_prefix(
    cloud: CloudinarySim, make_service: Build, dataset_id: int
) -> None:
    # Fixed-folder accounts: the folder is part of the public_id and there is no asset folder.
    for i in range(3):
        cloud.add_asset(f"datasets/elena/img{i}", seed=70 + i)
    report = await make_service(cloud=cloud).from_cloudinary(dataset_id, folder="datasets/elena", added_by=1)
    assert len(report.added) == 3
    assert any("public_id prefix" in note for note in report.notes)
    prefix_calls = [r for r in cloud.admin_calls() if r.path.endswith("/resources/image/upload")]
    assert prefix_calls and prefix_calls[0].query["prefix"] == "datasets/elena/"


async def test_empty_folder_says_nothing_found(
    cloud: CloudinarySim, make_service: Build, dataset_id: int
) -> None:
    report = await make_service(cloud=cloud).from_cloudinary(dataset_id, folder="nobody", added_by=1)
    assert report.added == []
    assert "Nothing found in Cloudinary folder “nobody”." in report.summary()


async def test_cloudinary_not_configured(make_service: Build, dataset_id: int) -> None:
    with pytest.raises(ServiceUnavailableError, match="CLOUDINARY_URL"):
        await make_service().from_cloudinary(dataset_id, folder="x", added_by=1)
