"""Face-centred square crops, for a "faces" subset of a dataset whose photos show the face small."""

from __future__ import annotations

import io
from dataclasses import dataclass

from bot.faces.analysis import FaceInfo, ImageSource, load_image

DEFAULT_MARGIN = 1.0  # added on each side, in face-box sizes: a 3× box shows head, hair and neck
DEFAULT_CROP_SIZE = 1024


@dataclass(frozen=True)
class FaceCrop:
    """A square crop around a face. ``upscaled`` means the source had fewer pixels than ``size``."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the source image
    size: int
    upscaled: bool
    jpeg: bytes


def crop_box(
    bbox: tuple[float, float, float, float], width: int, height: int, *, margin: float = DEFAULT_MARGIN
) -> tuple[int, int, int, int]:
    """The square around a face box: side = box side × (1 + 2·margin), shrunk to fit the frame, then
    shifted (never squashed) to stay inside it."""
    if margin < 0:
        raise ValueError("margin must be >= 0")
    x0, y0, x1, y1 = bbox
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = round(min(side, width, height))
    side = max(side, 1)
    left = round(cx - side / 2)
    top = round(cy - side / 2)
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return left, top, left + side, top + side


def make_face_crop(
    source: ImageSource,
    face: FaceInfo,
    *,
    margin: float = DEFAULT_MARGIN,
    size: int = DEFAULT_CROP_SIZE,
    quality: int = 95,
) -> FaceCrop:
    """Cut the square around ``face`` from ``source`` and resize it to ``size``×``size`` JPEG."""
    from PIL import Image

    image = load_image(source)
    box = crop_box(face.bbox, image.width, image.height, margin=margin)
    side = box[2] - box[0]
    region = image.crop(box)
    if side != size:
        region = region.resize((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    region.save(buffer, format="JPEG", quality=quality)
    return FaceCrop(box=box, size=size, upscaled=side < size, jpeg=buffer.getvalue())
