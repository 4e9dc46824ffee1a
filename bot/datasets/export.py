"""Export a dataset as a zip for local training, and freeze it into a snapshot for a training job.

The zip holds one folder laid out like the worker's work directory (``bot.training.render``):
``dataset/full/<nnnn>.<ext>`` + ``<nnnn>.txt`` (upright pixels; PNGs whose alpha channel is the
face-weighted loss mask when the preset uses one), ``dataset/face_crops/...``, ``dataset.toml``,
``config.toml``, ``prompts.txt`` and a ``README.txt`` saying how to run sd-scripts on it.

Nothing is written when the preset, an override, a caption or the rendered configuration is refused:
the preset and overrides are checked before any image is decoded, and :func:`~bot.training.render.render`
validates every key and value against the pinned sd-scripts before the zip is started.

A zip that fits the caller's size limit (a Discord attachment: 10 MiB) is returned as bytes; a larger
one is kept under ``<data_dir>/exports/`` and its path returned (files older than a week are removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.datasets.captioning import CaptionService, TrainingSet
from bot.errors import InvalidInputError
from bot.training import sdscripts_schema as schema
from bot.training.presets import apply_overrides, load_preset, parse_override_strings, parse_override_text
from bot.training.render import RenderResult, describe_source, render
from bot.training.snapshots import content_hash, create_snapshot
from storage.blobs import BlobStore
from storage.models import DatasetSnapshot

EXPORTS_DIR = "exports"
KEEP_EXPORTS_S = 7 * 24 * 3600
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same export gives the same bytes
_STORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # compressed already

Overrides = Mapping[str, str] | Sequence[str] | str | None


@dataclass(frozen=True)
class ExportResult:
    """A finished export: ``data`` when it fit the size limit, else ``path`` on the bot's disk."""

    filename: str
    size: int
    preset: str
    script: str
    image_count: int
    total_steps: int
    data: bytes | None = None
    path: Path | None = None
    warnings: tuple[str, ...] = field(default=())  # render warnings and caption notes


def normalise_overrides(overrides: Overrides) -> dict[str, str]:
    """Overrides as ``{key: raw value}`` from a mapping, ``KEY=VALUE`` strings, or one text of them."""
    if overrides is None:
        return {}
    if isinstance(overrides, str):
        return parse_override_text(overrides)
    if isinstance(overrides, Mapping):
        return {str(k): str(v) for k, v in overrides.items()}
    return parse_override_strings(overrides)


