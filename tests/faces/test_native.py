"""``bot.faces._native`` against the libraries it stands in for: dlib's pixels to the bit at every
size, and OpenCV's nearest-neighbour matches of ORB descriptors."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.faces import _native  # type: ignore[attr-defined]  # built by the package (setup.py)
from bot.faces.analysis import load_pixels
from bot.faces.dlib_hog import HogDetector

from .conftest import FACES


def _dlib() -> Any:
    return importlib.import_module("dlib")  # dlib-bin ships no type information


def _ours(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.empty((rows, cols, 3), dtype=np.uint8)
    _native.resize(image, out)
    return out


def test_random_images_at_random_sizes_match_dlib() -> None:
    dlib = _dlib()
    rng = np.random.default_rng(14)
    shapes = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 5)] + [tuple(rng.integers(1, 90, 2)) for _ in range(120)]
    for height, width in shapes:
        image = rng.integers(0, 256, (int(height), int(width), 3), dtype=np.uint8)
        for rows, cols in [(1, 1), (int(height) * 2 + 1, int(width) * 2 + 1), tuple(rng.integers(1, 200, 2))]:
            theirs = np.asarray(dlib.resize_image(image, int(rows), int(cols)))
            assert np.array_equal(_ours(image, int(rows), int(cols)), theirs), (height, width, rows, cols)


def test_the_hog_pyramid_of_every_shared_photo_is_dlibs() -> None:
    """The five resizes ``run(image, 1)`` makes before level 4 (``pyramid_up``, four ``pyramid_down(6)``)
    give dlib's pixels on real photos, where smooth gradients make rounding differences show."""
    dlib = _dlib()
    hog = HogDetector(dlib, min_score=0.2)
    down6 = dlib.pyramid_down(6)
    photos = sorted(FACES.rglob("*.jpg"))
    assert len(photos) >= 19
    for path in photos:
        rgb = np.ascontiguousarray(load_pixels(path))
        height, width = rgb.shape[:2]
        doubled = hog.doubled(rgb)
        theirs = np.asarray(dlib.resize_image(rgb, doubled.shape[0], doubled.shape[1]))
        assert np.array_equal(doubled, theirs), path.name
        for _ in range(4):
            theirs = np.asarray(down6(theirs))
        assert np.array_equal(hog.level4(rgb), theirs), path.name
        assert (height, width) == rgb.shape[:2]


def test_a_bad_buffer_is_refused_not_read() -> None:
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="height x width x 3 uint8"):
        _native.resize(np.zeros((4, 4), dtype=np.uint8), np.empty((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="height x width x 3 uint8"):
        _native.resize(image, np.empty((2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="height x width x 3 uint8"):
        _native.resize(image, np.empty((0, 2, 3), dtype=np.uint8))
    strided = np.zeros((4, 8, 3), dtype=np.uint8)[:, ::2]
    with pytest.raises((ValueError, BufferError)):
        _native.resize(strided, np.empty((2, 2, 3), dtype=np.uint8))
    read_only = np.empty((2, 2, 3), dtype=np.uint8)
    read_only.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        _native.resize(image, read_only)


def _opencv_good_matches(query: np.ndarray, train: np.ndarray) -> list[tuple[int, int]]:
    import cv2

    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query, train, k=2)
    return [
        (p[0].queryIdx, p[0].trainIdx) for p in pairs if len(p) == 2 and p[0].distance < 0.75 * p[1].distance
    ]


def _our_good_matches(query: np.ndarray, train: np.ndarray) -> list[tuple[int, int]]:
    from bot.faces.pictures import _good_matches

    queries, trains = _good_matches(query, train)
    return list(zip(queries.tolist(), trains.tolist(), strict=True))


def test_the_ratio_test_keeps_the_matches_opencv_keeps() -> None:
    """On the keypoints of real photos (every ordered pair, the first look's 150 strongest included)
    and on random descriptors full of ties, the matches that pass the ratio test are OpenCV's, with
    the same train index."""
    from bot.faces.pictures import picture_features

    photos = sorted(FACES.rglob("*.jpg"))[::3]
    features = []
    for path in photos:
        found = picture_features(Image.fromarray(load_pixels(path)).convert("L"))
        assert found is not None
        features.append(found)
    rng = np.random.default_rng(3)
    # Few distinct bits: many train descriptors at the same distance, the case where indices could differ.
    sparse = [(rng.random((300, 32)) < 0.02).astype(np.uint8) * 255 for _ in range(3)]
    checked = passed = 0
    for query in [f.descriptors for f in features] + [features[0].descriptors[features[0].strongest[:150]]]:
        for train in [f.descriptors for f in features]:
            expected = _opencv_good_matches(query, train)
            assert _our_good_matches(query, train) == expected
            checked += 1
            passed += len(expected)
    for query in sparse:
        for train in sparse:
            assert _our_good_matches(query, train) == _opencv_good_matches(query, train)
    assert checked >= 40 and passed > 1000
    best, first, second = (np.empty(2, np.int32) for _ in range(3))
    with pytest.raises(ValueError, match="n x 32 uint8"):
        _native.hamming_knn2(np.zeros((2, 16), np.uint8), np.zeros((2, 32), np.uint8), best, first, second)
    with pytest.raises(ValueError, match="int32 array of 2 values"):
        _native.hamming_knn2(
            np.zeros((2, 32), np.uint8), np.zeros((2, 32), np.uint8), best[:1], first, second
        )
