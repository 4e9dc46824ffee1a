"""The queries of datasets (design §4): datasets, their images, captions, face analyses and snapshots.

Every function takes the caller's session: the service in ``bot/datasets/`` (or the review) owns the unit
of work, and with it the row lock a writer of positions takes (:func:`dataset_for_update`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Caption, Dataset, DatasetSnapshot, FaceAnalysis, Image

# --- datasets -----------------------------------------------------------------------------------------------


async def get_dataset(session: AsyncSession, dataset_id: int) -> Dataset | None:
    return await session.get(Dataset, dataset_id)


async def dataset_for_update(session: AsyncSession, dataset_id: int) -> Dataset | None:
    """The dataset, its row locked (``FOR UPDATE``) until the caller's unit of work ends: whoever assigns
    image positions holds it, so two writers never hand out the same number."""
    return await session.get(Dataset, dataset_id, with_for_update=True)


async def get_snapshot(session: AsyncSession, snapshot_id: int) -> DatasetSnapshot | None:
    return await session.get(DatasetSnapshot, snapshot_id)


async def snapshot_with_hash(
    session: AsyncSession, dataset_id: int, content_hash: str
) -> DatasetSnapshot | None:
    """The dataset's snapshot of exactly this content, if one was frozen before."""
    return await session.scalar(
        select(DatasetSnapshot).where(
            DatasetSnapshot.dataset_id == dataset_id, DatasetSnapshot.content_hash == content_hash
        )
    )


async def add_snapshot(session: AsyncSession, row: DatasetSnapshot) -> DatasetSnapshot:
    """Stage a new snapshot and flush it, so it has its id."""
    session.add(row)
    await session.flush()
    return row


# --- images -------------------------------------------------------------------------------------------------


def add_image(session: AsyncSession, **columns: Any) -> Image:
    """Stage a new image row (written when the caller's unit of work commits)."""
    image = Image(**columns)
    session.add(image)
    return image


async def image_index(
    session: AsyncSession, dataset_id: int
) -> Sequence[tuple[int, str, str | None, str, str]]:
    """``(position, sha256, phash, source kind, source ref)`` of every image of the dataset, by position."""
    rows = await session.execute(
        select(Image.position, Image.sha256, Image.phash, Image.source_kind, Image.source_ref)
        .where(Image.dataset_id == dataset_id)
        .order_by(Image.position)
    )
    return rows.tuples().all()


async def dataset_images(session: AsyncSession, dataset_id: int) -> Sequence[Image]:
    """Every image of the dataset (any subset, excluded or not)."""
    return (await session.scalars(select(Image).where(Image.dataset_id == dataset_id))).all()


async def included_positions(session: AsyncSession, dataset_id: int, subset: str) -> Sequence[int]:
    """Positions of the dataset's images of ``subset`` that are not excluded."""
    return (
        await session.scalars(
            select(Image.position).where(
                Image.dataset_id == dataset_id, Image.excluded.is_(False), Image.subset == subset
            )
        )
    ).all()


async def face_embeddings(
    session: AsyncSession, image_ids: Collection[int], engine: str
) -> dict[int, bytes | None]:
    """``image id → embedding`` of the images' analyses by ``engine``."""
    rows = (
        await session.scalars(
            select(FaceAnalysis).where(
                FaceAnalysis.image_id.in_(list(image_ids)), FaceAnalysis.engine == engine
            )
        )
    ).all()
    return {row.image_id: row.embedding for row in rows}


# --- the dataset list ------------------------------------------------------------------------------------


async def dataset_id_named(session: AsyncSession, guild_id: int, name: str) -> int | None:
    return await session.scalar(select(Dataset.id).where(Dataset.guild_id == guild_id, Dataset.name == name))


def add_dataset(session: AsyncSession, **columns: Any) -> Dataset:
    """Stage a new dataset (unique per guild and name: a duplicate fails when it is flushed)."""
    dataset = Dataset(**columns)
    session.add(dataset)
    return dataset


async def dataset_named(session: AsyncSession, guild_id: int, name: str) -> Dataset | None:
    return await session.scalar(select(Dataset).where(Dataset.guild_id == guild_id, Dataset.name == name))


async def datasets_of(session: AsyncSession, guild_id: int) -> list[Dataset]:
    """The guild's datasets, by name."""
    return list(
        await session.scalars(select(Dataset).where(Dataset.guild_id == guild_id).order_by(Dataset.name))
    )


async def dataset_names(session: AsyncSession, guild_id: int, prefix: str, limit: int) -> list[str]:
    """At most ``limit`` of the guild's dataset names starting with ``prefix``, by name."""
    rows = await session.scalars(
        select(Dataset.name)
        .where(Dataset.guild_id == guild_id, Dataset.name.startswith(prefix, autoescape=True))
        .order_by(Dataset.name)
        .limit(limit)
    )
    return list(rows)


async def image_counts(session: AsyncSession, dataset_ids: Collection[int]) -> dict[int, tuple[int, int]]:
    """``dataset id → (photos, of which excluded)``, counting the full-frame subset only."""
    rows = await session.execute(
        select(
            Image.dataset_id,
            func.count(Image.id),
            func.count(Image.id).filter(Image.excluded.is_(True)),
        )
        .where(Image.dataset_id.in_(list(dataset_ids)), Image.subset == "full")
        .group_by(Image.dataset_id)
    )
    return {dataset_id: (total, excluded) for dataset_id, total, excluded in rows.tuples()}


