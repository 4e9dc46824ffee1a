"""Frozen snapshots: content hash, deterministic zip, and the DatasetSnapshot row."""

from __future__ import annotations

import hashlib
import io
import tomllib
import zipfile
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.training import sdscripts_schema as schema
from bot.training.render import TrainingImage, render
from bot.training.snapshots import (
    build_job_spec,
    build_zip,
    content_hash,
    create_snapshot,
    freeze,
    spec_fields,
)
from sim.testdata import TESTDATA_FACES
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Dataset, DatasetSnapshot
from worker.protocol import JobSpec

FACES = TESTDATA_FACES


def _images(caption: str = "ohwx man, photo") -> list[TrainingImage]:
    return [TrainingImage(source=p, caption=caption) for p in sorted((FACES / "obama").glob("*.jpg"))[:3]]


def test_zip_is_deterministic_and_holds_the_dataset_folder() -> None:
    result = render(_images(), preset="sdxl-v4", trigger="ohwx", class_word="man")
    first, second = (
        build_zip(result),
        build_zip(render(_images(), preset="sdxl-v4", trigger="ohwx", class_word="man")),
    )
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        # The worker unpacks the zip into dataset/: entries are relative to it, and the configs travel
        # in the job spec, never in the zip.
        assert names == [f"full/obama_{i}.{ext}" for i in (1, 2, 3) for ext in ("jpg", "txt")]
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in archive.infolist())
        assert archive.read("full/obama_1.jpg") == (FACES / "obama/obama_1.jpg").read_bytes()
        assert archive.read("full/obama_1.txt") == b"ohwx man, photo\n"
    # dataset.toml's image_dir, seen from the work dir, is where the worker unpacks those entries.
    dirs = [s["image_dir"] for s in tomllib.loads(result.dataset_toml)["datasets"][0]["subsets"]]
    assert dirs == ["dataset/full"]
    frozen = freeze(result)
    assert frozen.archive_sha256 == hashlib.sha256(first).hexdigest()
    assert frozen.manifest["archive_sha256"] == frozen.archive_sha256
    assert frozen.manifest["sdscripts_release"] == "v0.10.1"
    assert frozen.manifest["model_paths"] == {
        "pretrained_model_name_or_path": "models/sd_xl_base_1.0.safetensors"
    }


def test_job_spec_from_a_render() -> None:
    result = render(_images(), preset="flux-dev-face", trigger="ohwx", class_word="man")
    frozen = freeze(result)
    spec = build_job_spec(result, dataset_sha256=frozen.archive_sha256, job_id=5, deadline_unix=1e9)
    assert JobSpec.from_env(spec.to_env()) == spec
    assert spec.model_family == "flux" and spec.train_script == "flux_train_network.py"
    assert spec.dataset_sha256 == frozen.archive_sha256 and spec.total_steps == result.total_steps
    assert (spec.config_toml, spec.dataset_toml, spec.prompts_txt) == (
        result.config_toml,
        result.dataset_toml,
        result.prompts_txt,
    )
    config = schema.flatten_config(tomllib.loads(spec.config_toml))[0]
    assert [config[k] for k in ("pretrained_model_name_or_path", "clip_l", "t5xxl", "ae")] == [
        f"models/{source.local_name}" for source in spec.base_model.files()
    ]
    fields = spec_fields(result, dataset_sha256=frozen.archive_sha256)
    assert fields == {k: v for k, v in asdict(spec).items() if k in fields}


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
