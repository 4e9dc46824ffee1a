"""Dataset snapshots: a job trains a frozen, content-addressed dataset, never a moving one (design §4).

:func:`freeze` turns a :class:`~bot.training.render.RenderResult` into a manifest, a content hash and the
zip the worker receives. The hash covers the sorted image sha256s with their subsets and captions and the
rendered config.toml, dataset.toml and prompts.txt, so the same images + captions + preset + overrides
give the same hash, and any change gives another. The zip's bytes are deterministic: entries sorted
by path, fixed timestamp (1980-01-01, the zip epoch), fixed permissions, stored uncompressed (images
are compressed already, and no zlib version can change the bytes).

What goes where (``worker.protocol``'s work-directory contract): the zip holds only the contents of
the work dir's ``dataset/`` folder (``full/<name>.<ext>``, ``full/<name>.txt``, ``face_crops/...``),
because the worker unpacks it into ``dataset/``; config.toml, dataset.toml and prompts.txt travel in
the job spec (:func:`build_job_spec`), never in the zip.

:func:`create_snapshot` stores the zip in the blob store and the ``DatasetSnapshot`` row in one unit of
work; freezing the same content twice returns the existing row.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.training import sdscripts_schema as schema
from bot.training.render import RenderResult
from storage import datasets
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import DatasetSnapshot
from worker.protocol import JobSpec

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_FILE_MODE = 0o100644
# Bumped when the zip's layout changes, so a snapshot row frozen with an older layout (same images and
# configs) is never reused for a new job: its zip would not unpack where the configs point.
ZIP_LAYOUT = 2  # 2: entries relative to dataset/, no config files in the zip


@dataclass(frozen=True)
class FrozenSnapshot:
    content_hash: str
    manifest: dict[str, Any]
    archive: bytes
    archive_sha256: str


def content_hash(result: RenderResult) -> str:
    """sha256 over the sorted images (sha256, subset, caption, masked) and the rendered files' text."""
    images = sorted(
        (row["sha256"], row["subset"], row["caption"], bool(row["masked"]), row["file"])
        for row in result.images
    )
    canonical = json.dumps(
        {
            "layout": ZIP_LAYOUT,
            "images": images,
            "config_toml": result.config_toml,
            "dataset_toml": result.dataset_toml,
            "prompts_txt": result.prompts_txt,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_zip(result: RenderResult) -> bytes:
    """The dataset zip (contents of the work dir's ``dataset/``) with deterministic bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for item in result.dataset_files():
            info = zipfile.ZipInfo(item.path, date_time=ZIP_DATE_TIME)
            info.external_attr = ZIP_FILE_MODE << 16
            info.create_system = 3  # unix, whatever machine builds it
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, item.read())
    return buffer.getvalue()


def manifest_for(result: RenderResult, *, digest: str, archive_sha256: str) -> dict[str, Any]:
    """What the DatasetSnapshot row records (JSON): enough to rebuild the job spec without the zip."""
    preset = result.preset
    return {
        "content_hash": digest,
        "archive_sha256": archive_sha256,
        "preset": preset.name,
        "family": preset.family,
        "script": result.script,
        "sdscripts_release": schema.release(),
        "overrides": result.overrides,
        "trigger": result.trigger,
        "class_word": result.class_word,
        "output_name": result.output_name,
        "total_steps": result.total_steps,
        "early_stop_patience": preset.early_stop_patience,
        "checkpoint_every_n_steps": preset.checkpoint_every_n_steps,
        "sample_every_n_steps": preset.sample_every_n_steps,
        "base_model": preset.base_model,
        "base_model_source": asdict(result.base_model),
        "model_paths": result.model_paths,
        "zip_layout": ZIP_LAYOUT,
        "prompts": [{"kind": p.kind, "seed": p.seed} for p in preset.prompts],
        "images": [dict(row) for row in result.images],
        "config_toml": result.config_toml,
        "dataset_toml": result.dataset_toml,
        "prompts_txt": result.prompts_txt,
        "warnings": list(result.warnings),
    }


def spec_fields(result: RenderResult, *, dataset_sha256: str) -> dict[str, Any]:
    """The :class:`~worker.protocol.JobSpec` fields that depend on neither the job id nor the deadline
    (JSON-ready: ``base_model`` as a dict), e.g. to store on the job row before it has an id."""
    return {
        "model_family": result.family,
        "base_model": asdict(result.base_model),
        "config_toml": result.config_toml,
        "dataset_toml": result.dataset_toml,
        "prompts_txt": result.prompts_txt,
        "total_steps": result.total_steps,
        "dataset_sha256": dataset_sha256,
    }


def build_job_spec(
    result: RenderResult, *, dataset_sha256: str, job_id: int, deadline_unix: float
) -> JobSpec:
    """The worker's job spec for ``result`` whose snapshot zip has ``dataset_sha256``
    (:attr:`FrozenSnapshot.archive_sha256`, or ``DatasetSnapshot.archive_sha256``).

    The spec is the one source of config.toml, dataset.toml and prompts.txt; its base model is the one
    config.toml's ``models/...`` paths were rendered from (``result.base_model``).
    """
    return JobSpec(
        job_id=job_id,
        model_family=result.family,
        base_model=result.base_model,
        config_toml=result.config_toml,
        dataset_toml=result.dataset_toml,
        prompts_txt=result.prompts_txt,
        total_steps=result.total_steps,
        dataset_sha256=dataset_sha256,
        deadline_unix=deadline_unix,
    )


def freeze(result: RenderResult) -> FrozenSnapshot:
    """Hash, manifest and zip of a render (CPU and I/O: call it in a thread)."""
    digest = content_hash(result)
    archive = build_zip(result)
    archive_sha = hashlib.sha256(archive).hexdigest()
    return FrozenSnapshot(
        digest, manifest_for(result, digest=digest, archive_sha256=archive_sha), archive, archive_sha
    )


async def create_snapshot(
    sessions: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
    *,
    dataset_id: int,
    created_by: int,
    result: RenderResult,
) -> DatasetSnapshot:
    """Freeze ``result``, store its zip, and record (or find) the snapshot row of ``dataset_id``."""
    frozen = await asyncio.to_thread(freeze, result)
    await asyncio.to_thread(blobs.put, frozen.archive)
    async with unit_of_work(sessions) as session:
        existing = await datasets.snapshot_with_hash(session, dataset_id, frozen.content_hash)
        if existing is not None:
            return existing
        row = DatasetSnapshot(
            dataset_id=dataset_id,
            content_hash=frozen.content_hash,
            preset=result.preset.name,
            manifest=frozen.manifest,
            archive_sha256=frozen.archive_sha256,
            image_count=len(result.images),
            created_by=created_by,
        )
        return await datasets.add_snapshot(session, row)
