"""Scoring samples against a dataset's identity reference (design §6).

A sample's score is its face similarity to the reference centroid, shown raw and as a percentage of
the reference's ceiling (the mean leave-one-out similarity of the person's own photos). A checkpoint's
score is the **mean over the samples in which a face was found**, with the share of samples that had a
face reported beside it: a checkpoint that draws a face in one prompt out of four is not "as good" as
one that draws it in all four, and the share makes that visible instead of hiding it in the mean.

The face engines and the reference live in ``bot.faces``; scores carry their engine id, and scores of
different engines are never combined (``aggregate`` refuses).

Two ways to score:
- :class:`IdentityScorer` (sync, one image at a time): :class:`ReferenceScorer` runs an engine in this
  process — for the CLI, benchmarks and tests, or inside a worker thread.
- :class:`SampleScorer` (async, a batch): what the review service uses. :class:`PooledScorer` sends the
  batch to the face service's process pool; :class:`ThreadedScorer` runs any ``IdentityScorer`` in a thread.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from bot.faces.report import IdentityReference, SampleScore, cosine

if TYPE_CHECKING:
    from bot.faces.analysis import ImageAnalysis, ImageSource
    from bot.faces.engines import FaceEngine
    from bot.faces.service import FaceService
    from storage.models import Checkpoint, Sample

__all__ = [
    "CheckpointScore",
    "Examined",
    "IdentityReference",
    "IdentityScorer",
    "MixedEnginesError",
    "PooledScorer",
    "ReferenceScorer",
    "SampleScore",
    "SampleScorer",
    "ThreadedScorer",
    "aggregate",
    "pct_of_ceiling",
    "record_scores",
    "score_images",
]


@dataclass(frozen=True)
class Examined:
    """A sample's score plus what the copy check needs: its picture hash and its best face's embedding."""

    score: SampleScore
    phash: str | None = None
    embedding: np.ndarray | None = None


def examine(reference: IdentityReference, analysis: ImageAnalysis) -> Examined:
    """Score ``analysis`` against ``reference`` and keep the matching face's embedding and the phash."""
    score = reference.score(analysis)
    embedding = None
    if analysis.faces:
        best = max(analysis.faces, key=lambda face: cosine(face.embedding, reference.centroid))
        embedding = np.asarray(best.embedding, dtype=np.float32)
    return Examined(score, analysis.phash, embedding)


@runtime_checkable
class IdentityScorer(Protocol):
    """An identity reference ready to score one image at a time (blocking: run it in a worker thread)."""

    @property
    def engine(self) -> str: ...

    @property
    def ceiling(self) -> float | None: ...

    def score(self, image: bytes) -> SampleScore: ...


class SampleScorer(Protocol):
    """Scores a batch of images without blocking the event loop."""

    @property
    def engine(self) -> str: ...

    @property
    def ceiling(self) -> float | None: ...

    async def score_many(self, images: Sequence[bytes]) -> list[SampleScore]: ...

    async def examine_many(self, images: Sequence[bytes]) -> list[Examined]: ...


def pct_of_ceiling(similarity: float | None, ceiling: float | None) -> float | None:
    """``similarity`` as a percentage of ``ceiling``; None if either is missing or the ceiling is <= 0."""
    if similarity is None or ceiling is None or not math.isfinite(similarity) or not math.isfinite(ceiling):
        return None
    if ceiling <= 0:
        return None
    return 100.0 * similarity / ceiling


@dataclass(frozen=True, slots=True)
class CheckpointScore:
    """A checkpoint's scores over its samples.

    ``mean`` and ``max`` are taken over the samples in which a face was found (None when there were
    none); ``face_share`` is the fraction of samples with a face (0.0–1.0).
    """

    engine: str | None
    mean: float | None
    max: float | None
    face_share: float
    samples: int
    faces: int
    recognised: int | None = None  # samples at or above the engine's same-person threshold

    def pct(self, ceiling: float | None) -> float | None:
        """The mean as a percentage of ``ceiling``."""
        return pct_of_ceiling(self.mean, ceiling)


class MixedEnginesError(ValueError):
    """Scores from different face engines were about to be combined (they are not comparable)."""


def aggregate(scores: Sequence[SampleScore]) -> CheckpointScore:
    """Combine one checkpoint's sample scores: mean and max over samples with a face, and the face share."""
    engines = {s.engine for s in scores}
    if len(engines) > 1:
        raise MixedEnginesError(f"scores from several engines cannot be combined: {sorted(engines)}")
    from bot.review.verdict import is_recognised, same_person_threshold

    found = [s.similarity for s in scores if s.face_found and s.similarity is not None]
    engine = next(iter(engines)) if engines else None
    return CheckpointScore(
        engine=engine,
        mean=sum(found) / len(found) if found else None,
        max=max(found) if found else None,
        face_share=len(found) / len(scores) if scores else 0.0,
        samples=len(scores),
        faces=len(found),
        recognised=(
            sum(1 for similarity in found if is_recognised(similarity, engine))
            if same_person_threshold(engine) is not None
            else None
        ),
    )


