"""dlib's HOG face detector at "upsample 1", minus the work that finds nothing.

``detector.run(image, 1)`` doubles the image (bilinear, 4× the pixels) and scans a pyramid that shrinks
by 5/6 per level. The four finest levels (scales 2, 1.67, 1.39, 1.16 of the photo) only find faces
under ~85 px and cost ~75 % of the scan; everything larger is found on levels 4 and up, which are the
doubled image shrunk four times (scale 0.96). So:

1. Build that level-4 image and scan it (and its own smaller levels) with the same detector at
   upsample 0. The detector sees the very windows it sees at upsample 1, so detection scores match; each
   box is mapped back through the exact level arithmetic dlib uses (``pyramid_down<6>``: p·6/5 + 0.3 per
   level, rounded once; then ``pyramid_down<2>``: p/2 − (1.25, 0.75)), so boxes match to the pixel.
2. The level-4 image is made either by dlib itself (``resize_image`` = ``pyramid_up``, then four
   ``pyramid_down(6)``: bit-identical to upsample 1, ~40 ms at 1024 px) or by the same bilinear
   resizes done with OpenCV in 16 bits, truncating as dlib does (~18 ms; 85 % of pixels identical,
   the rest one grey level off). Detection scores then differ by a few hundredths, and where two
   pyramid levels score a face almost equally (about 1 photo in 100 of the generated benchmark set, none
   of the shared photos) the box can land on the other level. So dlib's own chain is used again when a
   candidate scores near the threshold (no face upsample 1 finds is lost) and when several faces are
   found (which face is the subject, and whether the others count, depend on their relative sizes).
   ``exact=True`` always uses dlib's chain.
3. When nothing at all is found on the coarse levels, the full ``run(image, 1)`` runs: small faces are
   only searched in photos where no larger face was found. A face under ~85 px beside a larger one in a
   1024 px photo is not looked for; it cannot be the training subject (``small_face`` starts at 3 % of
   the frame, ~175 px) and is 8× smaller than the frame's side.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Scale of pyramid level 4 of the doubled image: the first level upsample 1 shares with nothing finer.
COARSE_LEVELS_SKIPPED = 4
# Side of the frontal detector's box in the coordinates of the level it was found at (72 for dlib's
# frontal_face_detector: its boxes are 72·(6/5)^level px in the scanned image, rounded).
_BOX_SIDE = 72
# Candidates scoring within this band around the threshold are re-scored with dlib's own chain.
RECHECK_BELOW = 0.15
RECHECK_ABOVE = 0.15


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
    for level in range(16):
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
        self._down6 = dlib.pyramid_down(6)
        self.min_score = min_score
        self.adjust_threshold = adjust_threshold
        self.stats = {"coarse": 0, "recheck": 0, "full": 0}

    def _sizes(self, width: int, height: int) -> list[tuple[int, int]]:
        up = self._down2.rect_up(self._dlib.rectangle(0, 0, width - 1, height - 1))
        sizes = [(up.right() + 1, up.bottom() + 1)]
        for _ in range(COARSE_LEVELS_SKIPPED):
            w, h = sizes[-1]
            sizes.append(((5 * w) // 6, (5 * h) // 6))  # pyramid_down<N>: lround(((N-1)*n)/N)
        return sizes

    def level4(self, rgb: np.ndarray, *, exact: bool) -> np.ndarray:
        """The doubled image shrunk four times, as dlib's scanner builds it (or a close OpenCV copy)."""
        height, width = rgb.shape[:2]
        sizes = self._sizes(width, height)
        if exact:
            image = self._dlib.resize_image(rgb, sizes[0][1], sizes[0][0])
            for _ in range(COARSE_LEVELS_SKIPPED):
                image = self._down6(image)
            return image
        import cv2

        # dlib truncates each interpolated value to an integer; OpenCV rounds. Working on value·256 in
        # 16 bits and clearing the low byte after each step truncates the way dlib does. One channel at
        # a time: the doubled image in 16 bits is 19 MB for three channels at 1024 px.
        channels = []
        for channel in range(rgb.shape[2]):
            image: np.ndarray = rgb[:, :, channel].astype(np.uint16) << 8
            for w, h in sizes:
                # dlib's bilinear resize maps output pixel x to input x·(in-1)/(out-1) ("corners aligned").
                in_h, in_w = image.shape[:2]
                matrix = np.array([[(in_w - 1) / max(w - 1, 1), 0, 0], [0, (in_h - 1) / max(h - 1, 1), 0]])
                image = np.asarray(
                    cv2.warpAffine(
                        image,
                        matrix,
                        (w, h),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REPLICATE,
                    )
                )
                image &= 0xFF00
            channels.append((image >> 8).astype(np.uint8))
        return np.dstack(channels)

    def _coarse(self, rgb: np.ndarray, *, exact: bool) -> list[tuple[Box, float]]:
        level = np.ascontiguousarray(self.level4(rgb, exact=exact))
        rects, scores, _ = self._detector.run(level, 0, self.adjust_threshold)
        return [
            (map_to_upsample1((r.left(), r.top(), r.right(), r.bottom())), float(s))
            for r, s in zip(rects, scores, strict=True)
        ]

    def _fine_levels(self, rgb: np.ndarray) -> list[tuple[Box, float]]:
        """The levels upsample 1 scans before level 4, on the same doubled image, mapped back the way
        ``run(rgb, 1)`` maps them (``pyramid_down<2>``, rounded)."""
        if self._fine is None:
            return self.full(rgb)
        height, width = rgb.shape[:2]
        doubled_w, doubled_h = self._sizes(width, height)[0]
        doubled = self._dlib.resize_image(rgb, doubled_h, doubled_w)
        rects, scores, _ = self._fine.run(doubled, 0, self.adjust_threshold)
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

    def detect(self, rgb: np.ndarray, *, exact: bool = False) -> list[tuple[Box, float]]:
        """Boxes (left, top, right, bottom; inclusive, may leave the frame) and scores >= ``min_score``."""
        rgb = np.ascontiguousarray(rgb)
        found = self._coarse(rgb, exact=exact)
        if not exact and (
            any(self.min_score - RECHECK_BELOW <= s < self.min_score + RECHECK_ABOVE for _, s in found)
            or sum(1 for _, s in found if s >= self.min_score) > 1
        ):
            # Near the threshold the approximation could add or drop a face; with several faces, which
            # one is the subject and whether the others count depend on their relative sizes, which a box
            # moved by one pyramid level (20 %) would change. Both get dlib's own chain.
            self.stats["recheck"] += 1
            found = self._coarse(rgb, exact=True)
        kept = [(box, s) for box, s in found if s >= self.min_score]
        if not kept:
            # Nothing on the coarse levels: scan the fine ones, as upsample 1 would. Every coarse
            # candidate scored below the threshold (exactly, or with margin), so none of them could have
            # suppressed a fine detection in upsample 1's non-maximum suppression.
            self.stats["full"] += 1
            kept = [(box, s) for box, s in self._fine_levels(rgb) if s >= self.min_score]
        else:
            self.stats["coarse"] += 1
        return kept


__all__ = ["HogDetector", "map_to_upsample1"]
