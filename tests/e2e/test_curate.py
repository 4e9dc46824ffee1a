"""/dataset curate end to end: the real bot (real dlib in a worker process) through the Discord simulator."""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy import select

from sim.discord import InteractionHandle, SimMessage, SimUser
from sim.harness import BotHarness
from sim.testdata import TESTDATA_FACES
from storage.db import unit_of_work
from storage.models import FaceAnalysis, Image

FACES = TESTDATA_FACES
# Positions 1-5: three photos of one person (#1's face is small), another person, a photo of two people.
PHOTOS = [
    "kit_harington/kit_1.jpg",
    "kit_harington/kit_2.jpg",
    "kit_harington/kit_3.jpg",
    "rose_leslie/rose_1.jpg",
    "multi/two_people.jpg",
]
_PROGRESS = re.compile(r"^(Analysing faces|Rendering the report card)…")


def _user(user: SimUser | None) -> SimUser:
    assert user is not None
    return user


async def _setup(h: BotHarness) -> int:
    # One face worker: on a small machine it beats spawning one process (and loading dlib) per photo.
    faces = h.bot_app.services.faces
    await faces.close()
    faces.workers = 1
    faces.start()
    info = await h.bot_app.services.datasets.create(
        guild_id=h.sim.guild.id, name="elena", trigger="ohwx", class_word="man", owner_id=_user(h.trainer).id
    )
    items = [(Path(p).name, (FACES / p).read_bytes()) for p in PHOTOS]
    report = await h.bot_app.services.gather.from_attachments(info.id, items, added_by=_user(h.trainer).id)
    assert len(report.added) == len(PHOTOS), report.summary()
    return info.id


async def _final(h: BotHarness, handle: InteractionHandle) -> SimMessage:
    def done() -> SimMessage | None:
        message = handle.original
        if message is None or message.loading or _PROGRESS.match(message.content):
            return None
        return message

    return await h.sim.wait_until(done, 90)


async def _images(h: BotHarness, dataset_id: int) -> list[Image]:
    async with unit_of_work(h.bot_app.services.sessions) as session:
        rows = await session.scalars(
            select(Image).where(Image.dataset_id == dataset_id).order_by(Image.position)
        )
        return list(rows.all())


async def test_curate_posts_the_report_card_and_its_button_applies_it(harness: BotHarness) -> None:
    h = harness
    trainer, visitor = _user(h.trainer), _user(h.visitor)
    dataset_id = await _setup(h)

    handle = await h.sim.invoke_slash("dataset curate", {"name": "elena"}, user=trainer)
    assert await handle.ack() == 5 and not handle.ephemeral  # "thinking", within the 3 s
    message = await _final(h, handle)

    assert "**elena**: 5 photos checked with `dlib-resnet128-v1`" in message.content
    assert any(_PROGRESS.match(v.content) for v in h.sim.edits_of(message.id)[:-1])
    files = h.sim.files_of(message.id)
    assert [name for name, _ in files] == ["elena-report-card-01.jpg"]
    card = files[0][1]
    assert card[:3] == b"\xff\xd8\xff" and len(card) < 10 * 1024 * 1024
    with PILImage.open(io.BytesIO(card)) as opened:
        assert opened.format == "JPEG"
    embed = message.embeds[0]
    assert embed["title"] == "Report card: elena"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert "`dlib-resnet128-v1`" in fields["Engine"] and "auto → dlib" in fields["Engine"]
    assert re.match(r"0\.9\d\d: how alike", fields["Ceiling"])
    assert "may be another person: 2 (#4, #5)" in fields["Flags"]
    assert "several faces: 1 (#5)" in fields["Flags"]
    assert "face too small: 2 (#1, #5)" in fields["Flags"]
    assert "Face crops of #3" in fields["Suggested"]
    assert "#1: a crop would be" in fields["Suggested"]
    assert "different person" in embed["description"]
    buttons = message.buttons
    assert [b["label"] for b in buttons] == ["Exclude 2 flagged", "Add 1 face crop", "Both"]
    assert all(f":{dataset_id}:" in b["custom_id"] for b in buttons)
    async with unit_of_work(h.bot_app.services.sessions) as session:
        rows = list((await session.scalars(select(FaceAnalysis))).all())
    assert len(rows) == 5 and {r.engine for r in rows} == {"dlib-resnet128-v1"}

    # Someone without the trainer role can't press it.
    both = buttons[2]["custom_id"]
    refused = await h.sim.invoke_component(message.id, both, visitor)
    reply = await refused.response()
    assert reply is not None and refused.ephemeral
    assert "needs the **trainer** role" in reply.content
    assert not any(i.excluded for i in await _images(h, dataset_id))

    # The buttons survive a restart of the bot; the trainer's press excludes and crops.
    await h.restart_bot()
    pressed = await h.sim.invoke_component(message.id, both, trainer)
    assert await pressed.ack() == 6
    note = await pressed.followup(timeout=30)
    assert "excluded #4, #5" in note.content
    assert "added 1 face crop (#6)" in note.content
    assert "No crop for #1 (a crop would be 380 px and need upscaling" in note.content
    images = await _images(h, dataset_id)
    assert {i.position: i.excluded for i in images} == {
        1: False,
        2: False,
        3: False,
        4: True,
        5: True,
        6: False,
    }
    assert "may be another person" in (images[3].exclusion_reason or "")
    assert "several faces" in (images[4].exclusion_reason or "")
    crop = images[5]
    assert crop.subset == "face_crops" and crop.derived_from_id == images[2].id
    assert crop.width == crop.height and crop.added_by == trainer.id
    assert h.bot_app.services.blobs.exists(crop.sha256)
    updated = await h.sim.wait_until(
        lambda: (
            all(b.get("disabled") for b in h.sim.message(message.id).buttons) and h.sim.message(message.id)
        )
    )
    assert [b["label"] for b in updated.buttons] == ["Exclude 2 flagged", "Add 1 face crop", "Both"]


