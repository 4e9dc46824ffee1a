"""Delivery of an approved checkpoint (design §2 step 7).

1. Into ComfyUI's ``loras`` folder when one is configured: ``<dataset>-<trigger>-s<step>.safetensors``
   written atomically (temporary file in the same folder, fsync, ``os.replace``), so ComfyUI never lists
   half a file; beside it a ``.json`` sidecar (the keys A1111/Forge read for LoRA metadata — "activation
   text", "preferred weight" — plus ours) and a ``.txt`` with the trigger word and sample prompts.
2. To Cloudinary as a ``raw`` asset when the account's plan allows a file that size
   (``usage()["media_limits"]["raw_max_size_bytes"]``; the free plan's 10 MB is smaller than most LoRAs).
3. Otherwise — and always, as the fallback — the message says where the file is: its blob path.

What happened is recorded in ``Checkpoint.delivered_to``. A failure of one target never hides the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import ConflictError, NotFoundError, UserError
from bot.review.notify import neutralise
from storage import datasets as dataset_store
from storage import jobs as job_store
from storage import review as store
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Checkpoint, Dataset, Job
from storage.types import utcnow

if TYPE_CHECKING:
    from bot.clients.cloudinary import CloudinaryClient

log = logging.getLogger(__name__)

# Identity LoRAs are usually applied a little under full strength; 0.8 keeps the face and leaves the
# base model room for the prompt. Presets may pass their own.
DEFAULT_WEIGHT = 0.8
CLOUDINARY_FOLDER = "loras"
_CHUNK = 1 << 20


def slug(text: str, *, limit: int = 40) -> str:
    """A file-name-safe form: ASCII letters, digits, ``.``/``_``; anything else becomes ``_``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^A-Za-z0-9._]+", "_", ascii_text).strip("._")
    return cleaned[:limit] or "lora"


def lora_file_name(dataset: str, trigger: str, step: int) -> str:
    """``<dataset>-<trigger>-s<step>.safetensors`` with both names made safe for any file system."""
    return f"{slug(dataset)}-{slug(trigger)}-s{step}.safetensors"


def sidecar_metadata(
    *,
    dataset: str,
    trigger: str,
    class_word: str,
    step: int,
    job_id: int,
    preset: str,
    weight: float,
    prompts: Sequence[str],
    sha256: str,
    score_mean: float | None,
    engine: str | None,
    approved_by: Sequence[int],
) -> dict[str, Any]:
    """The ``.json`` sidecar. The first keys are what A1111/Forge's LoRA cards read; ``loraops`` is ours."""
    return {
        "description": f"Identity LoRA of {dataset} ({trigger} {class_word}), step {step}, by loraops.",
        "activation text": trigger,
        "preferred weight": weight,
        "notes": "Sample prompts:\n" + "\n".join(prompts),
        "loraops": {
            "dataset": dataset,
            "trigger_word": trigger,
            "class_word": class_word,
            "job_id": job_id,
            "step": step,
            "preset": preset,
            "recommended_weight": weight,
            "sample_prompts": list(prompts),
            "sha256": sha256,
            "face_similarity_mean": score_mean,
            "face_engine": engine,
            "approved_by": [str(user) for user in approved_by],
        },
    }


def sidecar_text(meta: dict[str, Any]) -> str:
    """The ``.txt`` sidecar: trigger word first (tools that read trigger words take the first line)."""
    ours = meta["loraops"]
    weight = ours["recommended_weight"]
    lines = [
        ours["trigger_word"],
        "",
        f"LoRA weight: {weight}  (e.g. <lora:{ours['file_stem']}:{weight}>)"
        if "file_stem" in ours
        else f"LoRA weight: {weight}",
        f"Dataset: {ours['dataset']}, step {ours['step']}, preset {ours['preset']}, job #{ours['job_id']}",
        "",
        "Sample prompts:",
        *ours["sample_prompts"],
    ]
    return "\n".join(lines) + "\n"


