"""Ingest of handed-over files: hostile inputs refused with reasons, valid ones kept, duplicates found."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.datasets.gather import DatasetGatherService
from bot.datasets.imaging import load_oriented_rgb
from bot.datasets.ingest import IngestLimits, NamedBytes
from bot.datasets.report import IngestProgress
from bot.errors import NotFoundError
from storage.blobs import BlobStore
from storage.models import Image

from .images import (
    huge_png,
    jpeg,
    lying_zip_bomb,
    make_zip,
    png,
    reencode,
    truncated,
    with_exif_orientation,
    zip_bomb,
)

Build = Callable[..., DatasetGatherService]
MiB = 1024 * 1024


async def _images(sessions: async_sessionmaker[AsyncSession], dataset_id: int) -> list[Image]:
    async with sessions() as session:
        rows = await session.scalars(
            select(Image).where(Image.dataset_id == dataset_id).order_by(Image.position)
        )
        return list(rows.all())


async def test_hostile_files_refused_with_reasons_while_valid_ones_are_kept(
    make_service: Build, dataset_id: int, sessions: async_sessionmaker[AsyncSession], blobs: BlobStore
) -> None:
    limits = IngestLimits(zip_max_total_bytes=8 * MiB, max_file_bytes=8 * MiB)
    service = make_service(limits=limits)
    good_jpeg, good_png, in_zip = jpeg(1), png(2), jpeg(3)
    batch = [
        NamedBytes("good.jpg", good_jpeg),
        NamedBytes(
            "traversal.zip",
            make_zip(
                {
                    "../../etc/evil.jpg": jpeg(4),
                    "fine/inside.jpg": in_zip,
                    "/abs.jpg": jpeg(5),
                    "C:/win.jpg": jpeg(6),
                }
            ),
        ),
        NamedBytes("bomb.zip", zip_bomb(40 * MiB)),
        NamedBytes("liar.zip", lying_zip_bomb(40 * MiB)),
        NamedBytes("truncated.jpg", truncated(jpeg(7, size=(512, 512)))),
        NamedBytes("notes.jpg", b"these are my notes, not a photo\n" * 10),
        NamedBytes("huge.png", huge_png(20000, 20000)),
        NamedBytes("readme.txt", b"hello"),
        NamedBytes("good.png", good_png),
    ]
    report = await service.from_attachments(dataset_id, batch, added_by=9)

    assert [(a.position, a.name) for a in report.added] == [
        (1, "good.jpg"),
        (2, "traversal.zip/fine/inside.jpg"),
        (3, "good.png"),
    ]
    reasons = {r.name: r.reason for r in report.rejected}
    assert reasons["traversal.zip/../../etc/evil.jpg"] == "unsafe path (path traversal with ..)"
    assert reasons["traversal.zip//abs.jpg"] == "unsafe path (absolute path)"
    assert reasons["traversal.zip/C:/win.jpg"] == "unsafe path (drive letter)"
    assert reasons["bomb.zip"] == "zip bomb guard: it would unpack to 40.0 MiB (the limit is 8.0 MiB)"
    assert reasons["liar.zip"].startswith(
        "zip bomb guard: 'photos/innocent.jpg' unpacks to more than its header"
    )
    assert reasons["truncated.jpg"].startswith("truncated JPEG file")
    assert reasons["notes.jpg"] == "not an image: the content is text"
    assert reasons["huge.png"].startswith("too many pixels: 20000×20000 is 400.0 MP; the limit is 80.0 MP")
    assert len(reasons) == 8
    assert [(s.name, s.reason) for s in report.skipped] == [
        ("readme.txt", "not an image (the content is text)")
    ]

    images = await _images(sessions, dataset_id)
    assert [(i.position, i.format, i.source_kind, i.added_by) for i in images] == [
        (1, "JPEG", "attachment", 9),
        (2, "JPEG", "zip", 9),
        (3, "PNG", "attachment", 9),
    ]
    assert images[1].source_ref == "traversal.zip!fine/inside.jpg"
    assert [blobs.get(i.sha256) for i in images] == [good_jpeg, in_zip, good_png]
    assert images[0].byte_size == len(good_jpeg) and (images[0].width, images[0].height) == (256, 256)

    summary = report.summary()
    assert len(summary) <= 2000
    assert "added 3 images (#1–#3); 8 rejected; 1 skipped (not images)" in summary
    assert "• `huge.png`: too many pixels" in summary
    assert "liar.zip" in report.detail() and "#3  good.png" in report.detail()


async def test_near_duplicate_detected_by_perceptual_hash(make_service: Build, dataset_id: int) -> None:
    service = make_service()
    original = jpeg(11, size=(640, 480))
    first = await service.from_attachments(dataset_id, [NamedBytes("a.jpg", original)], added_by=1)
    assert [a.position for a in first.added] == [1]

    resized = reencode(original, "JPEG", size=(320, 240), quality=70)
    as_png = reencode(original, "PNG")
    other = jpeg(12, size=(640, 480))
    report = await service.from_attachments(
        dataset_id,
        [
            NamedBytes("small.jpg", resized),
            NamedBytes("a-copy.jpg", original),
            NamedBytes("a.png", as_png),
            NamedBytes("other.jpg", other),
            NamedBytes("other-again.jpg", other),
        ],
        added_by=1,
    )
    assert [a.name for a in report.added] == ["other.jpg"]
    dups = {d.name: d for d in report.duplicates}
    assert dups["small.jpg"].kind == "same picture" and dups["small.jpg"].of_position == 1
    assert dups["small.jpg"].distance is not None and dups["small.jpg"].distance <= 4
    assert dups["a.png"].kind == "same picture" and dups["a.png"].of_position == 1
    assert dups["a-copy.jpg"].kind == "same file" and dups["a-copy.jpg"].of_position == 1
    # A duplicate within the same batch points at the position it just got.
    assert dups["other-again.jpg"].kind == "same file" and dups["other-again.jpg"].of_position == 2
    assert "`small.jpg`: same picture as #1 (pHash distance" in report.summary()


async def test_exif_orientation_applied_to_measurements_and_hash(
    make_service: Build, dataset_id: int, sessions: async_sessionmaker[AsyncSession], blobs: BlobStore
) -> None:
    stored_sideways = jpeg(21, size=(300, 200))
    tagged = with_exif_orientation(stored_sideways, 6)  # "rotate 90° clockwise to view"
    service = make_service()
    report = await service.from_attachments(dataset_id, [("phone.jpg", tagged)], added_by=1)
    assert [(a.width, a.height) for a in report.added] == [(200, 300)]
    (image,) = await _images(sessions, dataset_id)
    assert (image.width, image.height) == (200, 300)
    assert blobs.get(image.sha256) == tagged  # the original bytes are what we keep
    upright = load_oriented_rgb(tagged)
    assert upright.size == (200, 300)

    # The same photo already turned upright by another app is the same picture.
    sideways = PILImage.open(io.BytesIO(stored_sideways)).transpose(PILImage.Transpose.ROTATE_270)
    out = io.BytesIO()
    sideways.save(out, format="JPEG", quality=92)
    again = await service.from_attachments(
        dataset_id, [NamedBytes("upright.jpg", out.getvalue())], added_by=1
    )
    assert again.added == [] and again.duplicates[0].kind == "same picture"


async def test_progress_reported_per_chunk_and_a_failing_callback_does_not_stop_ingest(
    make_service: Build, dataset_id: int
) -> None:
    service = make_service()
    service.ingestor.chunk_size = 4
    seen: list[IngestProgress] = []

    async def progress(snapshot: IngestProgress) -> None:
        seen.append(snapshot)
        raise RuntimeError("Discord edit failed")

    files = [NamedBytes(f"{i}.jpg", jpeg(100 + i)) for i in range(10)]
    report = await service.from_attachments(dataset_id, files, added_by=1, progress=progress)
    assert len(report.added) == 10
    assert [(s.phase, s.done, s.total) for s in seen] == [
        ("processing", 4, 10),
        ("processing", 8, 10),
        ("processing", 10, 10),
        ("done", 10, 10),
    ]
    assert "Processing… 4/10 files: 4 added" in seen[0].text()


async def test_summary_stays_under_discord_limit_with_hundreds_of_problems(
    make_service: Build, dataset_id: int
) -> None:
    service = make_service()
    files = [
        NamedBytes(f"scan-{i:03d}-with-a-rather-long-file-name.jpg", b"not an image") for i in range(300)
    ]
    files.append(NamedBytes("ok.jpg", jpeg(5)))
    report = await service.from_attachments(dataset_id, files, added_by=1)
    summary = report.summary()
    assert len(summary) <= 2000
    assert "added 1 image (#1); 300 rejected" in summary
    assert "more (see the full report)" in summary and report.truncated
    assert report.detail().count("not an image: the content is text") == 300


async def test_zip_entry_limit_and_nested_zip_and_encrypted_or_corrupt_zip(
    make_service: Build, dataset_id: int
) -> None:
    service = make_service(limits=IngestLimits(zip_max_entries=3))
    many = make_zip({f"{i}.jpg": jpeg(200 + i) for i in range(4)})
    nested = make_zip({"inner.zip": make_zip({"x.jpg": jpeg(300)}), "y.jpg": jpeg(301)})
    broken = make_zip({"z.jpg": jpeg(302)})[:-30]
    report = await service.from_attachments(
        dataset_id,
        [NamedBytes("many.zip", many), NamedBytes("nested.zip", nested), NamedBytes("broken.zip", broken)],
        added_by=1,
    )
    reasons = {r.name: r.reason for r in report.rejected}
    assert reasons["many.zip"] == "too many entries (4; the limit is 3)"
    assert reasons["broken.zip"].startswith("not a readable zip archive")
    assert [a.name for a in report.added] == ["nested.zip/y.jpg"]
    assert [s.name for s in report.skipped] == ["nested.zip/inner.zip"]


async def test_unknown_dataset(make_service: Build) -> None:
    with pytest.raises(NotFoundError):
        await make_service().from_attachments(999, [NamedBytes("a.jpg", jpeg(1))], added_by=1)
