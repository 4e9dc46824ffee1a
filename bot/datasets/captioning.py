"""Captions of a dataset's images, stored one per image, and the training images made from them.

A generated caption is the dataset's template (``{trigger} {class}, {tags}`` by default) with tags from
the image's Cloudinary tags and context (:func:`bot.training.captions.tags_from_source`); the trigger,
the class word and the dataset's name never appear among the tags. A caption someone edited (or a bulk
prefix/suffix changed) records who did it (``Caption.edited_by``) and is kept when captions are generated
again, unless ``overwrite`` asks for a fresh start.

The trigger is always the first word: an edit that drops or moves it gets ``{trigger} {class}`` put back
in front (:func:`~bot.training.captions.ensure_trigger`) and says so, because a caption that does not
start with the trigger lets the identity spread over the other words (reference/sd_scripts.md §4.4).

:meth:`CaptionService.training_images` turns the dataset into :class:`~bot.training.render.TrainingImage`
items for :func:`~bot.training.render.render`: upright pixels written to a work folder (kohya ignores
EXIF orientation), the caption, the subset and the face box of a one-face analysis (upright pixels).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.datasets.imaging import exif_orientation, open_checked, oriented
from bot.datasets.positions import position_list
from bot.errors import ConflictError, InvalidInputError, NotFoundError
from bot.text import plural
from bot.training import captions as cap
from bot.training.render import TrainingImage
from storage import datasets as store
from storage.blobs import BlobNotFoundError, BlobStore
from storage.db import unit_of_work
from storage.models import Caption, Dataset, Image

TRAINING_SUBSETS = ("full", "face_crops")
MAX_CAPTION_CHARS = 1000  # CLIP reads 75-225 tokens; a longer caption is a paste accident
# Formats kohya's loader reads as they are; others (and any EXIF rotation or alpha) are re-encoded as PNG.
_COPY_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_MAX_PIXELS = 200_000_000  # ingest enforced the real limit when the image was added


@dataclass(frozen=True)
class CaptionLine:
    """One image's caption as shown in a listing."""

    position: int
    subset: str
    text: str | None  # None: no caption yet
    edited: bool
    excluded: bool


@dataclass(frozen=True)
class GenerateResult:
    created: int  # images that had no caption
    replaced: int  # captions rewritten (``overwrite``)
    kept: int  # captions left as they were (edited ones without ``overwrite``, or already there)


@dataclass(frozen=True)
class EditResult:
    position: int
    text: str
    trigger_restored: bool  # the edit did not start with the trigger; it was put back in front


@dataclass(frozen=True)
class BulkResult:
    changed: int
    unchanged: int  # already carried the prefix/suffix


@dataclass(frozen=True)
class TrainingSet:
    """What :func:`~bot.training.render.render` needs for one dataset, plus notes for the user."""

    dataset_id: int
    name: str
    trigger: str
    class_word: str
    images: list[TrainingImage]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Source:
    """One image to materialise (plain data, safe to hand to a thread)."""

    position: int
    sha256: str
    caption: str
    subset: str
    face_bbox: tuple[float, float, float, float] | None