async def images_at(session: AsyncSession, dataset_id: int, positions: Collection[int]) -> dict[int, Image]:
    """``position → image`` of the dataset's images at these positions (missing ones are left out)."""
    rows = await session.scalars(
        select(Image).where(Image.dataset_id == dataset_id, Image.position.in_(list(positions)))
    )
    return {image.position: image for image in rows.all()}


async def sheet_tiles(
    session: AsyncSession, dataset_id: int, *, include_excluded: bool
) -> Sequence[tuple[int, str, bool]]:
    """``(position, sha256, excluded)`` of the dataset's images, by position (for contact sheets)."""
    query = select(Image.position, Image.sha256, Image.excluded).where(Image.dataset_id == dataset_id)
    if not include_excluded:
        query = query.where(Image.excluded.is_(False))
    return (await session.execute(query.order_by(Image.position))).tuples().all()


async def image_at(session: AsyncSession, dataset_id: int, position: int) -> Image | None:
    return await session.scalar(
        select(Image).where(Image.dataset_id == dataset_id, Image.position == position)
    )


# --- captions -----------------------------------------------------------------------------------------------


async def images_with_captions(session: AsyncSession, dataset_id: int) -> list[tuple[Image, Caption | None]]:
    """Every image of the dataset with its caption (None when it has none yet), by position."""
    rows = await session.execute(
        select(Image, Caption)
        .outerjoin(Caption, Caption.image_id == Image.id)
        .where(Image.dataset_id == dataset_id)
        .order_by(Image.position)
    )
    return [(image, caption) for image, caption in rows.tuples()]


async def caption_of(session: AsyncSession, image_id: int) -> Caption | None:
    return await session.scalar(select(Caption).where(Caption.image_id == image_id))


def add_caption(session: AsyncSession, *, image_id: int, text: str, edited_by: int | None) -> Caption:
    """Stage an image's first caption (one per image: a second fails when it is flushed)."""
    caption = Caption(image_id=image_id, text=text, edited_by=edited_by)
    session.add(caption)
    return caption


# --- face analyses ---------------------------------------------------------------------------------------


async def single_face_analyses(session: AsyncSession, image_ids: Collection[int]) -> Sequence[FaceAnalysis]:
    """The analyses of these images that found exactly one face, newest first."""
    return (
        await session.scalars(
            select(FaceAnalysis)
            .where(FaceAnalysis.image_id.in_(list(image_ids)), FaceAnalysis.face_count == 1)
            .order_by(FaceAnalysis.analysed_at.desc(), FaceAnalysis.id.desc())
        )
    ).all()


async def images_with_analysis(
    session: AsyncSession, dataset_id: int, subset: str, engine: str
) -> list[tuple[Image, FaceAnalysis | None]]:
    """The dataset's included images of ``subset`` with their analysis by ``engine`` (None: not yet),
    by position."""
    rows = await session.execute(
        select(Image, FaceAnalysis)
        .outerjoin(FaceAnalysis, (FaceAnalysis.image_id == Image.id) & (FaceAnalysis.engine == engine))
        .where(Image.dataset_id == dataset_id, Image.subset == subset, Image.excluded.is_(False))
        .order_by(Image.position)
    )
    return [(image, analysis) for image, analysis in rows.tuples().all()]


async def excluded_count(session: AsyncSession, dataset_id: int, subset: str) -> int:
    return int(
        await session.scalar(
            select(func.count(Image.id)).where(
                Image.dataset_id == dataset_id, Image.subset == subset, Image.excluded.is_(True)
            )
        )
        or 0
    )


async def derived_from_ids(session: AsyncSession, dataset_id: int, subset: str) -> set[int | None]:
    """The images the dataset's ``subset`` images were derived from (e.g. the photos already cropped)."""
    return set(
        (
            await session.scalars(
                select(Image.derived_from_id).where(Image.dataset_id == dataset_id, Image.subset == subset)
            )
        ).all()
    )


async def image_hashes(session: AsyncSession, dataset_id: int, subset: str) -> set[str]:
    """The sha256 of every image of the dataset's ``subset``."""
    return set(
        (
            await session.scalars(
                select(Image.sha256).where(Image.dataset_id == dataset_id, Image.subset == subset)
            )
        ).all()
    )


async def analyses_by_image(
    session: AsyncSession, image_ids: Collection[int], engine: str
) -> dict[int, FaceAnalysis]:
    """``image id → analysis`` by ``engine`` of these images."""
    rows = await session.scalars(
        select(FaceAnalysis).where(FaceAnalysis.image_id.in_(list(image_ids)), FaceAnalysis.engine == engine)
    )
    return {row.image_id: row for row in rows.all()}


def add_face_analysis(session: AsyncSession, *, image_id: int, **columns: Any) -> FaceAnalysis:
    analysis = FaceAnalysis(image_id=image_id, **columns)
    session.add(analysis)
    return analysis


async def latest_engine(session: AsyncSession, dataset_id: int, subset: str) -> str | None:
    """The engine of the newest analysis of the dataset's ``subset`` images (None: never analysed)."""
    return await session.scalar(
        select(FaceAnalysis.engine)
        .join(Image, Image.id == FaceAnalysis.image_id)
        .where(Image.dataset_id == dataset_id, Image.subset == subset)
        .order_by(FaceAnalysis.analysed_at.desc(), FaceAnalysis.id.desc())
        .limit(1)
    )
