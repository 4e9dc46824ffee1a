"""What a file really is, from its first bytes. Names and Content-Type headers are never trusted."""

from __future__ import annotations

# Formats we decode and keep. kohya reads png/jpg/webp/bmp; others are converted at export.
SUPPORTED_IMAGE_KINDS = frozenset({"jpeg", "png", "webp", "gif", "bmp", "tiff"})
# Recognised as photos, but Pillow cannot decode them without plug-ins we do not ship.
UNSUPPORTED_IMAGE_KINDS = frozenset({"heic", "avif"})

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
    }
)


def sniff(head: bytes) -> str | None:
    """The kind of file from its leading bytes: an image kind, ``zip``, or None when unknown."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heim", b"heis"):
            return "heic"
        if brand in (b"avif", b"avis"):
            return "avif"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    return None


def has_image_extension(name: str) -> bool:
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def describe_non_image(head: bytes) -> str:
    """A few words on what a non-image looks like, for rejection reasons."""
    if not head:
        return "the file is empty"
    if head.lstrip()[:1] in (b"<",) and b"html" in head[:512].lower():
        return "the content is an HTML page"
    if head[:5] == b"%PDF-":
        return "the content is a PDF"
    if all(byte >= 0x20 or byte in (9, 10, 13) for byte in head[:512]):
        return "the content is text"
    return "the content is not a recognised image format"