class CaptionService:
    """Generate, edit, check and list captions; build training images. Each method is one unit of work."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], blobs: BlobStore) -> None:
        self._sessions = sessions
        self._blobs = blobs

    # -- writing ------------------------------------------------------------------------------------------

    async def generate(self, dataset_id: int, *, overwrite: bool = False) -> GenerateResult:
        """Caption every image from the template. Existing captions are kept unless ``overwrite``."""
        created = replaced = kept = 0
        try:
            async with unit_of_work(self._sessions) as session:
                dataset = await _dataset(session, dataset_id)
                for image, caption in await _images_with_captions(session, dataset_id):
                    if caption is not None and not overwrite:
                        kept += 1
                        continue
                    text = template_caption(dataset, image)
                    if caption is None:
                        store.add_caption(session, image_id=image.id, text=text, edited_by=None)
                        created += 1
                    else:
                        caption.text, caption.edited_by = text, None
                        replaced += 1
        except IntegrityError:
            raise ConflictError("Captions were changed at the same moment; run the command again.") from None
        return GenerateResult(created, replaced, kept)

    async def edit(self, dataset_id: int, position: int, text: str, *, user_id: int) -> EditResult:
        """Set one image's caption. The trigger stays first: when the text does not start with it,
        ``{trigger} {class}`` is put in front (and any later copy of it removed)."""
        cleaned = cap.tidy(text)
        if not cleaned:
            raise InvalidInputError("The caption is empty: give the words that describe the picture.")
        if len(cleaned) > MAX_CAPTION_CHARS:
            raise InvalidInputError(
                f"That caption has {len(cleaned)} characters; keep it under {MAX_CAPTION_CHARS} "
                "(the text encoder reads only the first 75-225 tokens)."
            )
        try:
            async with unit_of_work(self._sessions) as session:
                dataset = await _dataset(session, dataset_id)
                image = await store.image_at(session, dataset_id, position)
                if image is None:
                    raise NotFoundError(f"There is no image #{position} in `{dataset.name}`.")
                final = cap.ensure_trigger(cleaned, dataset.trigger_word, dataset.class_word)
                restored = not cap.starts_with_trigger(cleaned, dataset.trigger_word)
                caption = await store.caption_of(session, image.id)
                if caption is None:
                    store.add_caption(session, image_id=image.id, text=final, edited_by=user_id)
                else:
                    caption.text, caption.edited_by = final, user_id
        except IntegrityError:
            raise ConflictError("That caption was changed at the same moment; try again.") from None
        return EditResult(position, final, restored)

    async def bulk(self, dataset_id: int, *, prefix: str = "", suffix: str = "", user_id: int) -> BulkResult:
        """Add ``prefix`` (right after the trigger's token) and/or ``suffix`` (at the end) to every caption.

        Images without a caption get the template caption first. A token a caption already has is not
        added twice, so running the same bulk edit again changes nothing.
        """
        prefix_tokens = cap.split_tokens(cap.tidy(prefix))
        suffix_tokens = cap.split_tokens(cap.tidy(suffix))
        if not prefix_tokens and not suffix_tokens:
            raise InvalidInputError("Give a prefix or a suffix to add to every caption.")
        changed = unchanged = 0
        try:
            async with unit_of_work(self._sessions) as session:
                dataset = await _dataset(session, dataset_id)
                trigger = dataset.trigger_word
                if any(t.split()[0].lower() == trigger.lower() for t in [*prefix_tokens, *suffix_tokens]):
                    raise InvalidInputError(
                        f"The trigger `{trigger}` is already first in every caption; leave it out of "
                        "the prefix and suffix."
                    )
                for image, caption in await _images_with_captions(session, dataset_id):
                    old = caption.text if caption is not None else template_caption(dataset, image)
                    have = {t.lower() for t in cap.split_tokens(old)}
                    new = old
                    missing_prefix = [t for t in prefix_tokens if t.lower() not in have]
                    if missing_prefix:
                        new = cap.add_prefix(new, trigger, ", ".join(missing_prefix))
                    missing_suffix = [t for t in suffix_tokens if t.lower() not in have]
                    if missing_suffix:
                        new = cap.add_suffix(new, ", ".join(missing_suffix))
                    if caption is None:
                        # a caption equal to the template stays "generated" (regenerating keeps nothing)
                        store.add_caption(
                            session, image_id=image.id, text=new, edited_by=user_id if new != old else None
                        )
                        changed += 1
                    elif new != old:
                        caption.text, caption.edited_by = new, user_id
                        changed += 1
                    else:
                        unchanged += 1
        except IntegrityError:
            raise ConflictError("Captions were changed at the same moment; run the command again.") from None
        return BulkResult(changed, unchanged)

    # -- reading ------------------------------------------------------------------------------------------

    async def list(self, dataset_id: int) -> list[CaptionLine]:
        """Every image's caption (or None), by position."""
        async with self._sessions() as session:
            await _dataset(session, dataset_id)
            return [
                CaptionLine(
                    position=image.position,
                    subset=image.subset,
                    text=caption.text if caption is not None else None,
                    edited=caption is not None and caption.edited_by is not None,
                    excluded=image.excluded,
                )
                for image, caption in await _images_with_captions(session, dataset_id)
            ]

    async def check(self, dataset_id: int) -> list[str]:
        """Problems with the captions of the images that would be trained on; ``[]`` when all is well.

        Each caption must exist, be one non-empty line and start with the trigger word.
        """
        async with self._sessions() as session:
            dataset = await _dataset(session, dataset_id)
            rows = await _images_with_captions(session, dataset_id)
        trained = _trained(rows)
        missing = [image.position for image, caption in trained if caption is None]
        problems = []
        if missing:
            problems.append(
                f"{plural(len(missing), 'image')} without a caption ({position_list(missing, 15)}): "
                "`/dataset caption` makes them"
            )
        problems += cap.check_captions(
            {f"#{image.position}": caption.text for image, caption in trained if caption is not None},
            dataset.trigger_word,
        )
        return problems

    async def trigger_of(self, dataset_id: int) -> str:
        async with self._sessions() as session:
            return (await _dataset(session, dataset_id)).trigger_word

    # -- training images ----------------------------------------------------------------------------------

    async def training_images(self, dataset_id: int, into: Path) -> TrainingSet:
        """The images to train on, written upright into ``into`` (the caller owns and removes it).

        Included images of the training subsets (a face crop of an excluded image is left out too), each
        with its caption (the template caption when it has none yet, said in ``notes``) and the face box
        of an analysis that found exactly one face. Decoding and writing run in a thread.
        """
        async with self._sessions() as session:
            dataset = await _dataset(session, dataset_id)
            trained = _trained(await _images_with_captions(session, dataset_id))
            boxes = await _face_boxes(session, [image.id for image, _ in trained])
            template_used = [image.position for image, caption in trained if caption is None]
            sources = [
                _Source(
                    position=image.position,
                    sha256=image.sha256,
                    caption=caption.text if caption is not None else template_caption(dataset, image),
                    subset=image.subset,
                    face_bbox=boxes.get(image.id),
                )
                for image, caption in trained
            ]
            name, trigger, class_word = dataset.name, dataset.trigger_word, dataset.class_word
        if not sources:
            raise InvalidInputError(
                f"`{name}` has no images to train on: add some with `/dataset gather` or `/dataset add`"
                " (or bring excluded ones back with `/dataset include`)."
            )
        notes = []
        if template_used:
            notes.append(
                f"{plural(len(template_used), 'image')} had no caption yet "
                f"({position_list(template_used, 15)}); the template caption was used"
            )
        images = await asyncio.to_thread(self._materialise, sources, Path(into))
        return TrainingSet(dataset_id, name, trigger, class_word, images, notes)

    def _materialise(self, sources: Sequence[_Source], into: Path) -> list[TrainingImage]:
        into.mkdir(parents=True, exist_ok=True)
        out: list[TrainingImage] = []
        for source in sources:
            try:
                data = self._blobs.get(source.sha256)
            except BlobNotFoundError:
                raise NotFoundError(
                    f"The file of image #{source.position} is missing from the store; exclude it with "
                    f"`/dataset exclude` or add it again."
                ) from None
            stem = f"{source.position:04d}"
            path = _write_upright(data, into / source.subset, stem)
            out.append(
                TrainingImage(
                    source=path,
                    caption=source.caption,
                    subset=source.subset,
                    face_bbox=source.face_bbox,
                    name=stem,
                    sha256=source.sha256,
                )
            )
        return out


def template_caption(dataset: Dataset, image: Image) -> str:
    """The generated caption of ``image``: the dataset's template with the image's source tags."""
    tags = cap.tags_from_source(
        image.tags or [],
        image.context or {},
        drop=[dataset.trigger_word, dataset.class_word, dataset.name],
    )
    template = dataset.caption_template or cap.DEFAULT_TEMPLATE
    try:
        return cap.render_caption(dataset.trigger_word, dataset.class_word, tags, template=template)
    except cap.CaptionError as exc:
        raise InvalidInputError(f"The caption template of `{dataset.name}` is broken: {exc}") from None


def _write_upright(data: bytes, folder: Path, stem: str) -> Path:
    """Write ``data`` so that its stored pixels are the upright picture; return the file.

    JPEG/PNG/WebP in RGB or grey without an EXIF rotation are copied byte for byte; anything else
    (a rotation, transparency, CMYK, other formats) is decoded, turned upright, flattened on white and
    written as PNG. Transparency is flattened because sd-scripts' ``alpha_mask`` would read it as a loss
    weight, and plain RGB conversion would turn it black.
    """
    from PIL import Image as PILImage

    folder.mkdir(parents=True, exist_ok=True)
    image = open_checked(data, _MAX_PIXELS)
    try:
        orientation = exif_orientation(image)
        suffix = _COPY_FORMATS.get(image.format or "")
        if suffix and orientation in (None, 1) and image.mode in ("RGB", "L"):
            target = folder / f"{stem}{suffix}"
            target.write_bytes(data)
            return target
        upright: Any = oriented(image)
        if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
            rgba = upright.convert("RGBA")
            flat = PILImage.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            upright = flat
        elif upright.mode != "RGB":
            upright = upright.convert("RGB")
        buffer = io.BytesIO()
        upright.save(buffer, format="PNG", compress_level=1)
        target = folder / f"{stem}.png"
        target.write_bytes(buffer.getvalue())
        return target
    finally:
        image.close()


async def _dataset(session: AsyncSession, dataset_id: int) -> Dataset:
    dataset = await store.get_dataset(session, dataset_id)
    if dataset is None:
        raise NotFoundError(f"dataset {dataset_id} does not exist")
    return dataset


async def _images_with_captions(session: AsyncSession, dataset_id: int) -> list[tuple[Image, Caption | None]]:
    return await store.images_with_captions(session, dataset_id)


def _trained(rows: Sequence[tuple[Image, Caption | None]]) -> list[tuple[Image, Caption | None]]:
    """The rows that would be trained on: included, in a training subset, and not a crop of an excluded
    image (a crop of a photo someone excluded, say of another person, must not sneak back in)."""
    excluded_ids = {image.id for image, _ in rows if image.excluded}
    return [
        (image, caption)
        for image, caption in rows
        if not image.excluded
        and image.subset in TRAINING_SUBSETS
        and (image.derived_from_id is None or image.derived_from_id not in excluded_ids)
    ]


async def _face_boxes(
    session: AsyncSession, image_ids: Sequence[int]
) -> dict[int, tuple[float, float, float, float]]:
    """The face box per image from the newest analysis that found exactly one face.

    With several faces the "main" one might be someone else's, and a mask would weight the wrong face.
    """
    if not image_ids:
        return {}
    analyses = await store.single_face_analyses(session, image_ids)
    boxes: dict[int, tuple[float, float, float, float]] = {}
    for analysis in analyses:
        bbox = analysis.bbox
        if analysis.image_id in boxes or not bbox or len(bbox) != 4:
            continue
        x0, y0, x1, y1 = (float(v) for v in bbox)
        if x1 > x0 and y1 > y0:
            boxes[analysis.image_id] = (x0, y0, x1, y1)
    return boxes
