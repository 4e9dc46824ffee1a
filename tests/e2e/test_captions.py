"""Captions, trigger advice and export through the real bot and the Discord simulator."""

from __future__ import annotations

import asyncio
import io
import re
import tomllib
import zipfile

from PIL import Image as PILImage
from sqlalchemy import select

from bot.training.triggers import check_trigger
from sim.cloudinary import generated_image
from sim.discord import InteractionHandle, SimUser
from sim.harness import BotHarness
from storage.db import unit_of_work
from storage.models import Caption, Dataset, Image


def jpeg(seed: int, size: tuple[int, int] = (256, 256)) -> bytes:
    return generated_image(seed, size=size, fmt="JPEG")


def with_exif_orientation(data: bytes, orientation: int) -> bytes:
    """The same stored pixels with an EXIF Orientation tag (6: viewers rotate it 90° clockwise)."""
    image = PILImage.open(io.BytesIO(data))
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def _trainer(harness: BotHarness) -> SimUser:
    assert harness.trainer is not None
    return harness.trainer


def _visitor(harness: BotHarness) -> SimUser:
    assert harness.visitor is not None
    return harness.visitor


async def _everything_said(h: InteractionHandle) -> str:
    """The response plus any follow-up (slow trigger advice arrives as a follow-up)."""
    message = await h.response()
    assert message is not None
    return "\n".join([message.content, *(m.content for m in h.followups if m.id != message.id)])


async def _create(harness: BotHarness, name: str, trigger: str) -> InteractionHandle:
    h = await harness.sim.invoke_slash(
        "dataset create", {"name": name, "trigger": trigger, "class": "woman"}, user=_trainer(harness)
    )
    message = await h.response()
    assert message is not None and f"Created dataset **{name}**" in message.content
    assert not h.ephemeral
    return h


async def _dataset_with_images(harness: BotHarness, count: int = 3) -> int:
    await _create(harness, "elena", "ohwx")
    services = harness.bot_app.services
    info = await services.datasets.get(guild_id=harness.sim.guild.id, name="elena")
    files = [(f"{i}.jpg", jpeg(i)) for i in range(1, count)]
    files.append(("rotated.jpg", with_exif_orientation(jpeg(99, size=(320, 200)), 6)))
    report = await services.gather.from_attachments(info.id, files, added_by=_trainer(harness).id)
    assert len(report.added) == count
    return info.id


async def _captions(harness: BotHarness, dataset_id: int) -> dict[int, str]:
    async with unit_of_work(harness.bot_app.services.sessions) as session:
        rows = await session.execute(
            select(Image.position, Caption.text)
            .join(Caption, Caption.image_id == Image.id)
            .where(Image.dataset_id == dataset_id)
        )
        return dict(rows.tuples().all())


async def _warm_trigger_checker() -> None:
    # The first check loads word lists (~1 s); warm, the bot's reply always carries the advice inline.
    await asyncio.to_thread(check_trigger, "warm")


async def test_create_with_a_name_as_trigger_warns_and_proposes_three_rare_words(harness: BotHarness) -> None:
    await _warm_trigger_checker()
    h = await _create(harness, "lena", "elena")
    said = await _everything_said(h)
    assert "The trigger `elena` is weak" in said
    assert "first name" in said and "common word" in said
    suggestions = re.findall(r"`(\w+)`", said.split("Rare alternatives", 1)[1])
    assert len(suggestions) == 3 and "elena" not in suggestions
    async with unit_of_work(harness.bot_app.services.sessions) as session:
        dataset = await session.scalar(select(Dataset).where(Dataset.name == "lena"))
    assert dataset is not None and dataset.trigger_word == "elena"  # creation still succeeded


async def test_create_with_a_rare_trigger_gives_no_advice(harness: BotHarness) -> None:
    await _warm_trigger_checker()
    h = await _create(harness, "elena", "ohwx")
    said = await _everything_said(h)
    assert "weak" not in said and "⚠️" not in said and "alternatives" not in said
    checked = await harness.sim.invoke_slash("dataset trigger", {"name": "elena"}, user=_visitor(harness))
    assert "looks like a good trigger" in await _everything_said(checked) and checked.ephemeral
    other = await harness.sim.invoke_slash(
        "dataset trigger", {"name": "elena", "word": "sks"}, user=_visitor(harness)
    )
    said = await _everything_said(other)
    assert "rifle" in said and "(`elena` uses `ohwx`.)" in said


