"""Gathering through Discord end to end: the real bot, the Discord and Cloudinary simulators."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import struct
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from cogs.dataset.manage import sheet_batches
from sim.cloudinary import CloudinarySim, generated_image
from sim.discord import InteractionHandle, SimMessage, SimUser
from sim.harness import BotHarness
from storage.db import unit_of_work
from storage.models import Image

_PROGRESS = re.compile(r"^(Listing|Downloading|Processing)… ")


# Small test files (the same kinds as tests/datasets/images.py, which this package cannot import).
def jpeg(seed: int, size: tuple[int, int] = (96, 96)) -> bytes:
    return generated_image(seed, size=size, fmt="JPEG")


def png(seed: int, size: tuple[int, int] = (96, 96)) -> bytes:
    return generated_image(seed, size=size, fmt="PNG")


def make_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in entries.items():
            info = zipfile.ZipInfo(name)  # keeps a "../" name as given
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, payload)
    return buffer.getvalue()


def huge_png(side: int = 20000) -> bytes:
    """A valid PNG header claiming side×side pixels (a decompression bomb) with almost no data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (side + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture
async def cloud_harness(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path / "bot", with_cloudinary=True) as running:
        yield running


def _trainer(h: BotHarness) -> SimUser:
    assert h.trainer is not None
    return h.trainer


def _visitor(h: BotHarness) -> SimUser:
    assert h.visitor is not None
    return h.visitor


def _cloud(h: BotHarness) -> CloudinarySim:
    assert h.cloudinary is not None
    return h.cloudinary


async def _dataset(h: BotHarness, name: str = "elena") -> int:
    info = await h.bot_app.services.datasets.create(
        guild_id=h.sim.guild.id, name=name, trigger="ohwx", class_word="woman", owner_id=_trainer(h).id
    )
    return info.id


async def _images(h: BotHarness, dataset_id: int) -> list[Image]:
    async with unit_of_work(h.bot_app.services.sessions) as session:
        rows = await session.scalars(
            select(Image).where(Image.dataset_id == dataset_id).order_by(Image.position)
        )
        return list(rows.all())


async def _final(h: BotHarness, handle: InteractionHandle, timeout: float = 60) -> SimMessage:
    """The deferred reply once it holds the final report (not a progress line)."""

    def done() -> SimMessage | None:
        message = handle.original
        if message is None or message.loading or _PROGRESS.match(message.content):
            return None
        return message

    return await h.sim.wait_until(done, timeout)


async def test_cloudinary_folder_of_120_over_3_pages_then_again_adds_none(
    cloud_harness: BotHarness,
) -> None:
    h = cloud_harness
    cloud = _cloud(h)
    dataset_id = await _dataset(h)
    cloud.seed_folder("elena", 120)
    client = h.bot_app.services.gather.cloudinary
    assert client is not None
    client.page_size = 50  # the wired client (500 a page in production); 3 pages here

    handle = await h.sim.invoke_slash(
        "dataset gather", {"name": "elena", "source": "cloudinary", "folder": "elena"}, user=_trainer(h)
    )
    assert await handle.ack() == 5 and not handle.ephemeral  # "thinking", within the 3 s
    message = await _final(h, handle)
    assert "**elena** from Cloudinary folder “elena”: added 120 images (#1–#120)." in message.content
    listings = [r for r in cloud.admin_calls() if r.path.endswith("/resources/by_asset_folder")]
    assert len(listings) == 3
    images = await _images(h, dataset_id)
    assert [i.position for i in images] == list(range(1, 121))
    assert len({i.sha256 for i in images}) == 120
    assert {i.source_kind for i in images} == {"cloudinary"}
    assert {i.added_by for i in images} == {_trainer(h).id}
    # One message: progress edits of the deferred reply, the summary as its last state.
    versions = h.sim.edits_of(message.id)
    assert any(_PROGRESS.match(v.content) for v in versions[:-1])
    assert versions[-1].content == message.content
    assert len(h.sim.messages_in()) == 1

    again = await h.sim.invoke_slash(
        "dataset gather", {"name": "elena", "source": "cloudinary", "folder": "elena"}, user=_trainer(h)
    )
    repeated = await _final(h, again)
    assert "no new images: all 120 files were already in the dataset" in repeated.content
    assert len(await _images(h, dataset_id)) == 120


async def test_rate_limited_listing_backs_off_resumes_and_completes(cloud_harness: BotHarness) -> None:
    h = cloud_harness
    cloud = _cloud(h)
    await _dataset(h)
    cloud.seed_folder("elena", 30)
    client = h.bot_app.services.gather.cloudinary
    assert client is not None
    client.page_size = 10

    handle = await h.sim.invoke_slash(
        "dataset gather", {"name": "elena", "source": "cloudinary", "folder": "elena"}, user=_trainer(h)
    )
    # After the first page was listed (its images are still being ingested), Cloudinary says 420.
    async with asyncio.timeout(20):
        while not cloud.admin_calls():
            await asyncio.sleep(0)
    cloud.force_rate_limit(1, status=420, retry_after_s=1)
    message = await _final(h, handle)
    assert [r.status for r in cloud.admin_calls()] == [200, 420, 200, 200]
    assert "added 30 images (#1–#30)" in message.content
    assert "Stopped early" not in message.content


async def test_after_the_15_minute_token_the_report_goes_to_the_channel(cloud_harness: BotHarness) -> None:
    h = cloud_harness
    cloud = _cloud(h)
    await _dataset(h)
    cloud.seed_folder("elena", 20)
    client = h.bot_app.services.gather.cloudinary
    assert client is not None
    client.page_size = 10

    handle = await h.sim.invoke_slash(
        "dataset gather", {"name": "elena", "source": "cloudinary", "folder": "elena"}, user=_trainer(h)
    )
    await handle.ack()
    async with asyncio.timeout(20):
        while not cloud.admin_calls():
            await asyncio.sleep(0)
    h.sim.clock.advance(16 * 60)  # a very long gathering: the interaction token has expired

    def channel_report() -> SimMessage | None:
        posted = [m for m in h.sim.messages_in() if m.author.id == h.sim.bot_user.id and not m.webhook_id]
        return posted[0] if posted else None

    message = await h.sim.wait_until(channel_report, 60)
    assert message.content.startswith(f"<@{_trainer(h).id}> **elena** from Cloudinary folder")
    assert "added 20 images (#1–#20)" in message.content


async def test_a_search_with_or_not_and_ranges_gathers_exactly_the_matching_photos(
    cloud_harness: BotHarness,
) -> None:
    h = cloud_harness
    cloud = _cloud(h)
    dataset_id = await _dataset(h)
    wanted = {
        "elena/close_1": (["elena", "close-up"], (512, 512)),
        "elena/close_2": (["elena", "close-up"], (640, 480)),
        "elena/studio": (["elena", "studio"], (1024, 768)),
    }
    unwanted = {
        "elena/blurry": (["elena", "close-up", "blurry"], (512, 512)),  # NOT tags=blurry
        "elena/thumb": (["elena", "close-up"], (200, 200)),  # too small for the range
        "marco/close": (["marco", "close-up"], (512, 512)),  # another person
        "elena/street": (["elena", "street"], (800, 600)),  # neither close-up nor studio
    }
    for seed, (public_id, (tags, size)) in enumerate({**wanted, **unwanted}.items()):
        cloud.add_asset(public_id, jpeg(seed, size=size), asset_folder=public_id.split("/")[0], tags=tags)
    query = "tags=elena AND (tags:close-up OR tags=studio) AND NOT tags=blurry AND width:[500 TO 2000]"

    handle = await h.sim.invoke_slash(
        "dataset gather", {"name": "elena", "source": "cloudinary", "query": query}, user=_trainer(h)
    )
    message = await _final(h, handle)
    assert "added 3 images (#1–#3)" in message.content
    images = await _images(h, dataset_id)
    assert {i.source_ref.split("@")[0] for i in images} == {f"image/upload/{p}" for p in wanted}
    assert all("elena" in (i.tags or []) for i in images)  # tags asked for and kept for captions
    (search,) = [r for r in cloud.admin_calls() if r.api == "search"]
    assert search.body["expression"] == query and set(search.body["with_field"]) >= {"tags", "context"}


async def test_a_malformed_search_is_answered_with_cloudinarys_reason(cloud_harness: BotHarness) -> None:
    h = cloud_harness
    await _dataset(h)
    handle = await h.sim.invoke_slash(
        "dataset gather",
        {"name": "elena", "source": "cloudinary", "query": "(tags=elena OR tags=marco"},
        user=_trainer(h),
    )
    (reply,) = await handle.wait_followups(1, timeout=20)
    assert reply.ephemeral
    assert reply.content.startswith("Cloudinary rejected the request: ")
    assert "missing ')'" in reply.content
    assert "Something went wrong" not in reply.content


async def test_cloudinary_answering_502_is_retried_then_reported_plainly(cloud_harness: BotHarness) -> None:
    h = cloud_harness
    cloud = _cloud(h)
    await _dataset(h)
    cloud.seed_folder("elena", 5)
    client = h.bot_app.services.gather.cloudinary
    assert client is not None
    client.retry = dataclasses.replace(client.retry, attempts=3, base_delay_s=0.01, max_delay_s=0.02)
    for _ in range(3):
        cloud.fail_next(502, "Bad Gateway")

    handle = await h.sim.invoke_slash(
        "dataset gather", {"name": "elena", "source": "cloudinary", "folder": "elena"}, user=_trainer(h)
    )
    (reply,) = await handle.wait_followups(1, timeout=20)
    assert reply.content == (
        "Cloudinary is not answering properly (HTTP 502) after 3 tries: Bad Gateway. Try again later."
    )
    assert [r.status for r in cloud.admin_calls()] == [502, 502, 502]

    # Once Cloudinary answers again, the same command gathers everything.
    again = await h.sim.invoke_slash(
        "dataset gather", {"name": "elena", "source": "cloudinary", "folder": "elena"}, user=_trainer(h)
    )
    assert "added 5 images (#1–#5)" in (await _final(h, again)).content


async def test_gather_options_must_fit_the_source(cloud_harness: BotHarness) -> None:
    h = cloud_harness
    await _dataset(h)
    cases = [
        ({"source": "cloudinary"}, "exactly one of `folder`, `tag` or `query`"),
        ({"source": "cloudinary", "folder": "a", "tag": "b"}, "(you gave folder, tag)"),
        ({"source": "cloudinary", "urls": "https://example.com/a.jpg"}, "`urls` goes with `source: url`"),
        ({"source": "url"}, "Give the links in `urls`"),
        ({"source": "url", "urls": "https://example.com/a.jpg", "folder": "x"}, "only go with"),
    ]
    for options, expected in cases:
        handle = await h.sim.invoke_slash("dataset gather", {"name": "elena", **options}, user=_trainer(h))
        reply = await handle.response()
        assert reply is not None and handle.ephemeral
        assert expected in reply.content, (options, reply.content)
    assert _cloud(h).admin_calls() == []


async def test_add_attachments_adds_images(harness: BotHarness) -> None:
    h = harness
    dataset_id = await _dataset(h)
    handle = await h.sim.invoke_slash(
        "dataset add",
        {"name": "elena"},
        user=_trainer(h),
        attachments=[("a.jpg", jpeg(1)), ("b.png", png(2))],
    )
    message = await _final(h, handle)
    assert "**elena** from 2 attachments: added 2 images (#1–#2)." in message.content
    images = await _images(h, dataset_id)
    assert [(i.position, i.source_kind, i.format) for i in images] == [
        (1, "attachment", "JPEG"),
        (2, "attachment", "PNG"),
    ]


async def test_an_attachment_over_the_size_limit_is_refused_without_downloading(harness: BotHarness) -> None:
    h = harness
    dataset_id = await _dataset(h)
    big = jpeg(6) + bytes(11 * 1024 * 1024)  # over the 10 MiB of a server without boosts
    handle = await h.sim.invoke_slash(
        "dataset add",
        {"name": "elena"},
        user=_trainer(h),
        attachments=[("big.jpg", big), ("small.jpg", jpeg(7))],
    )
    message = await _final(h, handle)
    assert "added 1 image (#1); 1 rejected" in message.content
    assert "• `big.jpg`: too large (11.0 MiB; the limit is 10.0 MiB)" in message.content
    downloads = [r.path for r in h.sim.requests if r.path.startswith("/ephemeral-attachments/")]
    assert [p.rsplit("/", 1)[-1] for p in downloads] == ["small.jpg"]
    assert len(await _images(h, dataset_id)) == 1


async def test_message_menu_with_one_dataset_adds_its_images(harness: BotHarness) -> None:
    h = harness
    dataset_id = await _dataset(h)
    posted = h.sim.post_user_message(
        None,
        _trainer(h),
        "new photos",
        attachments=[("a.jpg", jpeg(3)), ("b.png", png(4)), ("notes.txt", b"not a photo")],
    )
    handle = await h.sim.invoke_message_command("Add to dataset", posted.id, _trainer(h))
    message = await _final(h, handle)
    assert "added 2 images (#1–#2)" in message.content
    assert "`notes.txt`: not an image or a zip" in message.content
    assert len(await _images(h, dataset_id)) == 2


async def test_message_menu_asks_which_dataset_when_there_are_several(harness: BotHarness) -> None:
    h = harness
    await _dataset(h, "anna")
    elena = await _dataset(h, "elena")
    posted = h.sim.post_user_message(None, _trainer(h), "", attachments=[("a.jpg", jpeg(5))])
    handle = await h.sim.invoke_message_command("Add to dataset", posted.id, _trainer(h))
    question = await handle.response()
    assert question is not None and handle.ephemeral
    assert "to which dataset?" in question.content
    select = question.components[0]["components"][0]
    assert [o["value"] for o in select["options"]] == ["anna", "elena"]

    picked = await h.sim.invoke_component(question.id, select["custom_id"], _trainer(h), values=["elena"])
    message = await _final(h, picked)
    assert "**elena** from 1 attachment of" in message.content and "added 1 image (#1)" in message.content
    assert not picked.ephemeral
    assert len(await _images(h, elena)) == 1
    await h.sim.wait_until(lambda: "Adding to **elena**" in h.sim.message(question.id).content)
    assert h.sim.message(question.id).components == []


async def test_hostile_batch_is_reported_file_by_file_and_valid_files_kept(tmp_path: Path) -> None:
    overrides = {"zip_max_total_bytes": 4 * 1024 * 1024}
    async with BotHarness(tmp_path / "bot", settings_overrides=overrides) as h:
        dataset_id = await _dataset(h)
        good_jpeg, good_png, inside = jpeg(20), png(21), jpeg(22)
        files = [
            ("traversal.zip", make_zip({"../../etc/evil.jpg": jpeg(23), "fine/inside.jpg": inside})),
            ("bomb.zip", make_zip({"photos/bomb.png": bytes(8 * 1024 * 1024)})),
            ("truncated.jpg", jpeg(24, size=(640, 480))[:6000]),
            ("notes.jpg", b"this is a text file, not a photo\n" * 20),
            ("huge.png", huge_png()),
            ("good.jpg", good_jpeg),
            ("good.png", good_png),
        ]
        handle = await h.sim.invoke_slash(
            "dataset add", {"name": "elena"}, user=_trainer(h), attachments=files
        )
        message = await _final(h, handle)
        text = message.content
        assert "added 3 images (#1–#3); 5 rejected" in text
        assert "• `traversal.zip/../../etc/evil.jpg`: unsafe path (path traversal with ..)" in text
        assert "• `bomb.zip`: zip bomb guard: it would unpack to 8.0 MiB (the limit is 4.0 MiB)" in text
        assert "• `truncated.jpg`: truncated JPEG file" in text
        assert "• `notes.jpg`: not an image: the content is text" in text
        assert "• `huge.png`: too many pixels: 20000×20000" in text
        stored = [h.bot_app.services.blobs.get(i.sha256) for i in await _images(h, dataset_id)]
        assert sorted(stored) == sorted([good_jpeg, good_png, inside])


async def test_long_report_comes_with_the_full_detail_as_a_text_file(harness: BotHarness) -> None:
    h = harness
    await _dataset(h)
    fakes = {f"fake-{n:03d}-with-a-long-name.jpg": b"plain text %d\n" % n for n in range(120)}
    handle = await h.sim.invoke_slash(
        "dataset add",
        {"name": "elena"},
        user=_trainer(h),
        attachments=[("many.zip", make_zip(fakes)), ("ok.jpg", jpeg(30))],
    )
    message = await _final(h, handle)
    assert len(message.content) <= 2000
    assert "added 1 image (#1); 120 rejected" in message.content
    assert "more (see the full report)" in message.content
    files = dict(h.sim.files_of(message.id))
    detail = files["elena-gathering-report.txt"].decode()
    assert detail.count("not an image: the content is text") == 120
    assert "many.zip/fake-119-with-a-long-name.jpg" in detail


async def test_url_to_a_private_address_is_refused(tmp_path: Path) -> None:
    cloud = CloudinarySim()
    async with BotHarness(
        tmp_path / "bot", cloudinary=cloud, settings_overrides={"allow_private_urls": False}
    ) as h:
        dataset_id = await _dataset(h)
        asset = cloud.add_asset("elena/one", jpeg(40), asset_folder="elena")
        url = f"{cloud.base_url}/{cloud.cloud_name}/image/upload/v{asset.version}/{asset.public_id}.jpg"
        handle = await h.sim.invoke_slash(
            "dataset gather", {"name": "elena", "source": "url", "urls": url}, user=_trainer(h)
        )
        message = await _final(h, handle)
        assert "no images added; 1 rejected" in message.content
        assert "refused: 127.0.0.1 is a loopback address" in message.content
        assert [r for r in cloud.requests if r.api == "delivery"] == []
        assert await _images(h, dataset_id) == []


async def test_a_member_without_the_trainer_role_is_refused(harness: BotHarness) -> None:
    h = harness
    dataset_id = await _dataset(h)
    attempts = [
        await h.sim.invoke_slash(
            "dataset add", {"name": "elena"}, user=_visitor(h), attachments=[("a.jpg", jpeg(50))]
        ),
        await h.sim.invoke_slash(
            "dataset gather",
            {"name": "elena", "source": "url", "urls": "https://example.com/a.jpg"},
            user=_visitor(h),
        ),
        await h.sim.invoke_slash("dataset exclude", {"name": "elena", "numbers": "1"}, user=_visitor(h)),
        await h.sim.invoke_slash("dataset include", {"name": "elena", "numbers": "1"}, user=_visitor(h)),
    ]
    posted = h.sim.post_user_message(None, _visitor(h), "", attachments=[("b.jpg", jpeg(51))])
    attempts.append(await h.sim.invoke_message_command("Add to dataset", posted.id, _visitor(h)))
    for handle in attempts:
        reply = await handle.response()
        assert reply is not None and handle.ephemeral
        assert "needs the **trainer** role" in reply.content
    assert await _images(h, dataset_id) == []


async def test_show_posts_the_contact_sheet_pages_as_jpegs(harness: BotHarness) -> None:
    h = harness
    dataset_id = await _dataset(h)
    items = [(f"p{n}.jpg", jpeg(100 + n, size=(64, 64))) for n in range(50)]
    report = await h.bot_app.services.gather.from_attachments(dataset_id, items, added_by=_trainer(h).id)
    assert len(report.added) == 50

    handle = await h.sim.invoke_slash("dataset show", {"name": "elena"}, user=_visitor(h))
    message = await handle.response(timeout=30)
    assert message is not None and not handle.ephemeral
    assert message.embeds[0]["title"] == "Dataset elena"
    assert "Contact sheet: 2 pages" in message.content
    files = h.sim.files_of(message.id)
    assert [name for name, _ in files] == ["elena-sheet-01.jpg", "elena-sheet-02.jpg"]
    for _name, data in files:
        assert data[:3] == b"\xff\xd8\xff" and len(data) < 10 * 1024 * 1024
        with PILImage.open(io.BytesIO(data)) as page:
            assert page.format == "JPEG"


def test_sheet_pages_are_split_into_messages_of_at_most_ten_files() -> None:
    pages = [(n, b"x" * 100) for n in range(1, 24)]
    batches = sheet_batches(pages, limit=1000)
    assert [len(b) for b in batches] == [10, 10, 3]
    assert [n for batch in batches for n, _ in batch] == list(range(1, 24))
    by_size = sheet_batches(pages[:5], limit=1000, max_request_bytes=250)
    assert [len(b) for b in by_size] == [2, 2, 1]
    assert sheet_batches([(1, b"x" * 1000)], limit=1000) == []


async def test_exclude_and_include_by_number_change_the_rows(harness: BotHarness) -> None:
    h = harness
    dataset_id = await _dataset(h)
    items = [(f"p{n}.jpg", jpeg(200 + n, size=(64, 64))) for n in range(4)]
    await h.bot_app.services.gather.from_attachments(dataset_id, items, added_by=_trainer(h).id)

    handle = await h.sim.invoke_slash(
        "dataset exclude", {"name": "elena", "numbers": "1, 3-4", "reason": "blurry"}, user=_trainer(h)
    )
    reply = await handle.response()
    assert reply is not None and reply.content == "**elena**: excluded #1, #3, #4."
    rows = {i.position: (i.excluded, i.exclusion_reason) for i in await _images(h, dataset_id)}
    assert rows == {1: (True, "blurry"), 2: (False, None), 3: (True, "blurry"), 4: (True, "blurry")}

    handle = await h.sim.invoke_slash(
        "dataset include", {"name": "elena", "numbers": "3 9"}, user=_trainer(h)
    )
    reply = await handle.response()
    assert reply is not None and reply.content == "**elena**: included #3; no such image: #9."
    rows = {i.position: (i.excluded, i.exclusion_reason) for i in await _images(h, dataset_id)}
    assert rows == {1: (True, "blurry"), 2: (False, None), 3: (False, None), 4: (True, "blurry")}

    handle = await h.sim.invoke_slash(
        "dataset exclude", {"name": "elena", "numbers": "two"}, user=_trainer(h)
    )
    reply = await handle.response()
    assert reply is not None and handle.ephemeral and "is not an image number" in reply.content
