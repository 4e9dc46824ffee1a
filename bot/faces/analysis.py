"""Per-image face analysis: what an engine sees in one picture, plus a few quality measures.

Everything measured is in the coordinates of the original (EXIF-rotated) image, whatever size the
engine was run at, so boxes can be used for crops and the report card directly.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bot.faces.engines import DetectedFace, FaceEngine
from bot.faces.pictures import PictureFeatures, picture_features

if TYPE_CHECKING:
    from PIL import Image as PILImage

ImageSource = bytes | str | Path

# Engines run on a copy whose longest side is at most this: HOG upsampled ×1 then finds faces down to
# ~40 px, and SCRFD resizes to 640 anyway. Costs stay bounded on 24-megapixel phone photos.
WORK_MAX_SIDE = 1024
# Sharpness is measured on the face region scaled down to at most this many pixels a side, so a big
# face and a small face of the same crispness score alike (variance of the Laplacian grows with
# resolution otherwise). Small faces are never upscaled: their lack of detail is real.
SHARPNESS_SIDE = 128
# A face box that reaches this far (as a share of its own size) beyond the frame is cut by the frame.
CUT_TOLERANCE = 0.05
# Rough depth of the nose in front of the eye line, in inter-ocular distances, for the yaw estimate.
_NOSE_DEPTH = 0.5
DEFAULT_MAX_PIXELS = 80_000_000


@dataclass
class FaceInfo:
    """One detected face with its measures (original image pixels)."""

    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1, may extend beyond the frame
    det_score: float
    embedding: np.ndarray  # float32, L2-normalised
    landmarks: list[tuple[float, float]]
    face_ratio: float  # area of the box inside the frame / frame area
    sharpness: float  # variance of the Laplacian of the face region at <= SHARPNESS_SIDE px
    brightness: float  # mean luma of the face region, 0..1
    yaw: float  # degrees, rough, from eyes and nose; sign: + when the nose points to the image's right
    cut: bool  # the box runs off the frame

    @property
    def area(self) -> float:
        return max(0.0, self.bbox[2] - self.bbox[0]) * max(0.0, self.bbox[3] - self.bbox[1])

    @property
    def side(self) -> float:
        return math.sqrt(self.area)


@dataclass
class ImageAnalysis:
    """What one engine saw in one image. ``faces`` are largest first."""

    source: str  # path or caller's label
    engine: str
    width: int
    height: int
    faces: list[FaceInfo] = field(default_factory=list)
    phash: str | None = None  # imagehash.phash hex, for near-duplicate detection
    # Keypoints of the picture for the same-picture check of near-duplicates (None: not computed).
    picture: PictureFeatures | None = None
    error: str | None = None  # set when the image couldn't be read

    @property
    def face_count(self) -> int:
        return len(self.faces)


# EXIF tag of the orientation (1: upright, as stored).
_EXIF_ORIENTATION = 0x0112


def _opencv_decodes_it_alike(opened: PILImage.Image, data: bytes) -> bool:
    """Whether OpenCV's decoder gives exactly the pixels Pillow would for this file.

    Both link libjpeg-turbo and zlib with the same defaults (slow integer DCT, fancy upsampling), so
    a baseline or progressive JPEG in YCbCr or grey and an 8-bit RGB(A) or grey PNG decode to the
    same bytes (``tests/faces/test_decode.py``), in ~35 % less time: a 1024 px PNG sample 18 ms
    instead of 27. Anything else (CMYK, 16-bit, palettes, a rotation to apply) stays with Pillow."""
    if opened.mode not in ("RGB", "RGBA", "L"):
        return False
    if opened.format == "PNG":
        # IHDR's bit depth (Pillow shows a 16-bit RGB PNG as "RGB"); and Pillow decodes a whole PNG to
        # look for a late eXIf chunk: read the chunk list instead.
        return data[24:25] == b"\x08" and not _png_has_exif(data)
    return opened.format == "JPEG" and opened.getexif().get(_EXIF_ORIENTATION, 1) == 1


def _png_has_exif(data: bytes) -> bool:
    position = 8  # past the signature
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind == b"eXIf":
            return True
        if kind == b"IEND":
            return False
        position += 12 + length
    return False


def load_pixels(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode bytes or a file into upright RGB pixels (height × width × 3, uint8); refuse absurd
    pixel counts before decoding."""
    from PIL import Image, ImageOps

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        if opened.width * opened.height > max_pixels:
            raise ValueError(f"image too large: {opened.width}×{opened.height} pixels")
        if _opencv_decodes_it_alike(opened, data):
            import cv2

            flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
            pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
            if pixels is not None and pixels.shape[:2] == (opened.height, opened.width):
                return pixels
        return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> PILImage.Image:
    """Decode bytes or a file into an upright RGB image; refuse absurd pixel counts."""
    from PIL import Image

    return Image.fromarray(load_pixels(source, max_pixels=max_pixels))


def _face_measures(grey: np.ndarray, bbox: tuple[float, float, float, float]) -> tuple[float, float]:
    import cv2

    h, w = grey.shape
    x0, y0 = max(0, math.floor(bbox[0])), max(0, math.floor(bbox[1]))
    x1, y1 = min(w, math.ceil(bbox[2])), min(h, math.ceil(bbox[3]))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0, 0.0
    region = grey[y0:y1, x0:x1]
    longest = max(region.shape)
    if longest > SHARPNESS_SIDE:
        scale = SHARPNESS_SIDE / longest
        size = (max(2, round(region.shape[1] * scale)), max(2, round(region.shape[0] * scale)))
        region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(region.astype(np.float32), cv2.CV_32F).var())
    return sharpness, float(region.mean()) / 255.0


