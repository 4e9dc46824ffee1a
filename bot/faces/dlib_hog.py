"""dlib's HOG face detector at "upsample 1", minus the work that finds nothing.

``detector.run(image, 1)`` doubles the image (bilinear, 4× the pixels) and scans a pyramid that shrinks
by 5/6 per level. The four finest levels (scales 2, 1.67, 1.39, 1.16 of the photo) only find faces
under ~85 px and cost ~75 % of the scan; everything larger is found on levels 4 and up, which are the
doubled image shrunk four times (scale 0.96). So:

1. Build that level-4 image and scan it (and its own smaller levels) with the same detector at
   upsample 0. The detector sees the very windows it sees at upsample 1, so detection scores match; each
   box is mapped back through the exact level arithmetic dlib uses (``pyramid_down<6>``: p·6/5 + 0.3 per
   level, rounded once; then ``pyramid_down<2>``: p/2 − (1.25, 0.75)), so boxes match to the pixel.
2. The level-4 image is made by the resize dlib itself uses (``pyramid_up``, then four
   ``pyramid_down(6)``: five bilinear resizes), bit for bit, by :mod:`bot.faces._native` (a small
   C module built with the package): ~14 ms at 1024×768 px where dlib's own calls take ~30 ms. Scores and
   boxes are therefore upsample 1's exactly, for curation and scoring alike. (An earlier OpenCV copy of
   the chain was one grey level off on 15 % of pixels and could move a face to the next pyramid level;
   it needed dlib's chain again for group photos and near-threshold scores.) Without the C module
   (a source tree nobody built), dlib's own calls make the same image, slower.
3. When nothing at all is found on the coarse levels, the four fine levels are scanned as upsample 1
   scans them: small faces are only searched in photos where no larger face was found. A face under
   ~85 px beside a larger one in a 1024 px photo is not looked for; it cannot be the training subject
   (``small_face`` starts at 3 % of the frame, ~175 px) and is 8× smaller than the frame's side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

# Scale of pyramid level 4 of the doubled image: the first level upsample 1 shares with nothing finer.
COARSE_LEVELS_SKIPPED = 4
# Side of the frontal detector's box in the coordinates of the level it was found at (72 for dlib's
# frontal_face_detector: its boxes are 72·(6/5)^level px in the scanned image, rounded).
_BOX_SIDE = 72


def _round(value: float) -> int:
    # dlib converts drectangle → rectangle with floor(x + 0.5).
    return math.floor(value + 0.5)


def _up6(value: float, levels: int) -> float:
    for _ in range(levels):
        value = value * (6 / 5.0) + 0.3
    return value


def _down6(value: float, levels: int) -> float:
    for _ in range(levels):
        value = (value - 0.3) * (5 / 6.0)
    return value


Box = tuple[int, int, int, int]


def map_to_upsample1(box: Box) -> Box:
    """A box found by scanning the level-4 image, as ``run(image, 1)`` reports it in the photo.

    The scanner returns ``round(up6^j(R))`` for the integral box R (side ~72) on its level j; find j and R,
    then apply the mapping upsample 1 applies: ``round(up6^(4+j)(R))`` in the doubled image, then
    ``pyramid_down<2>`` back to the photo, rounded.
    """
    best: tuple[int, int, Box] | None = None
    # The level whose box side is nearest 72 px, give or take two: the others are far off (x1.2 each).
    expected = round(math.log(max(box[2] - box[0], 1) / _BOX_SIDE, 6 / 5))
    for level in range(max(0, expected - 2), min(16, expected + 3)):
        candidate = tuple(_round(_down6(v, level)) for v in box)
        if tuple(_round(_up6(v, level)) for v in candidate) != box:
            continue
        error = abs(candidate[2] - candidate[0] - _BOX_SIDE) + abs(candidate[3] - candidate[1] - _BOX_SIDE)
        if best is None or error < best[0]:
            best = (error, level, candidate)  # type: ignore[assignment]
    if best is None:  # pragma: no cover - every box the scanner makes maps back
        raise ValueError(f"box {box} is not on the detector's pyramid")
    _, level, feature_box = best
    doubled = [_round(_up6(v, COARSE_LEVELS_SKIPPED + level)) for v in feature_box]
    return (
        _round(doubled[0] / 2.0 - 1.25),
        _round(doubled[1] / 2.0 - 0.75),
        _round(doubled[2] / 2.0 - 1.25),
        _round(doubled[3] / 2.0 - 0.75),
    )


class HogDetector:
    """Boxes and scores as ``frontal_face_detector.run(rgb, 1, adjust)`` gives them, found faster."""

    def __init__(self, dlib: Any, *, min_score: float, adjust_threshold: float = -0.5) -> None:
        from bot.faces.dlib_cache import fine_levels_detector, frontal_face_detector

        self._dlib = dlib
        self._detector = frontal_face_detector(dlib)
        # The same detector scanning only the 4 finest levels of the doubled image: small faces alone.
        self._fine = fine_levels_detector(dlib, COARSE_LEVELS_SKIPPED)
        self._down2 = dlib.pyramid_down(2)
        self._resize = _exact_resize(dlib)
        self.min_score = min_score
        self.adjust_threshold = adjust_threshold
        self.stats = {"coarse": 0, "full": 0}

    def _sizes(self, width: int, height: int) -> list[tuple[int, int]]:
        up = self._down2.rect_up(self._dlib.rectangle(0, 0, width - 1, height - 1))
        sizes = [(up.right() + 1, up.bottom() + 1)]
        for _ in range(COARSE_LEVELS_SKIPPED):
            w, h = sizes[-1]
            sizes.append(((5 * w) // 6, (5 * h) // 6))  # pyramid_down<N>: lround(((N-1)*n)/N)
        return sizes

    def doubled(self, rgb: np.ndarray) -> np.ndarray:
        """The photo doubled as ``run(rgb, 1)`` doubles it (``pyramid_up``)."""
        height, width = rgb.shape[:2]
        w, h = self._sizes(width, height)[0]
        return self._resize(rgb, [(h, w)])

    def level4(self, rgb: np.ndarray) -> np.ndarray:
        """The doubled photo shrunk four times, as dlib's scanner builds it, to the bit."""
        height, width = rgb.shape[:2]
        return self._resize(rgb, [(h, w) for w, h in self._sizes(width, height)])

    def _coarse(self, rgb: np.ndarray) -> list[tuple[Box, float]]:
        rects, scores, _ = self._detector.run(self.level4(rgb), 0, self.adjust_threshold)
        return [
            (map_to_upsample1((r.left(), r.top(), r.right(), r.bottom())), float(s))
            for r, s in zip(rects, scores, strict=True)
        ]

    def _fine_levels(self, rgb: np.ndarray) -> list[tuple[Box, float]]:
        """The levels upsample 1 scans before level 4, on the same doubled image, mapped back the way
        ``run(rgb, 1)`` maps them (``pyramid_down<2>``, rounded)."""
        if self._fine is None:
            return self.full(rgb)
        rects, scores, _ = self._fine.run(self.doubled(rgb), 0, self.adjust_threshold)
        return [
            (
                (
                    _round(r.left() / 2.0 - 1.25),
                    _round(r.top() / 2.0 - 0.75),
                    _round(r.right() / 2.0 - 1.25),
                    _round(r.bottom() / 2.0 - 0.75),
                ),
                float(s),
            )
            for r, s in zip(rects, scores, strict=True)
        ]

    def full(self, rgb: np.ndarray) -> list[tuple[Box, float]]:
        """``run(rgb, 1)`` itself (every level, small faces included)."""
        rects, scores, _ = self._detector.run(rgb, 1, self.adjust_threshold)
        return [
            ((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores, strict=True)
        ]

    def detect(self, rgb: np.ndarray) -> list[tuple[Box, float]]:
        """Boxes (left, top, right, bottom; inclusive, may leave the frame) and scores >= ``min_score``."""
        rgb = np.ascontiguousarray(rgb)
        kept = [(box, s) for box, s in self._coarse(rgb) if s >= self.min_score]
        if not kept:
            # Nothing on the coarse levels: scan the fine ones, as upsample 1 would. Every coarse
            # candidate scored below the threshold, so none of them could have suppressed a fine
            # detection in upsample 1's non-maximum suppression.
            self.stats["full"] += 1
            kept = [(box, s) for box, s in self._fine_levels(rgb) if s >= self.min_score]
        else:
            self.stats["coarse"] += 1
        return kept


# The image, resized to each (rows, cols) in turn; the last one is returned.
Resize = Callable[[np.ndarray, list[tuple[int, int]]], np.ndarray]


def _exact_resize(dlib: Any) -> Resize:
    """``dlib.resize_image`` in a chain, by the C module when it was built, else by dlib."""
    from bot.faces.native import native_module

    native = native_module()
    if native is None:  # pragma: no cover - the package build compiles it

        def by_dlib(image: np.ndarray, sizes: list[tuple[int, int]]) -> np.ndarray:
            for rows, cols in sizes:
                image = np.asarray(dlib.resize_image(image, rows, cols))
            return image

        return by_dlib

    def by_module(image: np.ndarray, sizes: list[tuple[int, int]]) -> np.ndarray:
        *through, (rows, cols) = sizes
        resized = np.empty((rows, cols, 3), dtype=np.uint8)
        native.resize(image, resized, through)
        return resized

    return by_module


__all__ = ["HogDetector", "map_to_upsample1"]
