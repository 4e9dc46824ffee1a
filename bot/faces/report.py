"""Dataset-level judgement: identity centroid, leave-one-out similarity, ceiling, flags and advice.

Pure functions over :class:`~bot.faces.analysis.ImageAnalysis` results (cheap numpy, no models), so
they run anywhere: in the CLI, in a worker thread of the bot, in tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.faces.analysis import FaceInfo, ImageAnalysis
from bot.faces.engines import EngineProfile, profile_for
from bot.faces.pictures import PictureMatcher

# Face box / frame area below which a face is too small to teach an identity: in a 1024² training
# image 3 % is a ~175 px box (dlib's box spans brows to lips, so the head is larger). The full-body
# test photos land at 2.6 % (obama_3) and 5.2 % (biden_1); close portraits at 6-20 %.
SMALL_FACE_RATIO = 0.03
# A "close-up" for the advice: the face fills at least a tenth of the frame.
CLOSEUP_RATIO = 0.10
# Variance of the Laplacian (face region at <= 128 px) below which the face is blurry. Measured by
# benchmarks/faces/calibrate.py: the test photos as they are 254-1692 (median 578); the same photos
# with a 2.5 px Gaussian blur (at the 128 px face scale) 5-14. 60 is about their geometric middle.
BLURRY_SHARPNESS = 60.0
# A second face counts as "another person in the picture" when its box is at least this share of the
# main face's area (1/3 of its width): background strangers far behind don't spoil an identity photo.
SECOND_FACE_AREA = 1 / 9
# Brightness (0..1 mean luma of the face) outside this range is under- or over-exposed.
DARK_FACE, BRIGHT_FACE = 0.25, 0.85
# |yaw| at or above this counts as a turned head (three-quarter view or more) for the advice.
TURNED_YAW = 20.0
# Two photos whose 64-bit perceptual hashes differ in at most this many bits show nearly the same
# picture (framing, pose, background). Different photos differ by 20+ bits on the shared test photos
# (closest pair of different photos: 20); a re-encode or resize differs by 0-2.
SAME_PICTURE_BITS = 10
# Without pixels to compare: a face this close to another is the same face pixels, per engine family. dlib:
# copies of one photo (resized, re-encoded, re-framed) 0.9906-0.9991 on the shared photos; different
# photos of one person at most 0.9708 there and 0.9856 in the studio's set. ArcFace: not calibrated
# here (no weights offline); re-encoded copies score >= 0.9 in published practice, so 0.97 is cautious.
IDENTICAL_FACE = {"dlib": 0.995, "insightface": 0.97}
# Rough targets for an identity LoRA set.
MIN_GOOD_IMAGES, GOOD_IMAGES = 10, 20

FLAGS = (
    "unreadable",
    "no_face",
    "multiple_faces",
    "identity_outlier",
    "small_face",
    "face_cut",
    "blurry",
    "near_duplicate",
)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two L2-normalised embeddings."""
    return float(np.dot(a, b))


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)


