"""Face curation on real photos with dlib: flags, stored analyses, report card, apply, identity reference."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.datasets.curation import FACE_CROPS, MIN_CROP_SIDE, CurationProgress, CurationService
from bot.datasets.gather import DatasetGatherService
from bot.faces.engines import DlibEngine, EngineSpec, FaceEngineUnavailableError
from bot.faces.service import FaceService
from sim.testdata import TESTDATA_FACES
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import Dataset, FaceAnalysis, Image

DLIB = DlibEngine.ENGINE_ID
# shared/ sits beside the clone (tests/conftest.py's FACES; "conftest" is ambiguous to import
# from here, tests/datasets has its own).
FACES = TESTDATA_FACES
# Positions 1-6 in this order. obama_3 is a full-body shot (small face), the partial photo is a crop of
# obama_1 whose face runs off the frame (so also a near-duplicate of #1), biden_2 is another person,
# obama_and_biden is a group photo.
PHOTOS = [
    "obama/obama_1.jpg",
    "obama/obama_3.jpg",
    "obama/obama_4.jpg",
    "partial/obama_partial_1.jpg",
    "biden/biden_2.jpg",
    "multi/obama_and_biden.jpg",
]


@pytest.fixture(scope="module")
def faces() -> Iterator[FaceService]:
    """One dlib worker process for the module (spawning and loading dlib is the slow part)."""
    assert FACES.is_dir(), f"test photos missing: {FACES}"
    service = FaceService(EngineSpec("dlib"), workers=1, note="engine dlib (test)")
    service.start()
    yield service
    asyncio.run(service.close())


@pytest.fixture
def curation(
    sessions: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
    faces: FaceService,
    make_service: Callable[..., DatasetGatherService],
) -> CurationService:
    return CurationService(sessions, blobs, faces, make_service(), models_dir=None)


async def _add(curation: CurationService, dataset_id: int, photos: list[str]) -> None:
    items = [(Path(p).name, (FACES / p).read_bytes()) for p in photos]
    report = await curation.gather.from_attachments(dataset_id, items, added_by=42)
    assert [a.position for a in report.added] == list(range(1, len(photos) + 1)), report.summary()


async def _images(sessions: async_sessionmaker[AsyncSession], dataset_id: int) -> list[Image]:
    async with unit_of_work(sessions) as session:
        rows = await session.scalars(
            select(Image).where(Image.dataset_id == dataset_id).order_by(Image.position)
        )
        return list(rows.all())


async def test_curate_flags_stores_renders_and_apply_is_idempotent(
    curation: CurationService, sessions: async_sessionmaker[AsyncSession], dataset_id: int
) -> None:
    await _add(curation, dataset_id, PHOTOS)
    seen: list[CurationProgress] = []

    result = await curation.curate(dataset_id, engine_choice="dlib", progress=seen.append)

    assert result.engine == DLIB and result.dataset_name == "elena"
    assert result.positions == [1, 2, 3, 4, 5, 6]
    assert (result.analysed, result.reused, result.left_out) == (6, 0, 0)
    flagged = result.flagged_positions()
    assert flagged["identity_outlier"] == [5]  # biden among obama's photos: exactly that one
    assert flagged["multiple_faces"] == [6]
    assert 2 in flagged["small_face"]
    assert flagged["face_cut"] == [4] and flagged["near_duplicate"] == [4]
    assert result.report.images[0].flags == []
    assert result.ceiling is not None and result.ceiling > 0.9
    assert any("different person" in line for line in result.report.advice)
    assert [s.phase for s in seen][-1] == "rendering"
    assert max(s.done for s in seen if s.phase == "analysing") == 6
    # The report card: one JPEG page, its tiles labelled with the image numbers.
    assert len(result.cards) == 1
    card = result.cards[0]
    assert card[:3] == b"\xff\xd8\xff" and len(card) < 10 * 1024 * 1024
    assert PILImage.open(io.BytesIO(card)).width > 3 * 224
    assert [item.analysis.source.split(" ")[0] for item in result.report.images] == [
        f"#{n}" for n in range(1, 7)
    ]
    # What apply would do: exclude the duplicate, the other person and the group photo; crop the two
    # photos whose face is small but big enough (obama_1, obama_3).
    assert sorted(result.plan.exclusions) == [4, 5, 6]
    assert result.plan.exclusions[4] == f"curation ({DLIB}): near-duplicate"
    assert "may be another person" in result.plan.exclusions[5]
    assert "several faces" in result.plan.exclusions[6]
    assert result.plan.crops == [1, 2]
    assert result.plan.crop_skips == []

    # One row per image, recorded with the engine, carrying the verdict.
    images = await _images(sessions, dataset_id)
    async with unit_of_work(sessions) as session:
        rows = {r.image_id: r for r in (await session.scalars(select(FaceAnalysis))).all()}
    assert len(rows) == 6 and {r.engine for r in rows.values()} == {DLIB}
    by_position = {i.position: rows[i.id] for i in images}
    assert by_position[5].flags == ["identity_outlier"]
    assert by_position[6].face_count >= 2 and "multiple_faces" in by_position[6].flags
    assert by_position[1].embedding is not None and len(by_position[1].embedding) == 128 * 4

    # Again: the single-face photos come from storage; only the group photo is analysed again.
    again = await curation.curate(dataset_id, engine_choice="dlib")
    assert (again.analysed, again.reused) == (1, 5)
    assert again.flagged_positions() == flagged
    assert again.ceiling == pytest.approx(result.ceiling, abs=1e-6)

    applied = await curation.apply(dataset_id, exclude_flagged=True, add_crops=True, user_id=7)
    assert sorted(applied.excluded) == [4, 5, 6]
    assert sorted(applied.crops_added) == [1, 2]
    assert sorted(applied.crops_added.values()) == [7, 8]
    images = await _images(sessions, dataset_id)
    excluded = {i.position: i.exclusion_reason for i in images if i.excluded}
    assert excluded == result.plan.exclusions
    crops = [i for i in images if i.subset == FACE_CROPS]
    source_ids = {i.position: i.id for i in images if i.subset == "full"}
    assert sorted((c.position, c.derived_from_id) for c in crops) == [(7, source_ids[1]), (8, source_ids[2])]
    for crop in crops:
        assert crop.width == crop.height >= MIN_CROP_SIDE and crop.source_kind == "crop"
        assert crop.added_by == 7 and not crop.excluded
        data = curation.blobs.get(crop.sha256)
        with PILImage.open(io.BytesIO(data)) as opened:
            assert opened.format == "JPEG" and opened.size == (crop.width, crop.height)
    async with unit_of_work(sessions) as session:
        dataset = await session.get(Dataset, dataset_id)
        assert dataset is not None and dataset.next_position == 9

    # Twice: nothing new.
    second = await curation.apply(dataset_id, exclude_flagged=True, add_crops=True, user_id=7)
    assert second.excluded == {} and second.crops_added == {}
    assert second.crops_existing == [1, 2]
    assert len(await _images(sessions, dataset_id)) == 8
    assert "nothing new to do" in second.summary()

    # The reference now comes from the included photos (biden is excluded): obama scores above others.
    reference = await curation.reference_for(dataset_id)
    assert reference.engine == DLIB and reference.ceiling is not None and reference.count >= 3
    probes = await curation.faces.analyse_many(
        [FACES / "obama/obama_2.jpg", FACES / "rose_leslie/rose_2.jpg"]
    )
    obama, rose = (reference.score(p) for p in probes)
    assert obama.same_person is True and rose.same_person is False
    assert obama.similarity is not None and rose.similarity is not None
    assert obama.similarity > rose.similarity


async def test_reference_for_analyses_an_uncurated_dataset_and_plans_crops(
    curation: CurationService, sessions: async_sessionmaker[AsyncSession], dataset_id: int
) -> None:
    kit = ["kit_harington/kit_1.jpg", "kit_harington/kit_2.jpg", "kit_harington/kit_3.jpg"]
    await _add(curation, dataset_id, kit)
    assert await curation.latest_engine(dataset_id) is None

    reference = await curation.reference_for(dataset_id, engine="dlib")

    assert reference.engine == DLIB and reference.count == 3 and reference.ceiling is not None
    async with unit_of_work(sessions) as session:
        rows = list((await session.scalars(select(FaceAnalysis))).all())
    assert len(rows) == 3 and {r.engine for r in rows} == {DLIB}
    assert await curation.latest_engine(dataset_id) == DLIB
    probes = await curation.faces.analyse_many(
        [FACES / "kit_harington/kit_2.jpg", FACES / "rose_leslie/rose_1.jpg"]
    )
    own, other = (reference.score(p) for p in probes)
    assert own.same_person is True and other.same_person is False
    # kit_1's face is small but a crop of it would be 380 px: it would need upscaling, so no crop.
    plan = await curation.plan(dataset_id)
    assert plan.exclusions == {} and plan.crops == [3]
    assert [s.position for s in plan.crop_skips] == [1]
    assert "need upscaling" in plan.crop_skips[0].reason
    # Curating now re-uses every stored analysis; a small page size splits the card into pages.
    curation.card_page_size = 2
    result = await curation.curate(dataset_id, engine_choice=DLIB)
    assert (result.analysed, result.reused) == (0, 3)
    assert len(result.cards) == 2
    for card in result.cards:
        with PILImage.open(io.BytesIO(card)) as page:
            assert page.format == "JPEG"


async def test_engine_choices_and_errors(curation: CurationService, dataset_id: int) -> None:
    with pytest.raises(FaceEngineUnavailableError, match="no insightface models"):
        curation.service_for("insightface")
    service, note = curation.service_for("auto")
    assert service is curation.faces and "dlib" in note
    with pytest.raises(Exception, match="no photos to check"):
        await curation.curate(dataset_id)
    with pytest.raises(Exception, match="never curated"):
        await curation.apply(dataset_id, exclude_flagged=True, add_crops=False, user_id=1)
