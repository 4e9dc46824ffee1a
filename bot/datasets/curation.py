"""Face curation of a dataset (design §2 step 3, §6): analyse, judge, store, show; then apply.

:meth:`CurationService.curate` analyses every included photo of a dataset's ``full`` subset with one
face engine (re-using the stored :class:`~storage.models.FaceAnalysis` rows of that engine), judges the
set (identity centroid, ceiling, per-image flags, advice), stores one row per image and engine, and
renders the report card pages. :meth:`CurationService.apply` then acts on the stored verdict: it
excludes the photos whose flags make them harmful (with their reasons) and adds face-centred crops as
the ``face_crops`` subset; running it twice changes nothing. :meth:`CurationService.reference_for` is
the identity reference that generated samples are scored against.

A cog calls it like this::

    result = await services.curation.curate(dataset_id, engine_choice="auto", progress=show)
    ...
    applied = await services.curation.apply(
        dataset_id, exclude_flagged=True, add_crops=True, user_id=user.id, engine=result.engine
    )
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.datasets.gather import DatasetGatherService
from bot.datasets.imaging import ImageFacts, ImageRejectedError, analyse
from bot.datasets.positions import position_list
from bot.errors import InvalidInputError, NotFoundError
from bot.faces.analysis import FaceInfo, ImageAnalysis
from bot.faces.crops import crop_box, make_face_crop
from bot.faces.engines import EngineChoice, EngineSpec, FaceEngineUnavailableError, resolve_engine
from bot.faces.pictures import PictureMatcher
from bot.faces.report import CLOSEUP_RATIO, FLAGS, DatasetReport, IdentityReference, build_report
from bot.faces.service import FaceService
from bot.locks import KeyedLocks
from storage import datasets as store
from storage.blobs import BlobStore
from storage.db import unit_of_work
from storage.models import FaceAnalysis, Image
from storage.types import utcnow

log = logging.getLogger(__name__)

FULL = "full"
FACE_CROPS = "face_crops"
ENGINE_CHOICES: tuple[EngineChoice, ...] = ("auto", "insightface", "dlib")

# Flags that make a photo harmful for an identity LoRA: these are the suggested exclusions. The others
# (small_face, face_cut) only warn: the photo still shows the person, and a crop may fix a small face.
EXCLUDE_FLAGS = ("unreadable", "no_face", "identity_outlier", "multiple_faces", "blurry", "near_duplicate")
# How each flag reads in a reason, a summary or an exclusion note (kept stable: apply compares reasons).
FLAG_WORDS = {
    "unreadable": "unreadable",
    "no_face": "no face",
    "identity_outlier": "may be another person",
    "multiple_faces": "several faces",
    "small_face": "face too small",
    "face_cut": "face cut by the frame",
    "blurry": "blurry face",
    "near_duplicate": "near-duplicate",
}
# Report card tiles per page (8 columns × 6 rows at 224 px: about 1.8 k × 1.7 k pixels, ~1 MB of JPEG).
CARD_PAGE_SIZE = 48
# A face crop is made at the square's own size up to MAX_CROP_SIDE (reduced when larger), and never
# upscaled: a square smaller than MIN_CROP_SIDE would have to be enlarged to train on, inventing detail.
MIN_CROP_SIDE = 512
MAX_CROP_SIDE = 1024

CurationProgressCallback = Callable[["CurationProgress"], Awaitable[None] | None]


@dataclass(frozen=True)
class CurationProgress:
    """How far a curation is: ``done`` of ``total`` photos analysed (``reused`` of them from storage)."""

    phase: str  # "analysing" | "rendering"
    done: int
    total: int
    reused: int = 0

    def text(self) -> str:
        if self.phase == "rendering":
            return f"Rendering the report card… ({self.total} photos analysed)"
        earlier = f", {self.reused} from earlier analyses" if self.reused else ""
        return f"Analysing faces… {self.done}/{self.total} photos{earlier}"


@dataclass(frozen=True)
class CropSkip:
    """A photo that would have got a face crop, and why it didn't."""

    position: int
    reason: str


