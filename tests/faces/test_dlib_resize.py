"""``bot.faces._dlib_resize`` against dlib itself: the same pixels, to the bit, at every size."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from bot.faces import _dlib_resize  # type: ignore[attr-defined]  # built by the package (setup.py)
from bot.faces.analysis import load_pixels
from bot.faces.dlib_hog import HogDetector

from .conftest import FACES


def _dlib() -> Any:
    return importlib.import_module("dlib")  # dlib-bin ships no type information


def _ours(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.empty((rows, cols, 3), dtype=np.uint8)
    _dlib_resize.resize_rgb(image, out)
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
        _dlib_resize.resize_rgb(np.zeros((4, 4), dtype=np.uint8), np.empty((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="height x width x 3 uint8"):
        _dlib_resize.resize_rgb(image, np.empty((2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="height x width x 3 uint8"):
        _dlib_resize.resize_rgb(image, np.empty((0, 2, 3), dtype=np.uint8))
    strided = np.zeros((4, 8, 3), dtype=np.uint8)[:, ::2]
    with pytest.raises((ValueError, BufferError)):
        _dlib_resize.resize_rgb(strided, np.empty((2, 2, 3), dtype=np.uint8))
    read_only = np.empty((2, 2, 3), dtype=np.uint8)
    read_only.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        _dlib_resize.resize_rgb(image, read_only)
