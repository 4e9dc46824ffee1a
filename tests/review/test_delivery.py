"""Delivery of an approved checkpoint: ComfyUI loras folder (atomic, sidecars), Cloudinary, blob path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clients.cloudinary import CloudinaryClient, CloudinaryCredentials
from bot.config import Settings
from bot.errors import ConflictError
from bot.retry import RetryPolicy
from bot.review.delivery import DeliveryService, lora_file_name, slug, write_atomic
from bot.review.votes import VoteService
from bot.roles import Member, RoleNames
from sim.cloudinary.server import CloudinarySim
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Checkpoint

from ._helpers import SeededJob, seed_job

WEIGHTS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 64  # a small stand-in LoRA
ROLES = RoleNames("trainer", "reviewer", "admin")


async def _approved_job(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, **kw: object
) -> SeededJob:
    seeded = await seed_job(
        sessions,
        BlobStore(settings.blob_dir),
        [(500, []), (1000, [])],
        checkpoint_bytes=WEIGHTS,
        **kw,  # type: ignore[arg-type]
    )
    await VoteService(sessions).promote(seeded.job_id, 1000, member=Member.of(21, ["trainer"]), roles=ROLES)
    return seeded


@pytest.fixture
async def cloudinary() -> AsyncIterator[CloudinarySim]:
    sim = CloudinarySim()
    await sim.start()
    yield sim
    await sim.close()


def _client(sim: CloudinarySim) -> CloudinaryClient:
    credentials = CloudinaryCredentials(
        sim.cloud_name, sim.api_key, sim.api_secret, upload_prefix=sim.base_url
    )
    return CloudinaryClient(credentials, retry=RetryPolicy(attempts=1, base_delay_s=0.0, max_delay_s=0.0))


def test_file_names_are_safe() -> None:
    assert lora_file_name("elena", "ohwx", 1500) == "elena-ohwx-s1500.safetensors"
    assert (
        lora_file_name("../../etc/Éléna <@everyone>", "oh wx", 20)
        == "etc_Elena_everyone-oh_wx-s20.safetensors"
    )
    assert slug("///") == "lora"


def test_write_atomic_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "loras" / "x.safetensors"
    write_atomic(target, data=b"first")
    write_atomic(target, data=b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["x.safetensors"]  # no temporary files left


async def test_delivery_lands_the_file_and_sidecars_in_the_loras_folder(sessions, settings, tmp_path) -> None:
    seeded = await _approved_job(sessions, settings, dataset_name="elena", trigger="ohwx")
    loras = tmp_path / "ComfyUI" / "models" / "loras"
    service = DeliveryService(sessions, BlobStore(settings.blob_dir), loras_dir=loras, weight=0.75)
    result = await service.deliver(seeded.job_id, 1000)

    lora = loras / "elena-ohwx-s1000.safetensors"
    assert result.local_path == str(lora)
    assert lora.read_bytes() == WEIGHTS
    meta = json.loads((loras / "elena-ohwx-s1000.json").read_text())
    assert meta["activation text"] == "ohwx" and meta["preferred weight"] == 0.75
    assert meta["loraops"]["sample_prompts"] == []  # this job had no samples
    assert meta["loraops"]["step"] == 1000 and meta["loraops"]["approved_by"] == ["21"]
    text = (loras / "elena-ohwx-s1000.txt").read_text()
    assert text.splitlines()[0] == "ohwx"
    assert "<lora:elena-ohwx-s1000:0.75>" in text
    assert sorted(p.name for p in loras.iterdir()) == [
        "elena-ohwx-s1000.json",
        "elena-ohwx-s1000.safetensors",
        "elena-ohwx-s1000.txt",
    ]
    async with sessions() as session:
        checkpoint = await session.get(Checkpoint, seeded.checkpoint_ids[1000])
    assert checkpoint is not None
    assert checkpoint.delivered_to["comfyui"]["path"] == str(lora)
    assert "ComfyUI loras folder" in result.text()


async def test_sidecar_lists_the_sample_prompts(sessions, settings, tmp_path) -> None:
    blobs = BlobStore(settings.blob_dir)
    seeded = await seed_job(sessions, blobs, [(1000, [b"a", b"b"])], checkpoint_bytes=WEIGHTS)
    await VoteService(sessions).promote(seeded.job_id, 1000, member=Member.of(21, ["trainer"]), roles=ROLES)
    await DeliveryService(sessions, blobs, loras_dir=tmp_path / "loras").deliver(seeded.job_id, 1000)
    meta = json.loads((tmp_path / "loras" / "elena-ohwx-s1000.json").read_text())
    assert meta["loraops"]["sample_prompts"] == [
        "photo of ohwx woman, scene 0",
        "photo of ohwx woman, scene 1",
    ]


async def test_unapproved_or_uncollected_checkpoints_are_not_delivered(sessions, settings, tmp_path) -> None:
    seeded = await _approved_job(sessions, settings)
    loras = tmp_path / "loras"
    service = DeliveryService(sessions, BlobStore(settings.blob_dir), loras_dir=loras)
    with pytest.raises(ConflictError, match="not approved"):
        await service.deliver(seeded.job_id, 500)
    async with unit_of_work(sessions) as session:
        checkpoint = await session.get(Checkpoint, seeded.checkpoint_ids[1000])
        assert checkpoint is not None
        checkpoint.collected = False
    with pytest.raises(ConflictError, match="not collected"):
        await service.deliver(seeded.job_id, 1000)
    assert not loras.exists()


async def test_uploads_to_cloudinary_when_the_plan_allows(sessions, settings, cloudinary) -> None:
    seeded = await _approved_job(sessions, settings)
    service = DeliveryService(
        sessions, BlobStore(settings.blob_dir), loras_dir=None, cloudinary=_client(cloudinary)
    )
    result = await service.deliver(seeded.job_id, 1000)
    assert result.cloudinary_url and result.local_path is None
    uploads = [asset for key, asset in cloudinary.assets.items() if key[0] == "raw"]
    assert len(uploads) == 1
    async with sessions() as session:
        checkpoint = await session.get(Checkpoint, seeded.checkpoint_ids[1000])
    assert checkpoint is not None and checkpoint.delivered_to["cloudinary"]["url"] == result.cloudinary_url


async def test_too_big_for_the_plan_says_where_the_file_is(sessions, settings, cloudinary) -> None:
    cloudinary.media_limits["raw_max_size_bytes"] = len(WEIGHTS) - 1
    seeded = await _approved_job(sessions, settings)
    blobs = BlobStore(settings.blob_dir)
    service = DeliveryService(sessions, blobs, loras_dir=None, cloudinary=_client(cloudinary))
    result = await service.deliver(seeded.job_id, 1000)
    assert result.cloudinary_url is None
    assert not [key for key in cloudinary.assets if key[0] == "raw"]  # nothing was sent
    assert not [r for r in cloudinary.requests if "upload" in r.path]
    text = result.text()
    async with sessions() as session:
        sha = (await session.get(Checkpoint, seeded.checkpoint_ids[1000])).sha256  # type: ignore[union-attr]
    assert result.blob_path == str(blobs.path_for(sha))
    assert result.blob_path in text
    assert "not uploaded to Cloudinary" in text
    async with sessions() as session:
        checkpoint = await session.get(Checkpoint, seeded.checkpoint_ids[1000])
    assert checkpoint is not None and "skipped" in checkpoint.delivered_to["cloudinary"]
