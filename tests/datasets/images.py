"""Test files built on the fly: pictures, broken pictures, hostile zips."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from PIL import Image

from sim.cloudinary import generated_image


def jpeg(seed: int, size: tuple[int, int] = (256, 256)) -> bytes:
    return generated_image(seed, size=size, fmt="JPEG")


def png(seed: int, size: tuple[int, int] = (256, 256)) -> bytes:
    return generated_image(seed, size=size, fmt="PNG")


def reencode(data: bytes, fmt: str, *, size: tuple[int, int] | None = None, quality: int = 85) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()


def with_exif_orientation(data: bytes, orientation: int) -> bytes:
    """The same pixels as stored, with an EXIF Orientation tag (6 = rotate 90° clockwise to view)."""
    image = Image.open(io.BytesIO(data))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG header claiming width×height (the pixel data would be 400 MP): a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    # One compressed row of zeros is enough for the header to parse; the decoder never gets that far.
    idat = zlib.compress(b"\x00" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def make_zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, payload in entries.items():
            info = zipfile.ZipInfo(name)  # ZipInfo keeps "../" names that writestr(str) would too
            info.compress_type = compression
            archive.writestr(info, payload)
    return buffer.getvalue()


def zip_bomb(size: int) -> bytes:
    """``size`` bytes of zeros in one entry: honest headers, tiny archive."""
    return make_zip({"photos/bomb.png": b"\x00" * size})


def lying_zip_bomb(real_size: int, claimed: int = 1000) -> bytes:
    """A zip whose headers claim ``claimed`` bytes for an entry that really unpacks to ``real_size``."""
    data = make_zip({"photos/innocent.jpg": b"\x00" * real_size})
    real = struct.pack("<I", real_size)
    assert data.count(real) == 2, "expected the size in the local and the central header"
    return data.replace(real, struct.pack("<I", claimed))
