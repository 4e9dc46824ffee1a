"""Helpers for the review tests: images (real photos, blank ones) and a seeded job."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sim.testdata import TESTDATA_FACES
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Checkpoint, Dataset, Job, JobState, Sample

REPO_ROOT = Path(__file__).resolve().parents[2]
FACES = TESTDATA_FACES


def photo(faces_dir: Path, relative: str, side: int = 512) -> bytes:
    """A test photo downscaled to ``side`` (faster to score, like a generated sample), as JPEG bytes."""
    from PIL import Image

    with Image.open(faces_dir / relative) as image:
        image = image.convert("RGB")
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def blank(colour: tuple[int, int, int] = (128, 128, 128), side: int = 256) -> bytes:
    """An image without a face."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(out, format="PNG")
    return out.getvalue()


@dataclass
class SeededJob:
    job_id: int
    dataset_id: int
    guild_id: int
    requester: int
    checkpoint_ids: dict[int, int]  # step -> id


async def seed_job(
    sessions: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
    steps_samples: Sequence[tuple[int, Sequence[bytes]]],
    *,
    dataset_name: str = "elena",
    trigger: str = "ohwx",
    total_steps: int | None = None,
    state: JobState = JobState.TRAINING,
    guild_id: int = 2000,
    requester: int = 4000,
    checkpoint_bytes: bytes | None = None,
    patience: int | None = None,
) -> SeededJob:
    """A dataset, a job and per (step, images) a collected checkpoint with its samples in the blob store."""
    async with unit_of_work(sessions) as session:
        dataset = Dataset(
            guild_id=guild_id, name=dataset_name, trigger_word=trigger, class_word="woman", owner_id=requester
        )
        session.add(dataset)
        await session.flush()
        job = Job(
            guild_id=guild_id,
            dataset_id=dataset.id,
            preset="sdxl-face",
            budget_usd=Decimal("5"),
            requested_by=requester,
            state=state.value,
            total_steps=total_steps or max((s for s, _ in steps_samples), default=0),
            rate=2.0,
            price_per_hour=Decimal("0.36"),
            early_stop_patience=patience,
        )
        session.add(job)
        await session.flush()
        ids: dict[int, int] = {}
        for step, images in steps_samples:
            data = checkpoint_bytes if checkpoint_bytes is not None else f"weights of step {step}".encode()
            sha = blobs.put(data)
            checkpoint = Checkpoint(
                job_id=job.id,
                step=step,
                file_name=f"{dataset_name}-{step:06d}.safetensors",
                sha256=sha,
                size_bytes=len(data),
                collected=True,
            )
            session.add(checkpoint)
            await session.flush()
            ids[step] = checkpoint.id
            for index, image in enumerate(images):
                session.add(
                    Sample(
                        job_id=job.id,
                        step=step,
                        prompt_index=index,
                        prompt=f"photo of ohwx woman, scene {index}",
                        file_name=f"{step}_{index}.png",
                        blob_sha256=blobs.put(image),
                    )
                )
        return SeededJob(job.id, dataset.id, guild_id, requester, ids)