async def test_captions_start_with_the_trigger_and_an_edit_without_it_gets_it_back(
    harness: BotHarness,
) -> None:
    dataset_id = await _dataset_with_images(harness)

    h = await harness.sim.invoke_slash("dataset caption", {"name": "elena"}, user=_trainer(harness))
    said = await _everything_said(h)
    assert "3 new, 0 kept" in said
    assert "`#1` ohwx woman" in said and "`#3` ohwx woman" in said
    assert "✅ Check: every caption in use starts with `ohwx`" in said
    captions = await _captions(harness, dataset_id)
    assert sorted(captions) == [1, 2, 3] and all(t.startswith("ohwx woman") for t in captions.values())

    edit = await harness.sim.invoke_slash(
        "dataset caption", {"name": "elena", "number": 2, "text": "smiling, beach"}, user=_trainer(harness)
    )
    said = await _everything_said(edit)
    assert "trigger was put back in front" in said
    assert "> ohwx woman, smiling, beach" in said and "✅ Check" in said
    assert (await _captions(harness, dataset_id))[2] == "ohwx woman, smiling, beach"

    bulk = await harness.sim.invoke_slash(
        "dataset caption", {"name": "elena", "prefix": "photo"}, user=_trainer(harness)
    )
    assert "Added prefix `photo` to 3 captions" in await _everything_said(bulk)
    assert (await _captions(harness, dataset_id))[2] == "ohwx woman, photo, smiling, beach"

    # Regenerating is a trainer's choice; others may not change captions.
    refused = await harness.sim.invoke_slash("dataset caption", {"name": "elena"}, user=_visitor(harness))
    assert "needs the **trainer** role" in await _everything_said(refused) and refused.ephemeral
    orphan = await harness.sim.invoke_slash(
        "dataset caption", {"name": "elena", "text": "ohwx woman"}, user=_trainer(harness)
    )
    assert "give `number` with `text`" in await _everything_said(orphan) and orphan.ephemeral


async def test_export_attaches_a_zip_with_parsable_configs_and_trigger_first_captions(
    harness: BotHarness,
) -> None:
    dataset_id = await _dataset_with_images(harness)
    await harness.bot_app.services.captions.edit(dataset_id, 1, "garden, smiling", user_id=1)

    h = await harness.sim.invoke_slash(
        "dataset export",
        {"name": "elena", "preset": "sdxl-face", "overrides": "rank=16 steps=800"},
        user=_trainer(harness),
    )
    message = await h.response(timeout=30)
    assert message is not None and h.deferred and h.ephemeral
    assert "**elena** with preset **sdxl-face**: 3 images, 800 steps" in message.content
    assert "had no caption yet" in message.content  # #2 and #3 used the template
    files = harness.sim.files_of(message.id)
    assert len(files) == 1 and files[0][0].endswith(".zip")
    with zipfile.ZipFile(io.BytesIO(files[0][1])) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    by_tail = {name.split("/", 1)[1]: data for name, data in entries.items()}
    dataset_toml = tomllib.loads(by_tail["dataset.toml"].decode())
    config = tomllib.loads(by_tail["config.toml"].decode())
    assert dataset_toml["datasets"][0]["subsets"][0]["image_dir"] == "dataset/full"
    assert config["additional_network_arguments"]["network_dim"] == 16
    captions = {n: d.decode() for n, d in by_tail.items() if n.startswith("dataset/") and n.endswith(".txt")}
    assert len(captions) == 3 and all(text.startswith("ohwx ") for text in captions.values())
    assert captions["dataset/full/0001.txt"] == "ohwx woman, garden, smiling\n"
    assert "accelerate launch" in by_tail["README.txt"].decode()


async def test_export_with_a_bad_override_is_refused_privately(harness: BotHarness) -> None:
    await _dataset_with_images(harness)
    for overrides, expected in (("rnak=16", "unknown key `rnak`"), ("rank=0", "network_dim = 0")):
        h = await harness.sim.invoke_slash(
            "dataset export",
            {"name": "elena", "preset": "sdxl-face", "overrides": overrides},
            user=_trainer(harness),
        )
        message = await h.response(timeout=30)
        assert message is not None and h.ephemeral
        assert "Export refused; nothing was written." in message.content
        assert expected in message.content
        assert harness.sim.files_of(message.id) == []
    exports = harness.bot_app.settings.data_dir / "exports"
    assert not exports.exists() or not any(exports.iterdir())