def estimate_yaw(
    eyes_and_nose: tuple[tuple[float, float], tuple[float, float], tuple[float, float]],
) -> float:
    """Rough head yaw in degrees from the two eye centres and the nose.

    Model: eyes at ±d/2, nose ``_NOSE_DEPTH·d`` in front; turning by θ shifts the nose by
    depth·sinθ while the eyes' distance shrinks by cosθ, so offset/d_projected = depth·tanθ.
    """
    (lx, ly), (rx, ry), (nx, _ny) = eyes_and_nose
    eye_distance = math.hypot(rx - lx, ry - ly)
    if eye_distance < 1e-6:
        return 0.0
    offset = (nx - (lx + rx) / 2) / eye_distance
    return math.degrees(math.atan(offset / _NOSE_DEPTH))


def _is_cut(bbox: tuple[float, float, float, float], width: int, height: int) -> bool:
    bw, bh = bbox[2] - bbox[0], bbox[3] - bbox[1]
    return (
        bbox[0] < -CUT_TOLERANCE * bw
        or bbox[1] < -CUT_TOLERANCE * bh
        or bbox[2] > width + CUT_TOLERANCE * bw
        or bbox[3] > height + CUT_TOLERANCE * bh
    )


def _to_original(face: DetectedFace, scale: float) -> DetectedFace:
    if scale == 1.0:
        return face
    inv = 1.0 / scale
    x0, y0, x1, y1 = face.bbox
    return DetectedFace(
        bbox=(x0 * inv, y0 * inv, x1 * inv, y1 * inv),
        score=face.score,
        landmarks=[(x * inv, y * inv) for x, y in face.landmarks],
        embedding=face.embedding,
        eyes_and_nose=(
            (face.eyes_and_nose[0][0] * inv, face.eyes_and_nose[0][1] * inv),
            (face.eyes_and_nose[1][0] * inv, face.eyes_and_nose[1][1] * inv),
            (face.eyes_and_nose[2][0] * inv, face.eyes_and_nose[2][1] * inv),
        ),
    )


_PHASH_SIZE, _PHASH_SCALE = 8, 4
_PHASH_DCT: np.ndarray | None = None


def phash_hex(grey: PILImage.Image) -> str:
    """``imagehash.phash`` of a greyscale image, as its hex string, without scipy: the same 32 px
    LANCZOS thumbnail, the low 8×8 of its unnormalised 2-D DCT-II (what ``scipy.fftpack.dct`` computes,
    here as a matrix product), bits above their median, row-major."""
    global _PHASH_DCT
    from PIL import Image

    side = _PHASH_SIZE * _PHASH_SCALE
    if _PHASH_DCT is None:
        k = np.arange(_PHASH_SIZE)[:, None]
        n = np.arange(side)[None, :]
        _PHASH_DCT = 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * side))
    pixels = np.asarray(grey.resize((side, side), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _PHASH_DCT @ pixels @ _PHASH_DCT.T
    bits = (low > np.median(low)).reshape(-1)
    return format(int("".join("1" if b else "0" for b in bits), 2), f"0>{_PHASH_SIZE * _PHASH_SIZE // 4}x")


def analyse_image(
    engine: FaceEngine,
    source: ImageSource,
    *,
    label: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    scoring: bool = False,
) -> ImageAnalysis:
    """Run ``engine`` on one image and measure every face found. Never raises for a bad image:
    the result's ``error`` says what went wrong.

    ``scoring``: the image is a sample to score against a reference: the picture hash and keypoints,
    which only deduplication needs, are skipped."""
    name = label if label is not None else (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        pixels = load_pixels(source, max_pixels=max_pixels)
    except Exception as exc:  # any decoder error: report it on the image, keep the batch going
        return ImageAnalysis(
            source=name, engine=engine.engine_id, width=0, height=0, error=f"unreadable: {exc}"
        )
    from PIL import Image

    image = Image.fromarray(pixels)
    width, height = image.size
    scale = min(1.0, WORK_MAX_SIDE / max(width, height))
    work = (
        pixels
        if scale == 1.0
        else np.asarray(
            image.resize(
                (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS
            )
        )
    )
    detected = [_to_original(face, scale) for face in engine.detect(work)]
    grey_image = image.convert("L")
    grey = np.asarray(grey_image)
    faces: list[FaceInfo] = []
    for face in detected:
        x0, y0, x1, y1 = face.bbox
        inside = max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))
        sharpness, brightness = _face_measures(grey, face.bbox)
        faces.append(
            FaceInfo(
                bbox=face.bbox,
                det_score=face.score,
                embedding=face.embedding,
                landmarks=face.landmarks,
                face_ratio=inside / float(width * height),
                sharpness=sharpness,
                brightness=brightness,
                yaw=estimate_yaw(face.eyes_and_nose),
                cut=_is_cut(face.bbox, width, height),
            )
        )
    return ImageAnalysis(
        source=name,
        engine=engine.engine_id,
        width=width,
        height=height,
        faces=faces,
        phash=None if scoring else phash_hex(grey_image),
        # Computed here, from the pixels already decoded, in parallel workers: the report would
        # otherwise decode the photos a second time, alone in one process, after all the analyses.
        picture=None if scoring else picture_features(grey_image),
    )
