"""Frozen snapshots: content hash, deterministic zip, and the DatasetSnapshot row."""

from __future__ import annotations

import hashlib
import io
import tomllib
import zipfile
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.training.render import TrainingImage, render
from bot.training.snapshots import build_zip, content_hash, create_snapshot, freeze
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Dataset, DatasetSnapshot

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "faces"


def _images(caption: str = "ohwx man, photo") -> list[TrainingImage]:
    return [TrainingImage(source=p, caption=caption) for p in sorted((FACES / "obama").glob("*.jpg"))[:3]]


def test_zip_is_deterministic_and_holds_the_work_dir() -> None:
    result = render(_images(), preset="sdxl-v4", trigger="ohwx", class_word="man")
    first, second = (
        build_zip(result),
        build_zip(render(_images(), preset="sdxl-v4", trigger="ohwx", class_word="man")),
    )
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert {
            "config.toml",
            "dataset.toml",
            "prompts.txt",
            "dataset/full/obama_1.jpg",
            "dataset/full/obama_1.txt",
        } <= set(names)
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in archive.infolist())
        assert (
            tomllib.loads(archive.read("config.toml").decode())["saving_arguments"]["output_dir"] == "output"
        )
        assert archive.read("dataset/full/obama_1.jpg") == (FACES / "obama/obama_1.jpg").read_bytes()
    frozen = freeze(result)
    assert frozen.archive_sha256 == hashlib.sha256(first).hexdigest()
    assert frozen.manifest["archive_sha256"] == frozen.archive_sha256
    assert frozen.manifest["sdscripts_release"] == "v0.10.1"


def test_content_hash_follows_content() -> None:
    base = content_hash(render(_images(), preset="sdxl-v4", trigger="ohwx", class_word="man"))
    assert base == content_hash(render(_images(), preset="sdxl-v4", trigger="ohwx", class_word="man"))
    changed_caption = content_hash(
        render(_images("ohwx man, smiling"), preset="sdxl-v4", trigger="ohwx", class_word="man")
    )
    changed_config = content_hash(
        render(_images(), preset="sdxl-v4", trigger="ohwx", class_word="man", overrides={"steps": "1000"})
    )
    assert len({base, changed_caption, changed_config}) == 3


async def test_create_snapshot_stores_row_and_blob(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    async with unit_of_work(sessions) as session:
        dataset = Dataset(guild_id=1, name="obama", trigger_word="ohwx", class_word="man", owner_id=7)
        session.add(dataset)
        await session.flush()
        dataset_id = dataset.id
    blobs = BlobStore(tmp_path / "blobs")
    result = render(_images(), preset="sdxl-v4", trigger="ohwx", class_word="man")
    row = await create_snapshot(sessions, blobs, dataset_id=dataset_id, created_by=7, result=result)
    assert row.preset == "sdxl-v4" and row.image_count == 3
    assert row.archive_sha256 is not None and blobs.exists(row.archive_sha256)
    assert hashlib.sha256(blobs.get(row.archive_sha256)).hexdigest() == row.archive_sha256
    assert row.manifest["total_steps"] == 1500 and len(row.manifest["images"]) == 3
    again = await create_snapshot(sessions, blobs, dataset_id=dataset_id, created_by=8, result=result)
    assert again.id == row.id
    async with unit_of_work(sessions) as session:
        assert await session.scalar(select(func.count()).select_from(DatasetSnapshot)) == 1
