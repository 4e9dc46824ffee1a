"""CaptionService: generated captions, edits that keep the trigger first, bulk edits, checks, and the
training images (upright pixels, captions, subsets, face boxes) handed to the renderer."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.datasets.captioning import CaptionService
from bot.datasets.gather import DatasetGatherService
from bot.errors import InvalidInputError, NotFoundError
from sim.cloudinary import CloudinarySim
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Caption, FaceAnalysis, Image

from .images import jpeg, png, with_exif_orientation

Build = Callable[..., DatasetGatherService]


@pytest.fixture
def captions(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore) -> CaptionService:
    return CaptionService(sessions, blobs)


async def _attach(make_service: Build, dataset_id: int, files: list[tuple[str, bytes]]) -> None:
    report = await make_service().from_attachments(dataset_id, files, added_by=42)
    assert len(report.added) == len(files), report.summary()


async def _image(sessions: async_sessionmaker[AsyncSession], dataset_id: int, position: int) -> Image:
    async with unit_of_work(sessions) as session:
        image = await session.scalar(
            select(Image).where(Image.dataset_id == dataset_id, Image.position == position)
        )
        assert image is not None
        return image


async def _set_caption_raw(
    sessions: async_sessionmaker[AsyncSession], dataset_id: int, position: int, text: str
) -> None:
    """Write a caption bypassing the service (an old row, a hand-edited database)."""
    image = await _image(sessions, dataset_id, position)
    async with unit_of_work(sessions) as session:
        caption = await session.scalar(select(Caption).where(Caption.image_id == image.id))
        if caption is None:
            session.add(Caption(image_id=image.id, text=text))
        else:
            caption.text = text


async def test_generated_captions_start_with_the_trigger_and_use_cloudinary_tags(
    cloud: CloudinarySim, make_service: Build, dataset_id: int, captions: CaptionService
) -> None:
    cloud.add_asset(
        "a1",
        jpeg(1),
        asset_folder="elena",
        tags=["elena", "Portrait", "beach_day", "shoots/2024"],
        context={"caption": "smiling, red dress"},
    )
    cloud.add_asset("a2", jpeg(2), asset_folder="elena")
    await make_service(cloud=cloud).from_cloudinary(dataset_id, folder="elena", added_by=7)

    made = await captions.generate(dataset_id)

    assert (made.created, made.replaced, made.kept) == (2, 0, 0)
    lines = await captions.list(dataset_id)
    # The dataset's name (a person's name) and folder-like tags never reach the caption.
    assert [line.text for line in lines] == [
        "ohwx woman, portrait, beach day, smiling, red dress",
        "ohwx woman",
    ]
    assert not any(line.edited for line in lines)
    assert await captions.check(dataset_id) == []


async def test_an_edit_without_the_trigger_gets_it_back_in_front_and_survives_regeneration(
    make_service: Build, dataset_id: int, captions: CaptionService
) -> None:
    await _attach(make_service, dataset_id, [("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))])
    await captions.generate(dataset_id)

    dropped = await captions.edit(dataset_id, 2, "laughing, woman, ohwx, outdoors", user_id=5)
    assert dropped.trigger_restored
    assert dropped.text == "ohwx woman, laughing, woman, outdoors"

    kept = await captions.edit(dataset_id, 1, "ohwx woman,  close-up\nportrait", user_id=5)
    assert not kept.trigger_restored
    assert kept.text == "ohwx woman, close-up portrait"

    again = await captions.generate(dataset_id)
    assert (again.created, again.replaced, again.kept) == (0, 0, 2)
    texts = {line.position: (line.text, line.edited) for line in await captions.list(dataset_id)}
    assert texts == {1: ("ohwx woman, close-up portrait", True), 2: (dropped.text, True)}

    fresh = await captions.generate(dataset_id, overwrite=True)
    assert (fresh.created, fresh.replaced) == (0, 2)
    assert [(ln.text, ln.edited) for ln in await captions.list(dataset_id)] == [("ohwx woman", False)] * 2


async def test_edit_refusals(make_service: Build, dataset_id: int, captions: CaptionService) -> None:
    await _attach(make_service, dataset_id, [("a.jpg", jpeg(1))])
    with pytest.raises(NotFoundError, match="no image #9"):
        await captions.edit(dataset_id, 9, "ohwx woman", user_id=5)
    with pytest.raises(InvalidInputError, match="empty"):
        await captions.edit(dataset_id, 1, " ,  , ", user_id=5)
    with pytest.raises(InvalidInputError, match="characters"):
        await captions.edit(dataset_id, 1, "word, " * 300, user_id=5)
    assert [line.text for line in await captions.list(dataset_id)] == [None]


async def test_bulk_prefix_goes_after_the_trigger_suffix_last_and_is_not_added_twice(
    make_service: Build, dataset_id: int, captions: CaptionService
) -> None:
    await _attach(make_service, dataset_id, [("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))])
    await captions.edit(dataset_id, 1, "smiling", user_id=5)  # image 2 has no caption yet

    first = await captions.bulk(dataset_id, prefix="photo", suffix="high quality, sharp", user_id=6)
    assert (first.changed, first.unchanged) == (2, 0)
    assert [line.text for line in await captions.list(dataset_id)] == [
        "ohwx woman, photo, smiling, high quality, sharp",
        "ohwx woman, photo, high quality, sharp",
    ]
    second = await captions.bulk(dataset_id, prefix="photo", suffix="sharp", user_id=6)
    assert (second.changed, second.unchanged) == (0, 2)

    with pytest.raises(InvalidInputError, match="already first"):
        await captions.bulk(dataset_id, prefix="ohwx", user_id=6)
    with pytest.raises(InvalidInputError, match="prefix or a suffix"):
        await captions.bulk(dataset_id, prefix=" , ", user_id=6)
    assert await captions.check(dataset_id) == []


async def test_check_reports_missing_and_trigger_less_captions_of_images_in_use_only(
    make_service: Build,
    dataset_id: int,
    captions: CaptionService,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _attach(make_service, dataset_id, [(f"{i}.jpg", jpeg(i)) for i in range(1, 5)])
    await captions.generate(dataset_id)
    await _set_caption_raw(sessions, dataset_id, 2, "woman, ohwx, beach")
    await _set_caption_raw(sessions, dataset_id, 3, "   ")
    await _set_caption_raw(sessions, dataset_id, 4, "no trigger here")
    await make_service().exclude(dataset_id, [4], "another person")

    problems = await captions.check(dataset_id)

    assert len(problems) == 2
    assert "#2: caption does not start with the trigger 'ohwx'" in problems[0]
    assert "#3: empty caption" in problems[1]
    assert not any("#4" in p for p in problems)

    await captions.generate(dataset_id, overwrite=True)
    async with unit_of_work(sessions) as session:
        await session.execute(delete(Caption))
    missing = await captions.check(dataset_id)
    assert missing == ["3 images without a caption (#1, #2, #3): `/dataset caption` makes them"]


def _rgba_png() -> bytes:
    image = PILImage.new("RGBA", (64, 48), (255, 0, 0, 0))  # fully transparent red
    image.paste((0, 0, 255, 255), (0, 0, 32, 48))  # opaque blue left half
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_training_images_are_upright_captioned_and_carry_one_face_boxes(
    make_service: Build,
    dataset_id: int,
    captions: CaptionService,
    sessions: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
    tmp_path: Path,
) -> None:
    plain = jpeg(1, size=(320, 200))
    rotated = with_exif_orientation(jpeg(2, size=(320, 200)), 6)  # stored landscape, seen portrait
    files = [
        ("plain.jpg", plain),
        ("rotated.jpg", rotated),
        ("alpha.png", _rgba_png()),
        ("two-faces.jpg", jpeg(4)),
        ("other.png", png(5)),
    ]
    await _attach(make_service, dataset_id, files)
    await captions.edit(dataset_id, 1, "ohwx woman, garden", user_id=5)
    # A face-centred crop of image 1 (subset face_crops) and one of image 5, which gets excluded.
    crop_sha = blobs.put(jpeg(6, size=(128, 128)))
    crop_of_excluded_sha = blobs.put(jpeg(7, size=(128, 128)))
    first, fourth, fifth = [await _image(sessions, dataset_id, p) for p in (1, 4, 5)]
    async with unit_of_work(sessions) as session:
        for position, sha, parent in ((6, crop_sha, first), (7, crop_of_excluded_sha, fifth)):
            session.add(
                Image(
                    dataset_id=dataset_id,
                    position=position,
                    subset="face_crops",
                    derived_from_id=parent.id,
                    sha256=sha,
                    width=128,
                    height=128,
                    format="JPEG",
                    byte_size=1,
                    source_kind="crop",
                    added_by=42,
                )
            )
        session.add(FaceAnalysis(image_id=first.id, engine="dlib", face_count=1, bbox=[40, 30, 120, 140]))
        session.add(FaceAnalysis(image_id=fourth.id, engine="dlib", face_count=2, bbox=[1, 1, 50, 50]))
    await make_service().exclude(dataset_id, [5], "blurry")

    work = tmp_path / "work"
    training = await captions.training_images(dataset_id, work)

    assert (training.trigger, training.class_word, training.name) == ("ohwx", "woman", "elena")
    by_name = {str(image.name): image for image in training.images}
    assert sorted(by_name) == ["0001", "0002", "0003", "0004", "0006"]
    assert all(image.source.is_relative_to(work) for image in training.images)
    # A plain JPEG is copied byte for byte; its caption is the edited one; one face → its box.
    assert by_name["0001"].source.read_bytes() == plain
    assert by_name["0001"].caption == "ohwx woman, garden"
    assert by_name["0001"].face_bbox == (40.0, 30.0, 120.0, 140.0)
    assert by_name["0001"].sha256 == first.sha256
    # EXIF orientation 6: the pixels are written upright (kohya would ignore the tag).
    with PILImage.open(by_name["0002"].source) as upright:
        assert by_name["0002"].source.suffix == ".png"
        assert upright.size == (200, 320)
        assert upright.getexif().get(0x0112) in (None, 1)
    # Transparency is flattened on white (alpha would be read as a loss mask).
    with PILImage.open(by_name["0003"].source) as flat:
        assert flat.mode == "RGB"
        assert flat.getpixel((60, 10)) == (255, 255, 255)
        assert flat.getpixel((5, 10)) == (0, 0, 255)
    # Several faces: no box (the "main" face might be someone else's).
    assert by_name["0004"].face_bbox is None
    assert by_name["0006"].subset == "face_crops"
    assert by_name["0006"].source.read_bytes() == blobs.get(crop_sha)
    # Images without a caption get the template caption, and the notes say so.
    assert {by_name[n].caption for n in ("0002", "0003", "0004", "0006")} == {"ohwx woman"}
    assert training.notes == ["4 images had no caption yet (#2, #3, #4, #6); the template caption was used"]


async def test_training_images_of_an_empty_dataset_are_refused(
    dataset_id: int, captions: CaptionService, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="no images to train on"):
        await captions.training_images(dataset_id, tmp_path / "work")
    with pytest.raises(NotFoundError):
        await captions.list(dataset_id + 100)