def robust_centroid(
    embeddings: np.ndarray, threshold: float, *, rounds: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Centroid of the majority identity, robust to a few wrong photos.

    Start from the medoid (the face most similar on average to all others), keep the faces at or above
    ``threshold`` to the current centre, re-centre on their mean, repeat until stable. If fewer than
    half would survive (a mixed set), keep the half nearest the medoid instead. Returns the unit
    centroid and the boolean inlier mask.
    """
    n = len(embeddings)
    if n == 0:
        raise ValueError("no embeddings")
    if n <= 2:
        return _unit(embeddings.mean(axis=0)), np.ones(n, dtype=bool)
    sims = embeddings @ embeddings.T
    medoid = int(np.argmax(sims.sum(axis=1) - 1.0))
    centre = embeddings[medoid]
    mask = np.ones(n, dtype=bool)
    for _ in range(rounds):
        to_centre = embeddings @ centre
        new_mask = to_centre >= threshold
        if new_mask.sum() < math.ceil(n / 2):
            order = np.argsort(-(embeddings @ embeddings[medoid]))
            new_mask = np.zeros(n, dtype=bool)
            new_mask[order[: math.ceil(n / 2)]] = True
        centre = _unit(embeddings[new_mask].mean(axis=0))
        if np.array_equal(new_mask, mask):
            break
        mask = new_mask
    return centre, mask


@dataclass
class ImageReport:
    """One image's verdict in the context of its dataset."""

    analysis: ImageAnalysis
    subject: int | None  # index into analysis.faces of the face taken as the subject
    identity_similarity: float | None  # leave-one-out similarity to the set's centroid
    flags: list[str] = field(default_factory=list)
    duplicate_of: str | None = None

    @property
    def face(self) -> FaceInfo | None:
        return None if self.subject is None else self.analysis.faces[self.subject]

    def to_row(self) -> dict[str, Any]:
        """Column values for storage's ``FaceAnalysis`` row (embedding as float32 bytes)."""
        face = self.face
        return {
            "engine": self.analysis.engine,
            "face_count": self.analysis.face_count,
            "bbox": [round(v, 1) for v in face.bbox] if face else None,
            "det_score": face.det_score if face else None,
            "face_ratio": face.face_ratio if face else None,
            "sharpness": face.sharpness if face else None,
            "brightness": face.brightness if face else None,
            "yaw": face.yaw if face else None,
            "embedding": face.embedding.astype(np.float32).tobytes() if face else None,
            "identity_similarity": self.identity_similarity,
            "flags": list(self.flags),
        }

    def to_json(self) -> dict[str, Any]:
        face = self.face
        return {
            "path": self.analysis.source,
            "faces": self.analysis.face_count,
            "width": self.analysis.width,
            "height": self.analysis.height,
            "bbox": [round(v, 1) for v in face.bbox] if face else None,
            "det_score": _round(face.det_score if face else None, 3),
            "face_ratio": _round(face.face_ratio if face else None, 4),
            "sharpness": _round(face.sharpness if face else None, 1),
            "brightness": _round(face.brightness if face else None, 3),
            "yaw": _round(face.yaw if face else None, 1),
            "identity_similarity": _round(self.identity_similarity, 4),
            "flags": list(self.flags),
            "duplicate_of": self.duplicate_of,
            "error": self.analysis.error,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass
class DatasetReport:
    """The curation verdict on a set of images analysed by one engine."""

    engine: str
    profile: EngineProfile
    images: list[ImageReport]
    centroid: np.ndarray | None
    ceiling: float | None  # mean leave-one-out similarity of the reference (inlier) faces
    reference_count: int  # faces that made the centroid
    advice: list[str]

    def flagged(self, flag: str) -> list[ImageReport]:
        return [item for item in self.images if flag in item.flags]

    def reference(self) -> IdentityReference | None:
        """The identity reference to score generated samples against."""
        if self.centroid is None:
            return None
        return IdentityReference(self.engine, self.centroid, self.ceiling, self.reference_count)

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "ceiling": _round(self.ceiling, 4),
            "reference_faces": self.reference_count,
            "thresholds": {
                "same_person": self.profile.same_person,
                "identity_outlier": self.profile.outlier,
                "near_duplicate": self.profile.near_duplicate,
                "small_face_ratio": SMALL_FACE_RATIO,
                "blurry_sharpness": BLURRY_SHARPNESS,
            },
            "images": [item.to_json() for item in self.images],
            "advice": list(self.advice),
        }


@dataclass(frozen=True)
class SampleScore:
    """How much a (generated) image looks like the reference identity."""

    engine: str
    face_found: bool
    similarity: float | None
    percent_of_ceiling: float | None
    same_person: bool | None


@dataclass
class IdentityReference:
    """A person's identity as one engine sees it: centroid and ceiling of the curated set."""

    engine: str
    centroid: np.ndarray
    ceiling: float | None
    count: int

    @classmethod
    def from_embeddings(cls, engine: str, embeddings: Sequence[np.ndarray | bytes]) -> IdentityReference:
        """Rebuild a reference from stored embeddings (float32 bytes or arrays) of one engine:
        robust centroid, and the ceiling as the mean leave-one-out similarity of its inliers."""
        if not embeddings:
            raise ValueError("no embeddings")
        stack = np.stack(
            [
                np.frombuffer(e, dtype=np.float32) if isinstance(e, bytes) else np.asarray(e, np.float32)
                for e in embeddings
            ]
        )
        centroid, mask = robust_centroid(stack, profile_for(engine).outlier)
        inliers = stack[mask]
        ceiling = None
        if len(inliers) >= 2:
            total = inliers.sum(axis=0)
            ceiling = float(np.mean([cosine(e, _unit(total - e)) for e in inliers]))
        return cls(engine, centroid, ceiling, len(inliers))

    def score(self, analysis: ImageAnalysis) -> SampleScore:
        """Similarity of the best-matching face in ``analysis`` to the centroid (raw and % of ceiling)."""
        if analysis.engine != self.engine:
            raise ValueError(f"scores of {analysis.engine} can't be compared with a {self.engine} reference")
        if not analysis.faces:
            return SampleScore(self.engine, False, None, None, None)
        similarity = max(cosine(face.embedding, self.centroid) for face in analysis.faces)
        percent = 100.0 * similarity / self.ceiling if self.ceiling else None
        return SampleScore(
            self.engine, True, similarity, percent, similarity >= profile_for(self.engine).same_person
        )


def _hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def build_report(
    analyses: Sequence[ImageAnalysis],
    *,
    phash_threshold: int = 4,
    pictures: PictureMatcher | None = None,
    threads: int = 1,
) -> DatasetReport:
    """Judge a set of analyses of one person's photos (all by the same engine).

    ``pictures`` finds each analysis's pixels by its ``source`` for the same-picture check of
    near-duplicates; by default a source that is a file path is read from disk. ``threads``: how many
    photos' near-duplicate searches run at once (keypoint matching releases the GIL; 2 suits the
    CLI, where nothing else waits for the interpreter).
    """
    matcher = pictures or PictureMatcher()
    for analysis in analyses:
        if analysis.picture is not None:
            matcher.know(analysis.source, analysis.picture)
    engines = {a.engine for a in analyses}
    if len(engines) > 1:
        raise ValueError(f"analyses from several engines can't be mixed: {sorted(engines)}")
    engine = engines.pop() if engines else "none"
    profile = profile_for(engine) if analyses else profile_for("dlib")
    items = [
        ImageReport(analysis=a, subject=0 if a.faces else None, identity_similarity=None) for a in analyses
    ]

    # Centroid from images with exactly one face (unambiguous); group photos join only when needed.
    pool = [i for i, a in enumerate(analyses) if a.face_count == 1]
    if len(pool) < 2:
        pool = [i for i, a in enumerate(analyses) if a.face_count >= 1]
    centroid: np.ndarray | None = None
    inliers: list[int] = []
    if pool:
        embeddings = np.stack([analyses[i].faces[0].embedding for i in pool]).astype(np.float32)
        centroid, mask = robust_centroid(embeddings, profile.outlier)
        inliers = [pool[k] for k in range(len(pool)) if mask[k]]
        total = np.sum([analyses[i].faces[0].embedding for i in inliers], axis=0).astype(np.float32)
        # In a group photo, the subject is the face nearest the identity (not just the biggest).
        for item in items:
            faces = item.analysis.faces
            if len(faces) > 1 and item.subject is not None:
                item.subject = int(np.argmax([cosine(f.embedding, centroid) for f in faces]))
        for index, item in enumerate(items):
            face = item.face
            if face is None:
                continue
            if index in inliers:
                if len(inliers) < 2:
                    continue
                others = _unit(total - analyses[index].faces[0].embedding)
            else:
                others = centroid
            item.identity_similarity = cosine(face.embedding, others)
    reference_sims = [items[i].identity_similarity for i in inliers]
    known = [s for s in reference_sims if s is not None]
    ceiling = float(np.mean(known)) if len(known) >= 2 else None

    # Flags.
    for item in items:
        a, face = item.analysis, item.face
        if a.error:
            item.flags.append("unreadable")
            continue
        if face is None:
            item.flags.append("no_face")
            continue
        main_area = a.faces[0].area
        if sum(1 for f in a.faces if f.area >= SECOND_FACE_AREA * main_area) > 1:
            item.flags.append("multiple_faces")
        if item.identity_similarity is not None and item.identity_similarity < profile.outlier:
            item.flags.append("identity_outlier")
        if face.face_ratio < SMALL_FACE_RATIO:
            item.flags.append("small_face")
        if face.cut:
            item.flags.append("face_cut")
        if face.sharpness < BLURRY_SHARPNESS:
            item.flags.append("blurry")

    def first_duplicate(j: int) -> ImageReport | None:
        """The first earlier photo that ``items[j]`` duplicates, if any."""
        later = items[j]
        for earlier in items[:j]:
            if "unreadable" in later.flags or "unreadable" in earlier.flags:
                continue
            # Picture and face together. The same face alone is one person at two events (face cosine
            # 0.9856 at a picture distance of 22 bits in the studio's set), not a duplicate. Duplicates:
            # - the same picture by its hash (<= ``phash_threshold``: a re-encode, a resize);
            # - a near-identical face in the same picture: a close hash (<= SAME_PICTURE_BITS: a burst
            #   shot, a retouch) or, crop- and scale-proof, matching keypoints (``bot.faces.pictures``:
            #   obama_small.jpg is obama_1.jpg re-framed, 28 bits apart). Without the pixels (analyses
            #   made elsewhere), an identical face (>= IDENTICAL_FACE) stands for the same pixels.
            distance = (
                _hamming(later.analysis.phash, earlier.analysis.phash)
                if later.analysis.phash is not None and earlier.analysis.phash is not None
                else None
            )
            face_cos = (
                cosine(later.face.embedding, earlier.face.embedding)
                if later.face is not None and earlier.face is not None
                else None
            )
            duplicate = distance is not None and distance <= phash_threshold
            if not duplicate and face_cos is not None and face_cos >= profile.near_duplicate:
                if distance is not None and distance <= max(phash_threshold, SAME_PICTURE_BITS):
                    duplicate = True
                else:
                    same = matcher.same(later.analysis.source, earlier.analysis.source)
                    duplicate = (
                        same if same is not None else face_cos >= IDENTICAL_FACE.get(profile.family, 1.0)
                    )
            if duplicate:
                return earlier
        return None

    # Each photo's search is independent of the others'. Keypoint matching releases the GIL, so two
    # threads halve the wait where many pairs need it (200 photos of a few sessions: ~250 matches, the
    # longest serial step after the analyses). Each match is deterministic (RANSAC seeds its own RNG).
    if threads > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="faces-report") as pool:
            duplicates = list(pool.map(first_duplicate, range(len(items))))
    else:
        duplicates = [first_duplicate(j) for j in range(len(items))]
    if duplicates:
        for later, earlier in zip(items, duplicates, strict=True):
            if earlier is not None:
                later.flags.append("near_duplicate")
                later.duplicate_of = earlier.analysis.source

    report = DatasetReport(
        engine=engine,
        profile=profile,
        images=items,
        centroid=centroid,
        ceiling=ceiling,
        reference_count=len(inliers),
        advice=[],
    )
    report.advice = advise(report)
    return report