async def test_curate_refuses_visitors_and_unknown_datasets(harness: BotHarness) -> None:
    h = harness
    trainer, visitor = _user(h.trainer), _user(h.visitor)
    denied = await h.sim.invoke_slash("dataset curate", {"name": "elena"}, user=visitor)
    reply = await denied.response()
    assert reply is not None and denied.ephemeral and "needs the **trainer** role" in reply.content
    missing = await h.sim.invoke_slash("dataset curate", {"name": "nobody"}, user=trainer)
    reply = await missing.response()
    assert reply is not None and missing.ephemeral and "No dataset named `nobody`" in reply.content
    await h.bot_app.services.datasets.create(
        guild_id=h.sim.guild.id, name="empty", trigger="ohwx", class_word="man", owner_id=trainer.id
    )
    empty = await h.sim.invoke_slash(
        "dataset curate", {"name": "empty", "engine": "insightface"}, user=trainer
    )
    reply = await empty.response()
    assert reply is not None and empty.ephemeral and "has no photos to check" in reply.content


async def test_buttons_one_at_a_time_disable_what_is_done(harness: BotHarness) -> None:
    h = harness
    trainer = _user(h.trainer)
    dataset_id = await _setup(h)
    handle = await h.sim.invoke_slash("dataset curate", {"name": "elena", "engine": "dlib"}, user=trainer)
    message = await _final(h, handle)
    exclude, crops, both = (b["custom_id"] for b in message.buttons)

    first = await h.sim.invoke_component(message.id, exclude, trainer)
    assert "excluded #4, #5." in (await first.followup(timeout=30)).content

    def states() -> list[bool] | None:
        current = [bool(b.get("disabled")) for b in h.sim.message(message.id).buttons]
        return current if any(current) else None

    assert await h.sim.wait_until(states) == [True, False, True]  # only "Add 1 face crop" is left
    assert [i.position for i in await _images(h, dataset_id) if i.excluded] == [4, 5]

    second = await h.sim.invoke_component(message.id, crops, trainer)
    assert "added 1 face crop (#6)" in (await second.followup(timeout=30)).content
    await h.sim.wait_until(lambda: states() == [True, True, True])
    images = await _images(h, dataset_id)
    assert [(i.position, i.subset) for i in images if i.subset != "full"] == [(6, "face_crops")]
    assert both.startswith(f"loraops:curate:both:{dataset_id}")


async def test_an_engine_that_cannot_run_is_refused_privately(harness: BotHarness) -> None:
    h = harness
    trainer = _user(h.trainer)
    info = await h.bot_app.services.datasets.create(
        guild_id=h.sim.guild.id, name="one", trigger="ohwx", class_word="man", owner_id=trainer.id
    )
    photo = (FACES / PHOTOS[1]).read_bytes()
    await h.bot_app.services.gather.from_attachments(info.id, [("kit.jpg", photo)], added_by=trainer.id)
    handle = await h.sim.invoke_slash(
        "dataset curate", {"name": "one", "engine": "insightface"}, user=trainer
    )
    reply = await handle.response()
    assert reply is not None and handle.ephemeral
    assert "no insightface models" in reply.content
