"""Are two photos the same picture? Keypoints matched under one similarity transform (crop/scale proof).

A perceptual hash compares whole frames, so one photo cropped or re-framed differs by as many bits (28
for obama_small.jpg against obama_1.jpg) as two photos of one person at two events (22 in the studio's
set). Matching ORB keypoints and asking how many agree on one similarity transform (shift, scale,
rotation: what cropping, resizing and re-framing do) separates them cleanly. On the shared test photos:
copies and crops of one photo 39-843 agreeing keypoints, every pair of different photos 9 or fewer.

Used only for pairs whose faces are already near-identical (few per dataset); keypoints are cached per
picture. CPU work: call it from a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from bot.faces.native import native_module

# At least this many keypoints agreeing on one transform: the same picture (different photos <= 9).
SAME_PICTURE_INLIERS = 25
# Pictures are compared at this size (longest side): enough keypoints, ~0.1 s each.
MATCH_SIDE = 800
# A first look matches only this many of the first picture's strongest keypoints (against all of the
# second's): a copy shows its 25 agreeing keypoints among them at a tenth of the cost. Only a "same"
# is taken from it; anything less is decided by matching them all.
FIRST_LOOK_KEYPOINTS = 150

PictureSource = str | Path | bytes
Resolver = Callable[[str], PictureSource | None]


@lru_cache(maxsize=1)
def _cv2() -> Any:
    import cv2

    return cv2


@dataclass(frozen=True)
class PictureFeatures:
    """A picture's ORB keypoints: positions (n×2 float32, at MATCH_SIDE), descriptors (n×32 uint8) and
    the indices of the keypoints from strongest to weakest response (n uint16). Plain arrays, so a face
    worker can compute them and send them back with its analysis."""

    points: np.ndarray
    descriptors: np.ndarray
    strongest: np.ndarray


def picture_features(grey: Image.Image) -> PictureFeatures | None:
    """The keypoints of an upright greyscale picture (None when it has none). The face workers call this
    on the picture they already decoded, so the report never reads the photos again."""
    cv2 = _cv2()
    pixels = np.asarray(grey)
    scale = MATCH_SIDE / max(grey.size)
    if scale < 1:
        # Area averaging in OpenCV: 0.3 ms at 1024 px where Pillow's bicubic thumbnail took 3.4.
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    keypoints, descriptors = cv2.ORB_create(nfeatures=1500).detectAndCompute(pixels, None)
    if descriptors is None:
        return None
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    strongest = np.argsort([-k.response for k in keypoints], kind="stable").astype(np.uint16)
    return PictureFeatures(points, descriptors, strongest)


def _load(source: PictureSource) -> Image.Image:
    opened = Image.open(io.BytesIO(source)) if isinstance(source, bytes) else Image.open(source)
    with opened as image:
        return ImageOps.exif_transpose(image).convert("L")


class PictureMatcher:
    """Decides whether two analysed images (by their ``source`` label) show the same picture.

    ``resolve`` turns a label into the image (path or bytes); None when unknown, and then ``same``
    answers None (the caller falls back to the perceptual hash).
    """

    def __init__(self, resolve: Resolver | None = None) -> None:
        self._resolve = resolve or _existing_file
        self._features: dict[str, PictureFeatures | None] = {}

    def know(self, label: str, features: PictureFeatures) -> None:
        """Keypoints already computed for ``label`` (by the worker that analysed it): no re-reading."""
        self._features[label] = features

    def _features_of(self, label: str) -> PictureFeatures | None:
        if label not in self._features:
            source = self._resolve(label)
            found = None
            if source is not None:
                try:
                    grey = _load(source)
                except (OSError, ValueError):
                    grey = None
                if grey is not None:
                    found = picture_features(grey)
            self._features[label] = found
        return self._features[label]

    def agreeing_keypoints(self, a: str, b: str, *, first_look: bool = False) -> int | None:
        """Keypoints of ``a`` and ``b`` that agree on one similarity transform (None: no pixels).
        ``first_look``: match only ``a``'s FIRST_LOOK_KEYPOINTS strongest keypoints."""
        first, second = self._features_of(a), self._features_of(b)
        if first is None or second is None:
            return None
        points, descriptors = first.points, first.descriptors
        if first_look:
            chosen = first.strongest[:FIRST_LOOK_KEYPOINTS]
            points, descriptors = points[chosen], descriptors[chosen]
        return _agreeing(points, descriptors, second)

    def same(self, a: str, b: str) -> bool | None:
        # Each first-look match is also a match of the full set (same keypoint of ``a``, nearest two of
        # all of ``b``'s), so enough of them agreeing is the answer; on 242 pairs of the 200-photo
        # benchmark it decided 124 of the 127 copies, and the full match agreed on every one.
        quick = self.agreeing_keypoints(a, b, first_look=True)
        if quick is None:
            return None
        if quick >= SAME_PICTURE_INLIERS:
            return True
        inliers = self.agreeing_keypoints(a, b)
        return None if inliers is None else inliers >= SAME_PICTURE_INLIERS


def _good_matches(descriptors: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, train indices) of the matches that pass the ratio test: the nearest train
    descriptor is nearer than 0.75 × the second nearest (Hamming), in query order.

    Computed by ``bot.faces._native.hamming_knn2`` where it is built (2.3 ms for 1500 × 1500
    instead of OpenCV's 10): the same matches as ``BFMatcher(NORM_HAMMING).knnMatch(k=2)``. Only the
    nearest index of a match that passes can differ between the two, and it cannot: a tie for the
    nearest makes both distances equal, which fails the test (tests/faces/test_pictures.py)."""
    native = native_module()
    if native is None:  # pragma: no cover - the package build compiles it
        cv2 = _cv2()
        pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(descriptors, train, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
        return np.array([g.queryIdx for g in good], np.intp), np.array([g.trainIdx for g in good], np.intp)
    count = len(descriptors)
    best, first, second = (np.empty(count, np.int32) for _ in range(3))
    if len(train) < 2:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    query_descriptors, train_descriptors = np.ascontiguousarray(descriptors), np.ascontiguousarray(train)
    native.hamming_knn2(query_descriptors, train_descriptors, best, first, second)
    query = np.flatnonzero(first < 0.75 * second)
    return query, best[query].astype(np.intp)


def _agreeing(points: np.ndarray, descriptors: np.ndarray, second: PictureFeatures) -> int:
    query, train = _good_matches(descriptors, second.descriptors)
    if len(query) < 6:
        return len(query)
    cv2 = _cv2()
    src, dst = points[query], second.points[train]
    _matrix, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0)
    return int(mask.sum()) if mask is not None else 0


def _existing_file(label: str) -> Path | None:
    path = Path(label)
    try:
        return path if path.is_file() else None
    except OSError:
        return None