@dataclass(frozen=True)
class _Judged:
    """What planning needs to know of one analysed image (from a report or from stored rows)."""

    image_id: int
    position: int
    width: int
    height: int
    flags: tuple[str, ...]
    bbox: tuple[float, float, float, float] | None
    face_ratio: float | None

    @classmethod
    def of(
        cls,
        member: _Member,
        flags: Iterable[str],
        bbox: tuple[float, float, float, float] | None,
        face_ratio: float | None,
    ) -> _Judged:
        """The verdict on ``member``'s image; where it was read from (report or rows) gives the rest."""
        image = member.image
        return cls(image.id, image.position, image.width, image.height, tuple(flags), bbox, face_ratio)


@dataclass
class CurationPlan:
    """What ``apply`` would do: exclusions by position (with their reason) and crops to make."""

    exclusions: dict[int, str] = field(default_factory=dict)
    crops: list[int] = field(default_factory=list)  # positions of the photos to crop
    crop_skips: list[CropSkip] = field(default_factory=list)


def exclusion_reason(engine: str, flags: Sequence[str]) -> str | None:
    """The reason recorded on an excluded photo, or None when its flags suggest no exclusion."""
    harmful = [FLAG_WORDS[f] for f in EXCLUDE_FLAGS if f in flags]
    if not harmful:
        return None
    return f"curation ({engine}): {', '.join(harmful)}"[:200]


def crop_side(bbox: Sequence[float], width: int, height: int) -> int:
    """Side in source pixels of the square a face crop of ``bbox`` takes."""
    box = crop_box((bbox[0], bbox[1], bbox[2], bbox[3]), width, height)
    return box[2] - box[0]


def _plan(judged: Sequence[_Judged], engine: str) -> CurationPlan:
    plan = CurationPlan()
    for item in judged:
        reason = exclusion_reason(engine, item.flags)
        if reason is not None:
            plan.exclusions[item.position] = reason
            continue  # a harmful photo gets no crop either
        if item.bbox is None or item.face_ratio is None or item.face_ratio >= CLOSEUP_RATIO:
            continue  # no face, or already a close-up: a crop would add nothing
        if "face_cut" in item.flags:
            plan.crop_skips.append(CropSkip(item.position, "the face is cut by the frame"))
            continue
        side = crop_side(item.bbox, item.width, item.height)
        if side < MIN_CROP_SIDE:
            plan.crop_skips.append(
                CropSkip(
                    item.position,
                    f"a crop would be {side} px and need upscaling to {MIN_CROP_SIDE} px",
                )
            )
            continue
        plan.crops.append(item.position)
    return plan


@dataclass
class CurationResult:
    """The outcome of :meth:`CurationService.curate`.

    ``report.images[i]`` is the photo numbered ``positions[i]`` (the number ``/dataset exclude`` takes).
    ``cards`` are the report card pages (JPEG, each under 10 MiB). ``plan`` is what ``apply`` would do.
    """

    dataset_id: int
    dataset_name: str
    engine: str
    engine_note: str
    report: DatasetReport
    positions: list[int]
    cards: list[bytes]
    analysed: int  # photos run through the engine now
    reused: int  # photos whose stored analysis was re-used
    left_out: int  # excluded photos, not checked
    plan: CurationPlan

    @property
    def ceiling(self) -> float | None:
        return self.report.ceiling

    def flagged_positions(self) -> dict[str, list[int]]:
        """Flag → positions carrying it, in the order of :data:`bot.faces.report.FLAGS`."""
        out: dict[str, list[int]] = {}
        for flag in FLAGS:
            positions = [
                p for p, item in zip(self.positions, self.report.images, strict=True) if flag in item.flags
            ]
            if positions:
                out[flag] = positions
        return out


