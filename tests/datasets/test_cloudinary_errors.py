"""Every status Cloudinary may answer, through the real SDK and the simulator: a short, clear message for
the user, retries only where another try can help, and the tags and context captions need asked for."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clients.cloudinary import classify_failure
from bot.datasets.gather import DatasetGatherService
from bot.errors import ConflictError, InvalidInputError, NotFoundError, ServiceUnavailableError, UserError
from sim.cloudinary import CloudinarySim
from storage.models import Image

from .conftest import Sleeps

Build = Callable[..., DatasetGatherService]

# status, JSON body?, the error the user gets, what it says, retried?
STATUSES: list[tuple[int, bool, type[UserError], str, bool]] = [
    (400, True, InvalidInputError, "Cloudinary rejected the request: injected 400", False),
    (401, True, ServiceUnavailableError, "Cloudinary refused our credentials (injected 401)", False),
    (403, True, ServiceUnavailableError, "Cloudinary does not allow this: injected 403", False),
    (404, True, NotFoundError, "Cloudinary: injected 404", False),
    (409, True, ConflictError, "Cloudinary says this already exists: injected 409", False),
    (413, True, ServiceUnavailableError, "Cloudinary refused the request (HTTP 413): injected 413", False),
    (422, True, ServiceUnavailableError, "Cloudinary refused the request (HTTP 422): injected 422", False),
    *(
        (code, True, ServiceUnavailableError, f"(HTTP {code}) after 3 tries: injected {code}", True)
        for code in (500, 502, 503, 504)
    ),
    (
        502,
        False,
        ServiceUnavailableError,
        "not answering properly (HTTP 502) after 3 tries: it answered with a page that is not JSON",
        True,
    ),
]


@pytest.mark.parametrize(
    ("status", "json_body", "error", "says", "retried"),
    STATUSES,
    ids=[f"{s}{'' if j else '-html'}" for s, j, *_ in STATUSES],
)
async def test_each_status_is_a_short_clear_error_and_only_transient_ones_are_retried(
    cloud: CloudinarySim,
    make_service: Build,
    dataset_id: int,
    sleeps: Sleeps,
    status: int,
    json_body: bool,
    error: type[UserError],
    says: str,
    retried: bool,
) -> None:
    cloud.seed_folder("elena", 3)
    for _ in range(3):
        cloud.fail_next(status, f"injected {status}", json_body=json_body)
    service = make_service(cloud=cloud, attempts=3)
    with pytest.raises(UserError) as caught:
        await service.from_cloudinary(dataset_id, folder="elena", added_by=1)
    assert type(caught.value) is error
    message = str(caught.value)
    assert says in message
    assert len(message) < 300 and "Traceback" not in message and "<html" not in message
    calls = [r.status for r in cloud.admin_calls()]
    assert calls == ([status] * 3 if retried else [status])
    assert len(sleeps.delays) == (2 if retried else 0)


async def test_a_transient_502_is_retried_and_the_gathering_completes(
    cloud: CloudinarySim, make_service: Build, dataset_id: int, sleeps: Sleeps
) -> None:
    cloud.seed_folder("elena", 25)
    service = make_service(cloud=cloud, page_size=10, attempts=3)
    cloud.fail_next(502, "Bad Gateway")
    cloud.fail_next(504, json_body=False)
    report = await service.from_cloudinary(dataset_id, folder="elena", added_by=1)
    assert len(report.added) == 25 and report.stopped_early is None
    assert [r.status for r in cloud.admin_calls()] == [502, 504, 200, 200, 200]
    assert len(sleeps.delays) == 2


async def test_a_failure_after_some_pages_keeps_what_was_gathered_and_says_why(
    cloud: CloudinarySim, make_service: Build, dataset_id: int
) -> None:
    cloud.seed_folder("elena", 25)
    service = make_service(cloud=cloud, page_size=10, attempts=2)
    listed = 0

    async def progress(snapshot: object) -> None:
        nonlocal listed
        if getattr(snapshot, "phase", None) == "processing" and not listed:
            listed = 1
            cloud.fail_next(409, "Resource already exists")  # not transient: no second try

    report = await service.from_cloudinary(dataset_id, folder="elena", added_by=1, progress=progress)
    assert len(report.added) == 10
    assert report.stopped_early == "Cloudinary says this already exists: Resource already exists"


async def test_no_answer_at_all_is_retried_and_said_in_plain_words(
    cloud: CloudinarySim, make_service: Build, dataset_id: int, sleeps: Sleeps
) -> None:
    service = make_service(cloud=cloud, attempts=3)
    await cloud.close()  # nothing listens on its port any more: connection refused
    with pytest.raises(ServiceUnavailableError) as caught:
        await service.from_cloudinary(dataset_id, folder="elena", added_by=1)
    assert str(caught.value) == (
        "Cloudinary is not answering properly after 3 tries: no answer (a network error or a timeout)."
        " Try again later."
    )
    assert len(sleeps.delays) == 2


def test_errors_that_are_not_the_sdks_are_left_alone() -> None:
    # A bug of ours (a KeyError, a bare Exception without "Error NNN") must surface as a bug, not as
    # "Cloudinary is not answering".
    assert classify_failure(KeyError("resources")) is None
    assert classify_failure(Exception("something else")) is None
    failure = classify_failure(Exception("Error 502 - Bad Gateway"))
    assert failure is not None and failure.status == 502 and failure.retryable


async def test_every_listing_asks_for_the_tags_and_context_captions_use(
    cloud: CloudinarySim,
    make_service: Build,
    dataset_id: int,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    cloud.seed_folder("elena", 2, tags=["portrait"], context={"caption": "smiling"}, first_seed=1)
    cloud.seed_folder("e2", 2, tags=["elena", "beach"], context={"alt": "sea"}, first_seed=3)
    for i in range(2):
        cloud.add_asset(f"fixed/elena/{i}", seed=5 + i, tags=["fixed"], context={"caption": f"old {i}"})
    cloud.seed_folder("s", 2, tags=["searchable"], context={"description": "by search"}, first_seed=7)
    service = make_service(cloud=cloud)
    await service.from_cloudinary(dataset_id, folder="elena", added_by=1)
    await service.from_cloudinary(dataset_id, tag="elena", added_by=1)
    await service.from_cloudinary(dataset_id, folder="fixed/elena", added_by=1)  # falls back to prefix
    await service.from_cloudinary(dataset_id, query="tags=searchable", added_by=1)

    listings = [r for r in cloud.admin_calls() if r.api == "admin"]
    assert {r.path.rsplit("/", 2)[-2] + "/" + r.path.rsplit("/", 1)[-1] for r in listings} == {
        "resources/by_asset_folder",
        "tags/elena",
        "image/upload",
    }
    assert all(r.query.get("tags") == "true" and r.query.get("context") == "true" for r in listings)
    searches = [r for r in cloud.admin_calls() if r.api == "search"]
    assert searches and all(set(r.body["with_field"]) >= {"tags", "context"} for r in searches)

    async with sessions() as session:
        images = (await session.scalars(select(Image).order_by(Image.position))).all()
    kept = {(tuple(i.tags or ()), tuple(sorted((i.context or {}).items()))) for i in images}
    assert kept == {
        (("portrait",), (("caption", "smiling"),)),
        (("elena", "beach"), (("alt", "sea"),)),
        (("fixed",), (("caption", "old 0"),)),
        (("fixed",), (("caption", "old 1"),)),
        (("searchable",), (("description", "by search"),)),
    }
    assert len(images) == 8