def _photos(n: int, verb: str = "") -> str:
    """'1 photo shows' / '3 photos show' (the verb given in its plural form)."""
    irregular = {"have": "has", "are": "is", "may show": "may show"}
    if not verb:
        return f"{n} photo" if n == 1 else f"{n} photos"
    if n == 1:
        return f"1 photo {irregular.get(verb, verb + 's')}"
    return f"{n} photos {verb}"


def advise(report: DatasetReport) -> list[str]:
    """Plain-words advice on what the set lacks for an identity LoRA."""
    items = report.images
    total = len(items)
    if total == 0:
        return ["The set is empty: add 15-30 photos of the person, most of them close-ups."]
    advice: list[str] = []
    good = [
        i
        for i in items
        if i.face is not None
        and not set(i.flags)
        & {
            "no_face",
            "multiple_faces",
            "identity_outlier",
            "blurry",
            "near_duplicate",
            "face_cut",
            "unreadable",
        }
    ]
    faces = [i.face for i in items if i.face is not None]

    def count(flag: str) -> int:
        return len(report.flagged(flag))

    if count("unreadable"):
        advice.append(f"{_photos(count('unreadable'))} could not be read: re-export them as JPEG or PNG.")
    if count("no_face"):
        advice.append(
            f"{_photos(count('no_face'), 'show')} no face: remove them or replace them with portraits."
        )
    if count("identity_outlier"):
        advice.append(
            f"{_photos(count('identity_outlier'), 'may show')} a different person: check them and remove the "
            "ones that aren't the person."
        )
    if count("multiple_faces"):
        advice.append(
            f"{_photos(count('multiple_faces'), 'show')} several people: crop them to the person "
            "(use face crops) or remove them, or the LoRA learns a mix of faces."
        )
    closeups = sum(1 for f in faces if f.face_ratio >= CLOSEUP_RATIO)
    if faces and closeups < max(3, total // 3):
        advice.append(
            f"only {closeups} of {total} photos show the face larger than {CLOSEUP_RATIO:.0%} of the frame: "
            "add close-ups or use face crops."
        )
    if count("small_face"):
        advice.append(
            f"{_photos(count('small_face'), 'show')} the face very small "
            f"(under {SMALL_FACE_RATIO:.0%} of the frame): the LoRA will learn the body and clothes there, "
            "not the face; use face crops of them."
        )
    if count("blurry"):
        advice.append(f"{_photos(count('blurry'), 'have')} a blurry face: replace them with sharper ones.")
    if count("face_cut"):
        advice.append(
            f"{_photos(count('face_cut'), 'cut')} the face at the frame's edge: prefer whole faces."
        )
    if count("near_duplicate"):
        advice.append(
            f"{_photos(count('near_duplicate'), 'are')} near-duplicates of another photo: drop them, "
            "they only over-weight one look."
        )
    if len(faces) >= 3:
        turned = sum(1 for f in faces if abs(f.yaw) >= TURNED_YAW)
        if turned == 0:
            advice.append("every face looks straight at the camera: add three-quarter and profile views.")
        elif turned < max(2, len(faces) // 6):
            advice.append(f"only {turned} of {len(faces)} faces are turned: add a few more angles.")
        brightness = [f.brightness for f in faces]
        dark = sum(1 for b in brightness if b < DARK_FACE)
        bright = sum(1 for b in brightness if b > BRIGHT_FACE)
        if dark:
            advice.append(f"{_photos(dark, 'have')} a dark, under-exposed face.")
        if bright:
            advice.append(f"{_photos(bright, 'have')} a washed-out, over-exposed face.")
        if float(np.std(brightness)) < 0.05 and len(faces) >= 6:
            advice.append(
                "the lighting is the same in every photo: add a few in other light (outdoors, indoors)."
            )
    if len(good) < MIN_GOOD_IMAGES:
        advice.append(
            f"only {len(good)} usable photos: aim for {GOOD_IMAGES}-30 sharp photos of the person alone, "
            "half of them close-ups."
        )
    if report.ceiling is not None and report.ceiling < report.profile.outlier + 0.02:
        advice.append(
            f"the photos agree weakly on the face (ceiling {report.ceiling:.2f}): "
            "check the set shows one person."
        )
    if not advice:
        advice.append("the set looks good for an identity LoRA.")
    return advice
