"""Decoding: OpenCV's faster decoder is used only where it gives Pillow's pixels, byte for byte."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from bot.faces import analysis
from bot.faces.analysis import load_pixels

from .conftest import FACES


def _pillow(data: bytes) -> np.ndarray:
    """What loraops decoded before: Pillow, EXIF rotation applied, RGB."""
    with Image.open(io.BytesIO(data)) as opened:
        return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))


def _photo() -> Image.Image:
    with Image.open(FACES / "obama" / "obama_1.jpg") as opened:
        return opened.convert("RGB").reduce(2)


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _rotated_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    return exif


def _sixteen_bit_png() -> bytes:
    import cv2

    rgb16 = np.asarray(_photo()).astype(np.uint16) * 257 + 3
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


# name -> (encoder, whether OpenCV may decode it)
VARIANTS: dict[str, tuple[Callable[[], bytes], bool]] = {
    "jpeg 4:2:0": (lambda: _save(_photo(), "JPEG", quality=85), True),
    "jpeg 4:4:4": (lambda: _save(_photo(), "JPEG", quality=95, subsampling=0), True),
    "jpeg 4:2:2": (lambda: _save(_photo(), "JPEG", quality=75, subsampling=1), True),
    "jpeg progressive": (lambda: _save(_photo(), "JPEG", quality=80, progressive=True), True),
    "jpeg grey": (lambda: _save(_photo().convert("L"), "JPEG", quality=90), True),
    "jpeg cmyk": (lambda: _save(_photo().convert("CMYK"), "JPEG", quality=90), False),
    "jpeg rotated by exif": (lambda: _save(_photo(), "JPEG", exif=_rotated_exif()), False),
    "png rgb": (lambda: _save(_photo(), "PNG"), True),
    "png rgba": (lambda: _save(_photo().convert("RGBA"), "PNG"), True),
    "png grey": (lambda: _save(_photo().convert("L"), "PNG"), True),
    "png palette": (lambda: _save(_photo().convert("P"), "PNG"), False),
    "png 16-bit": (_sixteen_bit_png, False),
    "png rotated by exif": (lambda: _save(_photo(), "PNG", exif=_rotated_exif()), False),
    "webp": (lambda: _save(_photo(), "WEBP", quality=80), False),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_pixels_are_pillows_whichever_decoder_runs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    encode, opencv_expected = VARIANTS[name]
    data = encode()
    decided: list[bool] = []
    original = analysis._opencv_decodes_it_alike

    def spy(opened: Image.Image, raw: bytes) -> bool:
        decided.append(original(opened, raw))
        return decided[-1]

    monkeypatch.setattr(analysis, "_opencv_decodes_it_alike", spy)
    pixels = load_pixels(data)
    assert decided == [opencv_expected]
    expected = _pillow(data)
    assert pixels.dtype == np.uint8 and pixels.shape == expected.shape
    assert np.array_equal(pixels, expected), f"{name}: {np.count_nonzero(pixels != expected)} values differ"


def test_the_shared_photos_decode_as_pillow_decodes_them() -> None:
    photos = sorted(FACES.rglob("*.jpg"))
    assert len(photos) >= 19
    for path in photos:
        assert np.array_equal(load_pixels(path), _pillow(path.read_bytes())), path.name


def test_a_rotated_photo_is_upright(tmp_path: Path) -> None:
    data = _save(_photo(), "JPEG", exif=_rotated_exif())
    width, height = _photo().size
    assert load_pixels(data).shape == (width, height, 3)


def test_pixel_limit_is_checked_before_decoding() -> None:
    with pytest.raises(ValueError, match="too large"):
        load_pixels(_save(_photo(), "PNG"), max_pixels=1000)