class ExportService:
    """Render datasets with a preset: a zip for people who train locally, or a snapshot for a job."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        blobs: BlobStore,
        captions: CaptionService,
        data_dir: Path,
        *,
        concurrent_renders: int = 1,
    ) -> None:
        self._sessions = sessions
        self._blobs = blobs
        self._captions = captions
        self._data_dir = Path(data_dir)
        # Rendering decodes and re-encodes every image: one at a time keeps the bot's CPU for Discord.
        self._renders = asyncio.Semaphore(concurrent_renders)

    @property
    def exports_dir(self) -> Path:
        return self._data_dir / EXPORTS_DIR

    @contextlib.asynccontextmanager
    async def rendered(
        self, dataset_id: int, preset: str, overrides: Overrides = None
    ) -> AsyncIterator[tuple[TrainingSet, RenderResult]]:
        """Render ``dataset_id`` with ``preset`` + ``overrides``; the files it names exist inside the block.

        Raises a :class:`~bot.errors.UserError` listing every problem (unknown preset, bad override,
        caption without the trigger, a value sd-scripts would refuse) before anything is kept.
        """
        wanted = normalise_overrides(overrides)
        # Cheap checks first, before any image is decoded.
        apply_overrides(load_preset(preset), wanted)
        async with self._renders:
            scratch = self._data_dir / "tmp"
            scratch.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=scratch, prefix="render-") as work:
                training = await self._captions.training_images(dataset_id, Path(work) / "images")
                result = await asyncio.to_thread(
                    render,
                    training.images,
                    preset=preset,
                    trigger=training.trigger,
                    class_word=training.class_word,
                    overrides=wanted,
                    output_name=f"{training.name}_{preset}",
                )
                yield training, result

    async def export(
        self, dataset_id: int, preset: str, overrides: Overrides = None, *, max_bytes: int
    ) -> ExportResult:
        """The dataset as a zip: bytes when it is at most ``max_bytes``, else a file under exports/."""
        try:
            async with self.rendered(dataset_id, preset, overrides) as (training, result):
                return await asyncio.to_thread(self._write_zip, training, result, max_bytes)
        except InvalidInputError as exc:
            raise InvalidInputError(f"Export refused; nothing was written.\n{exc}") from exc

    async def freeze(
        self, dataset_id: int, preset: str, overrides: Overrides = None, *, user_id: int
    ) -> DatasetSnapshot:
        """Render and freeze the dataset into a :class:`DatasetSnapshot` (zip in the blob store).

        The same images, captions, preset and overrides give the same row back.
        """
        async with self.rendered(dataset_id, preset, overrides) as (_training, result):
            return await create_snapshot(
                self._sessions, self._blobs, dataset_id=dataset_id, created_by=user_id, result=result
            )

    # -- the zip (blocking: runs in a thread) ------------------------------------------------------------

    def _write_zip(self, training: TrainingSet, result: RenderResult, max_bytes: int) -> ExportResult:
        self.exports_dir.mkdir(parents=True, exist_ok=True)
        _prune(self.exports_dir, KEEP_EXPORTS_S)
        folder = f"{training.name}-{result.preset.name}"
        filename = f"{folder}-{content_hash(result)[:8]}.zip"
        fd, tmp_name = tempfile.mkstemp(dir=self.exports_dir, prefix=".tmp-", suffix=".zip")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
                for item in result.all_files():
                    _add(archive, f"{folder}/{item.path}", item.read())
                _add(archive, f"{folder}/README.txt", readme(training, result).encode())
            base = ExportResult(
                filename=filename,
                size=tmp.stat().st_size,
                preset=result.preset.name,
                script=result.script,
                image_count=len(result.images),
                total_steps=result.total_steps,
                warnings=(*result.warnings, *training.notes),
            )
            if base.size <= max_bytes:
                data = tmp.read_bytes()
                tmp.unlink()
                return replace(base, data=data)
            target = self.exports_dir / filename
            os.replace(tmp, target)
            return replace(base, path=target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.external_attr = 0o100644 << 16
    info.create_system = 3
    info.compress_type = (
        zipfile.ZIP_STORED if name.lower().endswith(_STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
    )
    archive.writestr(info, data)


def _prune(folder: Path, keep_s: float) -> None:
    """Remove exports (and stray temporary files) older than ``keep_s`` seconds."""
    cutoff = time.time() - keep_s
    for path in folder.glob("*.zip"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
    for path in folder.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()


def readme(training: TrainingSet, result: RenderResult) -> str:
    """README.txt of an export: what is in the folder and how to train on it with sd-scripts."""
    preset = result.preset
    subsets: dict[str, int] = {}
    masked = 0
    for row in result.images:
        subsets[row["subset"]] = subsets.get(row["subset"], 0) + 1
        masked += bool(row["masked"])
    lines = [
        f"loraops export of dataset {training.name}, preset {preset.name} ({preset.family})",
        f"{len(result.images)} images ({', '.join(f'{n} {s}' for s, n in subsets.items())}), "
        f"{result.total_steps} training steps, LoRA name {result.output_name}",
        f"Trigger: every caption starts with '{result.trigger} {result.class_word}'. "
        f"Prompt with '{result.trigger}' to use the LoRA.",
        "",
        "What is here",
        "  dataset/full/        the images and one caption .txt per image (same name)",
    ]
    if "face_crops" in subsets:
        lines.append("  dataset/face_crops/  face-centred crops of the same photos (a second subset)")
    if masked:
        lines.append(
            f"  {masked} images are RGBA PNGs: their alpha channel is the face-weighted loss mask "
            "(dataset.toml sets alpha_mask = true); keep them as they are"
        )
    lines += [
        "  dataset.toml         the dataset configuration (paths relative to this folder)",
        "  config.toml          the training arguments",
        "  prompts.txt          sample prompts with fixed seeds",
        "",
        f"How to train locally with kohya-ss sd-scripts {schema.release()}",
        "  (https://github.com/kohya-ss/sd-scripts; other versions may refuse or misread some keys)",
        "  1. Install sd-scripts and its requirements; run `accelerate config` once.",
        "  2. Put the base model files where config.toml expects them, inside this folder:",
    ]
    for (key, path), source in zip(result.model_paths.items(), result.base_model.files(), strict=True):
        lines.append(f"       {path}   ({key}; from {describe_source(source)})")
    lines += [
        "  3. From this folder, run:",
        "       accelerate launch --num_cpu_threads_per_process 1 <path to sd-scripts>/"
        f"{result.script} --config_file config.toml --dataset_config dataset.toml",
        "     Checkpoints are written to output/, samples to output/sample/, logs to logs/.",
        f"  This preset needs about {preset.min_vram_gb} GB of GPU memory.",
    ]
    if result.overrides:
        lines += [
            "",
            "Overrides applied: " + ", ".join(f"{k}={v!r}" for k, v in sorted(result.overrides.items())),
        ]
    notes = [*result.warnings, *training.notes]
    if notes:
        lines += ["", "Warnings", *(f"  - {note}" for note in notes)]
    return "\n".join(lines) + "\n"