@dataclass
class ApplyResult:
    """What :meth:`CurationService.apply` changed (positions are image numbers)."""

    dataset_name: str
    engine: str
    excluded: dict[int, str] = field(default_factory=dict)  # newly excluded → reason
    already_excluded: list[int] = field(default_factory=list)
    crops_added: dict[int, int] = field(default_factory=dict)  # source position → new crop's position
    crops_existing: list[int] = field(default_factory=list)  # sources that already had a crop
    crop_skips: list[CropSkip] = field(default_factory=list)

    def summary(self) -> str:
        """One short paragraph for the channel."""
        parts: list[str] = []
        if self.excluded:
            parts.append(f"excluded {position_list(sorted(self.excluded))}")
        if self.crops_added:
            crops = sorted(self.crops_added.values())
            noun = "face crop" if len(crops) == 1 else "face crops"
            parts.append(f"added {len(crops)} {noun} ({position_list(crops)})")
        if not parts:
            parts.append("nothing new to do")
        text = f"**{self.dataset_name}**: " + "; ".join(parts) + "."
        notes: list[str] = []
        if self.already_excluded:
            notes.append(f"already excluded: {position_list(self.already_excluded)}")
        if self.crops_existing:
            notes.append(f"already cropped: {position_list(self.crops_existing)}")
        if self.crop_skips:
            notes.append(
                "no crop for " + "; ".join(f"#{s.position} ({s.reason})" for s in self.crop_skips[:10])
            )
        if notes:
            joined = "; ".join(notes)
            text += " " + joined[:1].upper() + joined[1:] + "."
        return text[:2000]


@dataclass(frozen=True)
class _Member:
    """An included full-subset image and its stored analysis (if any) for one engine."""

    image: Image
    row: FaceAnalysis | None


def _label(image: Image) -> str:
    """``#12 kit_1.jpg``: the position first (what /dataset exclude takes), then a short name.

    The report card keeps what follows the last slash of a label, so the name must not contain one.
    """
    ref = image.source_ref.rsplit("!", 1)[-1]
    name = PurePosixPath(ref.replace("\\", "/")).name or image.source_kind
    return f"#{image.position} {name}".replace("/", "_")


def _analysis_from_row(row: FaceAnalysis, image: Image, label: str) -> ImageAnalysis | None:
    """Rebuild what the engine saw from a stored row, when the row says everything needed.

    A row keeps the main face only; a photo with several faces (or an unreadable one) is analysed
    again instead, so group photos are judged exactly as the first time.
    """
    if "unreadable" in (row.flags or []) or row.face_count > 1:
        return None
    faces: list[FaceInfo] = []
    if row.face_count == 1:
        if row.embedding is None or row.bbox is None:
            return None
        x0, y0, x1, y1 = (float(v) for v in row.bbox)
        faces.append(
            FaceInfo(
                bbox=(x0, y0, x1, y1),
                det_score=row.det_score or 0.0,
                embedding=np.frombuffer(row.embedding, dtype=np.float32).copy(),
                landmarks=[],
                face_ratio=row.face_ratio or 0.0,
                sharpness=row.sharpness or 0.0,
                brightness=row.brightness or 0.0,
                yaw=row.yaw or 0.0,
                # Whether the box runs off the frame is the photo's own property, judged when it was analysed.
                cut="face_cut" in (row.flags or []),
            )
        )
    return ImageAnalysis(
        source=label,
        engine=row.engine,
        width=image.width,
        height=image.height,
        faces=faces,
        phash=image.phash,  # ingest hashes the upright picture with the same imagehash.phash
    )


async def _call(progress: CurationProgressCallback | None, snapshot: CurationProgress) -> None:
    if progress is None:
        return
    outcome = progress(snapshot)
    if inspect.isawaitable(outcome):
        await outcome