def score_images(scorer: IdentityScorer, images: Sequence[bytes]) -> list[SampleScore]:
    """Score each image (blocking). An image that cannot be decoded counts as "no face"."""
    results: list[SampleScore] = []
    for data in images:
        try:
            results.append(scorer.score(data))
        except (OSError, ValueError):
            # A corrupt sample must not stop the review of the others: it shows as "no face".
            results.append(SampleScore(scorer.engine, False, None, None, None))
    return results


class _AgainstReference:
    """A scorer bound to one identity reference: its engine and ceiling are the reference's."""

    reference: IdentityReference

    @property
    def engine(self) -> str:
        return self.reference.engine

    @property
    def ceiling(self) -> float | None:
        return self.reference.ceiling


class ReferenceScorer(_AgainstReference):
    """An engine in this process plus an identity reference (CLI, benchmarks, tests, worker threads)."""

    def __init__(self, engine: FaceEngine, reference: IdentityReference) -> None:
        if reference.engine != engine.engine_id:
            raise MixedEnginesError(f"reference made by {reference.engine}, engine is {engine.engine_id}")
        self._engine = engine
        self.reference = reference

    @classmethod
    def from_photos(cls, engine: FaceEngine, photos: Sequence[ImageSource]) -> ReferenceScorer:
        """Build the reference from a person's photos the way curation does (centroid and ceiling)."""
        from bot.faces.analysis import analyse_image
        from bot.faces.report import build_report

        report = build_report([analyse_image(engine, photo) for photo in photos])
        reference = report.reference()
        if reference is None:
            raise ValueError("no face found in the reference photos")
        return cls(engine, reference)

    def score(self, image: bytes) -> SampleScore:
        from bot.faces.analysis import analyse_image

        return self.reference.score(analyse_image(self._engine, image, scoring=True))

    def examine(self, image: bytes) -> Examined:
        from bot.faces.analysis import analyse_image

        return examine(self.reference, analyse_image(self._engine, image))


def examine_images(scorer: IdentityScorer, images: Sequence[bytes]) -> list[Examined]:
    """Like :func:`score_images`, keeping phash and embedding when the scorer can tell them."""
    detailed = getattr(scorer, "examine", None)
    results: list[Examined] = []
    for data in images:
        try:
            results.append(detailed(data) if detailed is not None else Examined(scorer.score(data)))
        except (OSError, ValueError):
            results.append(Examined(SampleScore(scorer.engine, False, None, None, None)))
    return results


class ThreadedScorer:
    """Runs a blocking :class:`IdentityScorer` in a worker thread."""

    def __init__(self, scorer: IdentityScorer) -> None:
        self._scorer = scorer

    @property
    def engine(self) -> str:
        return self._scorer.engine

    @property
    def ceiling(self) -> float | None:
        return self._scorer.ceiling

    async def score_many(self, images: Sequence[bytes]) -> list[SampleScore]:
        return await asyncio.to_thread(score_images, self._scorer, list(images))

    async def examine_many(self, images: Sequence[bytes]) -> list[Examined]:
        return await asyncio.to_thread(examine_images, self._scorer, list(images))


class PooledScorer(_AgainstReference):
    """Scores in the face service's process pool against one reference (the bot's normal path)."""

    def __init__(self, faces: FaceService, reference: IdentityReference) -> None:
        self._faces = faces
        self.reference = reference

    async def score_many(self, images: Sequence[bytes]) -> list[SampleScore]:
        return await self._faces.score(self.reference, list(images))

    async def examine_many(self, images: Sequence[bytes]) -> list[Examined]:
        analyses = await self._faces.analyse_many(list(images))
        return [examine(self.reference, analysis) for analysis in analyses]


def record_scores(
    checkpoint: Checkpoint, samples: Sequence[Sample], scores: Sequence[SampleScore]
) -> CheckpointScore:
    """Write sample scores and the checkpoint's aggregate onto the ORM rows (the caller commits)."""
    if len(samples) != len(scores):
        raise ValueError(f"{len(samples)} samples but {len(scores)} scores")
    for sample, score in zip(samples, scores, strict=True):
        sample.engine = score.engine
        sample.face_found = score.face_found
        sample.face_similarity = score.similarity
        sample.ceiling_pct = score.percent_of_ceiling
    summary = aggregate(scores)
    checkpoint.engine = summary.engine
    checkpoint.score_mean = summary.mean
    checkpoint.score_max = summary.max
    checkpoint.face_share = summary.face_share
    return summary