def write_atomic(target: Path, *, source: Path | None = None, data: bytes | None = None) -> None:
    """Write ``target`` from a file or bytes; readers only ever see the old or the complete new file."""
    if (source is None) == (data is None):
        raise ValueError("give exactly one of source or data")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            if source is not None:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out, _CHUNK)
            else:
                assert data is not None
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; ComfyUI may run as another user
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def install_lora(source: Path, loras_dir: Path, file_name: str, meta: dict[str, Any]) -> list[Path]:
    """Copy the LoRA and write its sidecars into ``loras_dir`` (blocking). Returns the written paths.

    The sidecars go first and the weights last, so a LoRA that ComfyUI can see always has its card.
    """
    target = loras_dir / file_name
    stem = target.stem
    meta = {**meta, "loraops": {**meta["loraops"], "file_stem": stem}}
    json_path = target.with_suffix(".json")
    txt_path = target.with_suffix(".txt")
    write_atomic(json_path, data=(json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode())
    write_atomic(txt_path, data=sidecar_text(meta).encode())
    write_atomic(target, source=source)
    return [target, json_path, txt_path]


@dataclass
class DeliveryResult:
    """Where an approved checkpoint went. ``text()`` is the channel message (user text neutralised)."""

    job_id: int
    step: int
    file_name: str
    blob_path: str
    size_bytes: int
    local_path: str | None = None
    cloudinary_url: str | None = None
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [
            f"Checkpoint step {self.step} of job #{self.job_id} (`{neutralise(self.file_name)}`, "
            f"{self.size_bytes / 1e6:.1f} MB) delivered:"
        ]
        if self.local_path:
            lines.append(
                f"• ComfyUI loras folder: `{neutralise(self.local_path)}` (with .json/.txt sidecars)"
            )
        if self.cloudinary_url:
            lines.append(f"• Cloudinary: {neutralise(self.cloudinary_url)}")
        if not self.local_path and not self.cloudinary_url:
            lines.append(f"• kept in the bot's store: `{neutralise(self.blob_path)}`")
        lines.extend(f"  ({neutralise(note)})" for note in self.notes)
        return "\n".join(lines)


class DeliveryService:
    """Delivers approved checkpoints to ComfyUI and/or Cloudinary and records where they went."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        blobs: BlobStore,
        *,
        loras_dir: Path | None,
        cloudinary: CloudinaryClient | None = None,
        weight: float = DEFAULT_WEIGHT,
    ) -> None:
        self._sessions = sessions
        self._blobs = blobs
        self._loras_dir = loras_dir
        self._cloudinary = cloudinary
        self._weight = weight

    async def deliver(self, job_id: int, step: int) -> DeliveryResult:
        """Deliver an approved checkpoint everywhere configured; raises ``ConflictError`` if it isn't approved
        or its bytes were not collected."""
        async with self._sessions() as session:
            checkpoint, job, dataset = await self._load(session, job_id, step)
            prompts = await self._prompts(session, job_id)
        if not checkpoint.approved:
            raise ConflictError(f"Checkpoint step {step} of job #{job_id} is not approved.")
        source = self._blobs.path_for(checkpoint.sha256)
        if not checkpoint.collected or not source.exists():
            raise ConflictError(f"Checkpoint step {step} of job #{job_id} was not collected from the pod.")

        file_name = lora_file_name(dataset.name, dataset.trigger_word, step)
        weight = float(job.params.get("recommended_weight", self._weight))
        meta = sidecar_metadata(
            dataset=dataset.name,
            trigger=dataset.trigger_word,
            class_word=dataset.class_word,
            step=step,
            job_id=job_id,
            preset=job.preset,
            weight=weight,
            prompts=prompts,
            sha256=checkpoint.sha256,
            score_mean=checkpoint.score_mean,
            engine=checkpoint.engine,
            approved_by=checkpoint.approved_by,
        )
        result = DeliveryResult(job_id, step, file_name, str(source), checkpoint.size_bytes)
        record: dict[str, Any] = {"blob": {"path": str(source), "sha256": checkpoint.sha256}}
        at = utcnow().isoformat()

        if self._loras_dir is not None:
            try:
                written = await asyncio.to_thread(install_lora, source, self._loras_dir, file_name, meta)
                result.local_path = str(written[0])
                record["comfyui"] = {
                    "path": str(written[0]),
                    "sidecars": [str(p) for p in written[1:]],
                    "at": at,
                }
            except OSError as exc:
                log.warning("delivery to %s failed: %s", self._loras_dir, exc)
                result.notes.append(f"copy to the ComfyUI loras folder failed: {exc.strerror or exc}")
                record["comfyui"] = {"error": str(exc), "at": at}

        if self._cloudinary is not None:
            record["cloudinary"] = await self._upload(source, checkpoint, file_name, dataset, job, result, at)

        async with unit_of_work(self._sessions) as session:
            row = await job_store.checkpoint(session, checkpoint.id)
            assert row is not None
            row.delivered_to = record
        return result

    async def _upload(
        self,
        source: Path,
        checkpoint: Checkpoint,
        file_name: str,
        dataset: Dataset,
        job: Job,
        result: DeliveryResult,
        at: str,
    ) -> dict[str, Any]:
        assert self._cloudinary is not None
        try:
            limit = await self._cloudinary.max_file_size("raw")
        except UserError as exc:
            result.notes.append(f"Cloudinary usage could not be read, not uploaded: {exc}")
            return {"skipped": f"usage unavailable: {exc}", "at": at}
        if limit is None or checkpoint.size_bytes > limit:
            why = (
                f"the plan's raw file limit is {limit / 1e6:.1f} MB"
                if limit is not None
                else "the plan reports no raw file limit"
            )
            result.notes.append(
                f"not uploaded to Cloudinary: {why}, the file is {checkpoint.size_bytes / 1e6:.1f} MB"
            )
            return {"skipped": why, "limit_bytes": limit, "at": at}
        data = await asyncio.to_thread(source.read_bytes)
        try:
            uploaded = await self._cloudinary.upload(
                data,
                filename=file_name,
                resource_type="raw",
                asset_folder=CLOUDINARY_FOLDER,
                # Raw assets keep their extension in the public id (that is how they are served).
                public_id=f"{CLOUDINARY_FOLDER}/{file_name}",
                tags=("loraops", "lora", f"job-{job.id}", slug(dataset.name)),
                context={"trigger": dataset.trigger_word, "step": str(checkpoint.step)},
            )
        except UserError as exc:
            result.notes.append(f"Cloudinary upload failed: {exc}")
            return {"error": str(exc), "at": at}
        url = str(uploaded.get("secure_url") or uploaded.get("url") or "")
        result.cloudinary_url = url or None
        return {"url": url, "public_id": uploaded.get("public_id"), "bytes": uploaded.get("bytes"), "at": at}

    async def _load(self, session: AsyncSession, job_id: int, step: int) -> tuple[Checkpoint, Job, Dataset]:
        checkpoint = await job_store.checkpoint_at(session, job_id, step)
        if checkpoint is None:
            raise NotFoundError(f"Job #{job_id} has no checkpoint at step {step}.")
        job = await job_store.job(session, job_id)
        assert job is not None  # the foreign key guarantees it
        dataset = await dataset_store.get_dataset(session, job.dataset_id)
        assert dataset is not None
        return checkpoint, job, dataset

    async def _prompts(self, session: AsyncSession, job_id: int) -> list[str]:
        prompts: dict[int, str] = {}
        for index, prompt in await store.sample_prompts(session, job_id):
            if prompt and index not in prompts:
                prompts[index] = prompt
        return [prompts[i] for i in sorted(prompts)]