class CurationService:
    """Face curation of datasets: report card, suggested exclusions, face crops, identity reference.

    ``faces`` is the bot's face service (the configured engine). Other engines (a guild's or a
    command's choice) get their own :class:`FaceService`, started on first use and closed by
    :meth:`close`. Rows and scores always carry the engine id; engines are never mixed.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        blobs: BlobStore,
        faces: FaceService,
        gather: DatasetGatherService,
        *,
        models_dir: Path | None = None,
        card_page_size: int = CARD_PAGE_SIZE,
    ) -> None:
        self.sessions = sessions
        self.blobs = blobs
        self.faces = faces
        self.gather = gather
        self.models_dir = models_dir
        self.card_page_size = card_page_size
        self._others: dict[str, FaceService] = {}
        self._lock = KeyedLocks[int]()  # one writer of a dataset's curation at a time

    # -- engines -----------------------------------------------------------------------------------------

    def service_for(self, engine: str | None = None) -> tuple[FaceService, str]:
        """The face service for an engine choice (``auto``/``insightface``/``dlib``) or an engine id
        (``dlib-resnet128-v1``, ``insightface-buffalo_l``), and one line saying which engine and why.

        ``None`` is the bot's configured engine. Raises
        :class:`~bot.faces.engines.FaceEngineUnavailableError` (a user error) when it can't run here.
        """
        if engine is None or engine == self.faces.engine_id:
            return self.faces, self.faces.note or f"engine {self.faces.engine_id}"
        if engine in ENGINE_CHOICES:
            spec, note = resolve_engine(engine, self.models_dir)  # type: ignore[arg-type]
        elif engine == EngineSpec("dlib").engine_id:
            spec, note = resolve_engine("dlib", self.models_dir)
        elif engine.startswith("insightface-"):
            spec, note = resolve_engine("insightface", self.models_dir)
            if spec.engine_id != engine:
                raise FaceEngineUnavailableError(
                    f"the analyses were made by {engine}, but this bot has {spec.engine_id}"
                )
        else:
            raise InvalidInputError(f"unknown face engine {engine!r}: use auto, insightface or dlib")
        if spec.engine_id == self.faces.engine_id:
            return self.faces, note
        service = self._others.get(spec.engine_id)
        if service is None:
            service = FaceService(
                spec,
                workers=self.faces.workers,
                note=note,
                max_pixels=self.faces.max_pixels,
                phash_threshold=self.faces.phash_threshold,
                nice=self.faces.nice,
            )
            service.start()
            self._others[spec.engine_id] = service
        return service, note

    async def close(self) -> None:
        """Stop the extra engines' pools (the bot's own face service is closed by its owner)."""
        others, self._others = list(self._others.values()), {}
        for service in others:
            await service.close()

    async def dataset_name(self, dataset_id: int, *, guild_id: int) -> str:
        """The name of dataset ``dataset_id`` if it belongs to ``guild_id`` (else ``NotFoundError``)."""
        async with self.sessions() as session:
            dataset = await store.get_dataset(session, dataset_id)
        if dataset is None or dataset.guild_id != guild_id:
            raise NotFoundError("That dataset no longer exists here.")
        return dataset.name

    # -- curate ------------------------------------------------------------------------------------------

    async def curate(
        self,
        dataset_id: int,
        *,
        engine_choice: str | None = None,
        progress: CurationProgressCallback | None = None,
    ) -> CurationResult:
        """Analyse, judge and store every included photo; render the report card pages.

        ``engine_choice`` is ``auto``, ``insightface``, ``dlib`` or an engine id (None: the bot's
        configured engine). ``progress`` (sync or async) gets :class:`CurationProgress` snapshots.
        """
        service, note = self.service_for(engine_choice)
        async with self._lock(dataset_id):
            name, members, left_out = await self._members(dataset_id, service.engine_id)
            if not members:
                raise InvalidInputError(
                    f"**{name}** has no photos to check"
                    + (f" ({left_out} are excluded)." if left_out else ": add some with `/dataset add`.")
                )
            report, analysed, reused = await self._judge(members, service, progress)
        positions = [m.image.position for m in members]
        await _call(progress, CurationProgress("rendering", len(members), len(members), reused))
        cards = await self._render_cards(name, report, members, service)
        plan = _plan(self._judged_from_report(report, members), report.engine)
        return CurationResult(
            dataset_id=dataset_id,
            dataset_name=name,
            engine=report.engine,
            engine_note=note,
            report=report,
            positions=positions,
            cards=cards,
            analysed=analysed,
            reused=reused,
            left_out=left_out,
            plan=plan,
        )

    async def _members(self, dataset_id: int, engine: str) -> tuple[str, list[_Member], int]:
        """The dataset's name, its included full images with their stored row of ``engine``, and how
        many full images are excluded."""
        async with self.sessions() as session:
            dataset = await store.get_dataset(session, dataset_id)
            if dataset is None:
                raise NotFoundError(f"dataset {dataset_id} does not exist")
            rows = await store.images_with_analysis(session, dataset_id, FULL, engine)
            left_out = await store.excluded_count(session, dataset_id, FULL)
            return dataset.name, [_Member(image, row) for image, row in rows], left_out

    async def _judge(
        self, members: list[_Member], service: FaceService, progress: CurationProgressCallback | None
    ) -> tuple[DatasetReport, int, int]:
        """Analyses (stored ones re-used), the report, and the rows written back. Caller holds the lock."""
        total = len(members)
        analyses: list[ImageAnalysis | None] = []
        for member in members:
            stored = member.row
            analyses.append(
                _analysis_from_row(stored, member.image, _label(member.image)) if stored is not None else None
            )
        todo = [i for i, a in enumerate(analyses) if a is None]
        reused = total - len(todo)
        await _call(progress, CurationProgress("analysing", reused, total, reused))
        if todo:

            async def step(done: int, _total: int) -> None:
                await _call(progress, CurationProgress("analysing", reused + done, total, reused))

            fresh = await service.analyse_many(
                [self.blobs.path_for(members[i].image.sha256) for i in todo],
                labels=[_label(members[i].image) for i in todo],
                progress=step,
            )
            for index, analysis in zip(todo, fresh, strict=True):
                analyses[index] = analysis
        complete = [a for a in analyses if a is not None]
        # Near-duplicates compare the pictures too: the matcher finds a photo's pixels by its label.
        paths = {_label(m.image): self.blobs.path_for(m.image.sha256) for m in members}
        report = await asyncio.to_thread(
            build_report,
            complete,
            phash_threshold=service.phash_threshold,
            pictures=PictureMatcher(paths.get),
        )
        await self._store_rows(members, report)
        return report, len(todo), reused

    async def _store_rows(self, members: list[_Member], report: DatasetReport) -> None:
        """One row per (image, engine), updated in place: the latest verdict on each photo."""
        ids = [m.image.id for m in members]
        async with unit_of_work(self.sessions) as session:
            existing = await store.analyses_by_image(session, ids, report.engine)
            for member, item in zip(members, report.images, strict=True):
                values = item.to_row()
                row = existing.get(member.image.id)
                if row is None:
                    store.add_face_analysis(session, image_id=member.image.id, **values)
                    continue
                for key, value in values.items():
                    setattr(row, key, value)
                row.analysed_at = utcnow()  # when this verdict was made (apply uses the newest engine)

    @staticmethod
    def _judged_from_report(report: DatasetReport, members: list[_Member]) -> list[_Judged]:
        out = []
        for member, item in zip(members, report.images, strict=True):
            face = item.face
            out.append(
                _Judged.of(member, item.flags, face.bbox if face else None, face.face_ratio if face else None)
            )
        return out

    async def _render_cards(
        self, name: str, report: DatasetReport, members: list[_Member], service: FaceService
    ) -> list[bytes]:
        size = max(1, self.card_page_size)
        pages = max(1, -(-len(members) // size))
        cards = []
        for number in range(pages):
            chunk = slice(number * size, (number + 1) * size)
            page = dataclasses.replace(report, images=report.images[chunk])
            sources = [self.blobs.path_for(m.image.sha256) for m in members[chunk]]
            title = f"{name}: report card" + (f" {number + 1}/{pages}" if pages > 1 else "")
            cards.append(await service.render_report_card(page, sources, title=title))
        return cards

    # -- apply ---------------------------------------------------------------------------------------------

    async def latest_engine(self, dataset_id: int) -> str | None:
        """The engine of the newest stored verdict on the dataset's photos (None: never curated)."""
        async with self.sessions() as session:
            return await store.latest_engine(session, dataset_id, FULL)

    async def plan(self, dataset_id: int, engine: str | None = None) -> CurationPlan:
        """What :meth:`apply` would do now, from the stored verdict of ``engine`` (default: the newest)."""
        engine = engine or await self._curated_engine(dataset_id)
        _name, members, _left = await self._members(dataset_id, engine)
        return _plan(self._judged_from_rows(members), engine)

    async def _curated_engine(self, dataset_id: int) -> str:
        engine = await self.latest_engine(dataset_id)
        if engine is None:
            raise InvalidInputError("This dataset was never curated: run `/dataset curate` first.")
        return engine

    @staticmethod
    def _judged_from_rows(members: list[_Member]) -> list[_Judged]:
        out = []
        for member in members:
            row = member.row
            if row is None:
                continue  # added after the last curation: no verdict on it yet
            bbox = row.bbox
            stored_box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])) if bbox else None
            out.append(_Judged.of(member, row.flags or (), stored_box, row.face_ratio))
        return out

    async def apply(
        self,
        dataset_id: int,
        *,
        exclude_flagged: bool,
        add_crops: bool,
        user_id: int,
        engine: str | None = None,
    ) -> ApplyResult:
        """Act on the stored verdict of ``engine`` (default: the newest curation's engine).

        ``exclude_flagged``: exclude the included photos whose flags are harmful, each with its reason
        (through the gathering service, like ``/dataset exclude``). ``add_crops``: add a face-centred
        crop of each photo whose face is small but croppable without upscaling, as an image of the
        ``face_crops`` subset (``derived_from_id`` = the photo). Idempotent: a second run adds nothing.
        """
        if not (exclude_flagged or add_crops):
            raise InvalidInputError("choose exclusions, face crops or both")
        async with self._lock(dataset_id):
            engine = engine or await self._curated_engine(dataset_id)
            name, members, _left = await self._members(dataset_id, engine)
            judged = self._judged_from_rows(members)
            if not judged:
                raise InvalidInputError(
                    f"**{name}** has no curation by {engine} to apply: run `/dataset curate` first."
                )
            plan = _plan(judged, engine)
            result = ApplyResult(dataset_name=name, engine=engine)
            if exclude_flagged and plan.exclusions:
                await self._exclude(dataset_id, plan, result)
            if add_crops:
                result.crop_skips = list(plan.crop_skips)
                if plan.crops:
                    await self._add_crops(dataset_id, members, judged, plan, user_id, result)
        return result

    async def pending_plan(
        self, dataset_id: int, engine: str | None = None
    ) -> tuple[CurationPlan, dict[str, list[int]]]:
        """What :meth:`apply` would do now, and the stored flags by position (no change is made).

        For suggestions after a run ("face crops of the 3 photos with small faces", "drop the 2
        near-duplicates"). ``engine`` defaults to the newest curation's; a dataset with no stored
        verdict gives an empty plan.
        """
        engine = engine or await self.latest_engine(dataset_id)
        if engine is None:
            return CurationPlan(), {}
        _name, members, _left = await self._members(dataset_id, engine)
        judged = self._judged_from_rows(members)
        flagged: dict[str, list[int]] = {}
        for item in judged:
            for flag in item.flags:
                flagged.setdefault(flag, []).append(item.position)
        return _plan(judged, engine), flagged

    async def _exclude(self, dataset_id: int, plan: CurationPlan, result: ApplyResult) -> None:
        by_reason: dict[str, list[int]] = {}
        for position, reason in plan.exclusions.items():
            by_reason.setdefault(reason, []).append(position)
        for reason, positions in by_reason.items():
            changed = await self.gather.exclude(dataset_id, positions, reason)
            for position in changed.changed:
                result.excluded[position] = reason
            result.already_excluded.extend(changed.unchanged)
        result.already_excluded.sort()

    async def _add_crops(
        self,
        dataset_id: int,
        members: list[_Member],
        judged: list[_Judged],
        plan: CurationPlan,
        user_id: int,
        result: ApplyResult,
    ) -> None:
        images = {m.image.position: m.image for m in members}
        boxes = {j.position: j.bbox for j in judged}
        async with self.sessions() as session:
            cropped = await store.derived_from_ids(session, dataset_id, FACE_CROPS)
        wanted: list[tuple[Image, tuple[float, float, float, float]]] = []
        for position in plan.crops:
            image, bbox = images[position], boxes[position]
            if image.id in cropped:
                result.crops_existing.append(position)
            elif bbox is not None:
                wanted.append((image, bbox))
        if not wanted:
            return
        max_pixels = self.faces.max_pixels
        made = await asyncio.to_thread(self._make_crops, wanted, max_pixels)
        for position, reason in made.failures:
            result.crop_skips.append(CropSkip(position, reason))
        if not made.crops:
            return
        # Positions are handed out under the same lock ingest takes, so numbers never collide.
        async with self.gather.ingestor.dataset_lock(dataset_id), unit_of_work(self.sessions) as session:
            dataset = await store.dataset_for_update(session, dataset_id)
            if dataset is None:
                raise NotFoundError(f"dataset {dataset_id} was deleted")
            present = await store.image_hashes(session, dataset_id, FACE_CROPS)
            position = dataset.next_position
            for crop in made.crops:
                if crop.facts.sha256 in present:
                    result.crops_existing.append(crop.source.position)
                    continue
                present.add(crop.facts.sha256)
                store.add_image(
                    session,
                    dataset_id=dataset_id,
                    position=position,
                    subset=FACE_CROPS,
                    derived_from_id=crop.source.id,
                    sha256=crop.facts.sha256,
                    phash=crop.facts.phash,
                    width=crop.facts.width,
                    height=crop.facts.height,
                    format=crop.facts.format,
                    byte_size=crop.facts.byte_size,
                    source_kind="crop",
                    source_ref=f"face crop of #{crop.source.position}",
                    tags=list(crop.source.tags or []),
                    context={"crop_box": list(crop.box), "source_position": crop.source.position},
                    added_by=user_id,
                )
                result.crops_added[crop.source.position] = position
                position += 1
            dataset.next_position = position
        result.crops_existing.sort()

    def _make_crops(
        self, wanted: list[tuple[Image, tuple[float, float, float, float]]], max_pixels: int
    ) -> _CropBatch:
        """Cut, encode and store the crops (blocking: runs in a thread)."""
        batch = _CropBatch()
        for image, bbox in wanted:
            side = crop_side(bbox, image.width, image.height)
            face = _box_only_face(bbox)
            try:
                crop = make_face_crop(self.blobs.path_for(image.sha256), face, size=min(side, MAX_CROP_SIDE))
                facts = analyse(crop.jpeg, max_pixels)
            except (OSError, ValueError, ImageRejectedError) as exc:
                log.warning("face crop of image %s failed: %s", image.id, exc)
                batch.failures.append((image.position, "the photo could not be read"))
                continue
            if crop.upscaled:  # only if the stored size disagreed with the pixels; never keep one
                batch.failures.append((image.position, "the crop would need upscaling"))
                continue
            self.blobs.put(crop.jpeg)
            batch.crops.append(_Crop(image, crop.box, facts))
        return batch

    # -- identity reference --------------------------------------------------------------------------------

    async def reference_for(self, dataset_id: int, engine: str | None = None) -> IdentityReference:
        """The identity reference of a dataset, as ``engine`` sees it, to score generated samples.

        Built from the stored embeddings of the dataset's included ``full`` photos (robust centroid;
        the ceiling is the mean leave-one-out similarity of its inliers). Photos without a stored
        analysis by that engine are analysed first (and stored). ``engine`` is an engine id such as
        ``FaceService.engine_id`` (what the scorer runs), or a choice ``auto``/``insightface``/``dlib``;
        None is the bot's configured engine. Raises ``InvalidInputError`` when no photo shows a face.
        """
        service, _note = self.service_for(engine)
        async with self._lock(dataset_id):
            name, members, _left = await self._members(dataset_id, service.engine_id)
            if not members:
                raise InvalidInputError(f"**{name}** has no photos to build an identity reference from.")
            if any(m.row is None for m in members):
                await self._judge(members, service, None)
                name, members, _left = await self._members(dataset_id, service.engine_id)
        embeddings = [m.row.embedding for m in members if m.row is not None and m.row.embedding is not None]
        if not embeddings:
            raise InvalidInputError(f"No face was found in the photos of **{name}**.")
        return IdentityReference.from_embeddings(service.engine_id, embeddings)


@dataclass(frozen=True)
class _Crop:
    source: Image
    box: tuple[int, int, int, int]
    facts: ImageFacts


@dataclass
class _CropBatch:
    crops: list[_Crop] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)


def _box_only_face(bbox: tuple[float, float, float, float]) -> FaceInfo:
    """A face reduced to its box: all ``make_face_crop`` needs."""
    return FaceInfo(
        bbox=bbox,
        det_score=0.0,
        embedding=np.zeros(0, dtype=np.float32),
        landmarks=[],
        face_ratio=0.0,
        sharpness=0.0,
        brightness=0.0,
        yaw=0.0,
        cut=False,
    )


__all__ = [
    "EXCLUDE_FLAGS",
    "FACE_CROPS",
    "FLAG_WORDS",
    "ApplyResult",
    "CropSkip",
    "CurationPlan",
    "CurationProgress",
    "CurationResult",
    "CurationService",
    "exclusion_reason",
]
