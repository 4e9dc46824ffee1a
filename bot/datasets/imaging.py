"""Decoding, checking and fingerprinting one image. Pure and blocking: run it in a thread.

The original bytes are what we keep (by sha256); the *oriented* picture (EXIF orientation applied) is
what we measure (width, height, perceptual hash) and what thumbnails, crops and exports use, because
kohya's loader ignores EXIF orientation and would otherwise train on sideways photos.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.datasets.sniff import SUPPORTED_IMAGE_KINDS, UNSUPPORTED_IMAGE_KINDS, describe_non_image, sniff
from bot.text import truncate

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


class ImageRejectedError(Exception):
    """The bytes are not an acceptable image; ``str()`` is the reason shown to the user."""


class NotAnImageError(ImageRejectedError):
    """The bytes are not an image at all (text, PDF, unknown)."""


@dataclass(frozen=True, slots=True)
class ImageFacts:
    sha256: str
    phash: str  # 16 hex digits (64-bit DCT hash of the oriented picture)
    width: int  # after EXIF orientation
    height: int
    format: str  # Pillow's name: JPEG, PNG, WEBP…
    byte_size: int
    exif_orientation: int | None
    frames: int = 1  # >1 for animated GIF/APNG/WebP: only the first frame is used downstream


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.1f} MP"


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> str:
    limit = f"the limit is {_megapixels(max_pixels)} (decompression-bomb guard)"
    if size is None:
        return f"too many pixels; {limit}"
    width, height = size
    return f"too many pixels: {width}×{height} is {_megapixels(width * height)}; {limit}"


def _header_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """Width and height from the header alone, bypassing Image.open's bomb check (used for messages)."""
    from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

    plugins: dict[str, Any] = {
        "jpeg": JpegImagePlugin.JpegImageFile,
        "png": PngImagePlugin.PngImageFile,
        "gif": GifImagePlugin.GifImageFile,
        "bmp": BmpImagePlugin.BmpImageFile,
        "tiff": TiffImagePlugin.TiffImageFile,
    }
    plugin = plugins.get(kind)
    if plugin is None:
        return None
    try:
        with plugin(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None


def open_checked(data: bytes, max_pixels: int) -> PILImage:
    """Open and fully decode ``data`` as an image, refusing bombs, truncation and non-images."""
    from PIL import Image, UnidentifiedImageError

    kind = sniff(data[:64])
    if kind == "zip":
        raise NotAnImageError("the content is a zip archive")
    if kind in UNSUPPORTED_IMAGE_KINDS:
        raise ImageRejectedError(f"{kind.upper()} photos are not supported yet: export them as JPEG or PNG")
    if kind not in SUPPORTED_IMAGE_KINDS:
        raise NotAnImageError(describe_non_image(data[:1024]))
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        # Pillow's own guard (twice its MAX_IMAGE_PIXELS) fired first; report it in our words.
        raise ImageRejectedError(_too_many_pixels(_header_size(data, kind), max_pixels)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRejectedError(f"corrupt {kind.upper()} file ({_short_error(exc)})") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageRejectedError(_too_many_pixels((width, height), max_pixels))
    if width < 1 or height < 1:
        raise ImageRejectedError("the image has no pixels")
    try:
        image.load()  # decodes everything: truncated or corrupt data fails here, not later
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        image.close()
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageRejectedError(f"{reason} {kind.upper()} file ({_short_error(exc)})") from None
    except Image.DecompressionBombError as exc:
        raise ImageRejectedError(f"too many pixels (decompression-bomb guard: {exc})") from None
    return image


def oriented(image: PILImage) -> PILImage:
    """The picture as a person sees it: EXIF orientation applied (a copy if it changed anything)."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(image) or image


def exif_orientation(image: PILImage) -> int | None:
    try:
        value = image.getexif().get(0x0112)
    except Exception:  # malformed EXIF must not reject a picture that decodes fine
        return None
    return int(value) if isinstance(value, int) else None


def analyse(data: bytes, max_pixels: int) -> ImageFacts:
    """Everything ingest records about one image. Raises ``ImageRejectedError`` with a reason."""
    import imagehash

    image = open_checked(data, max_pixels)
    try:
        orientation = exif_orientation(image)
        try:
            upright = oriented(image)
        except Exception as exc:  # a broken EXIF block: measure the pixels as stored
            _ = exc
            upright = image
        phash = str(imagehash.phash(upright))
        return ImageFacts(
            sha256=hashlib.sha256(data).hexdigest(),
            phash=phash,
            width=upright.width,
            height=upright.height,
            format=image.format or "",
            byte_size=len(data),
            exif_orientation=orientation,
            # Pillow counts frames from the headers (APNG's acTL, WebP's ANIM, GIF's blocks); everything
            # downstream (phash above, thumbnails, crops, training) decodes frame 0 only.
            frames=max(1, int(getattr(image, "n_frames", 1) or 1)),
        )
    finally:
        image.close()


def load_oriented_rgb(data: bytes, max_pixels: int = 200_000_000) -> PILImage:
    """Decode stored bytes for downstream work (crops, export): oriented, RGB."""
    image = open_checked(data, max_pixels)
    upright = oriented(image)
    return upright if upright.mode == "RGB" else upright.convert("RGB")


def thumbnail(data: bytes, size: int) -> PILImage:
    """An oriented RGB thumbnail fitting ``size``×``size``. JPEGs are decoded at reduced scale."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        image.draft("RGB", (size * 2, size * 2))  # DCT scaling: far less work for big photos
    image.load()
    upright = oriented(image)
    if upright.mode not in ("RGB",):
        if upright.mode in ("RGBA", "LA", "P", "PA"):
            upright = upright.convert("RGBA")
            background = Image.new("RGB", upright.size, (255, 255, 255))
            background.paste(upright, mask=upright.getchannel("A"))
            upright = background
        else:
            upright = upright.convert("RGB")
    upright.thumbnail((size, size), Image.Resampling.LANCZOS)
    return upright


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return truncate(text, 120)
