"""Unpacking a zip of photos safely, in memory. Pure and blocking: run it in a thread.

Limits: number of entries, total unpacked size by the headers *and* by the bytes actually produced
(each entry is read against a budget, not against its declared size, so a zip whose headers lie about
sizes is caught), and a per-entry size. Entry names are only labels here (nothing is written to disk),
but names that would escape a folder (``../``, absolute paths, drive letters) are refused all the same,
because such an archive is hostile and because ``/dataset export`` writes files by name later.
"""

from __future__ import annotations

import copy
import io
import re
import zipfile
from dataclasses import dataclass, field

from bot.datasets.sniff import has_image_extension, sniff
from bot.text import mib

# Entries that are never photos and never worth a line in the report's "rejected" list.
_JUNK = re.compile(r"(^|/)(__MACOSX/|\._|\.DS_Store$|Thumbs\.db$|desktop\.ini$)", re.IGNORECASE)
# Known non-image extensions: skipped without being decompressed at all.
_NON_IMAGE_EXT = re.compile(
    r"\.(txt|caption|json|toml|yaml|yml|md|csv|xml|html?|pdf|docx?|mp4|mov|avi|mkv|webm|mp3|wav|psd|"
    r"safetensors|ckpt|pt|bin|exe|dll|so|py|sh|js)$",
    re.IGNORECASE,
)
_READ_CHUNK = 256 * 1024


class ZipRefusedError(Exception):
    """The whole archive is refused; ``str()`` is the reason."""


@dataclass(frozen=True, slots=True)
class ZipMember:
    name: str  # the path inside the archive
    data: bytes


@dataclass
class ZipContents:
    members: list[ZipMember] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def is_zip(data: bytes) -> bool:
    return sniff(data[:8]) == "zip"


def unsafe_name_reason(name: str) -> str | None:
    """Why an entry name is unsafe (path traversal and friends), or None."""
    if "\x00" in name:
        return "unsafe path (NUL byte in the name)"
    normalised = name.replace("\\", "/")
    if normalised.startswith("/"):
        return "unsafe path (absolute path)"
    if re.match(r"^[A-Za-z]:", normalised):
        return "unsafe path (drive letter)"
    if any(part == ".." for part in normalised.split("/")):
        return "unsafe path (path traversal with ..)"
    return None


def expand_zip(
    data: bytes,
    *,
    max_entries: int,
    max_total_bytes: int,
    max_entry_bytes: int,
) -> ZipContents:
    """The image candidates inside a zip, plus what was rejected or skipped and why.

    Raises ``ZipRefusedError`` for problems with the archive as a whole (not a zip, too many entries,
    too large unpacked, lying headers).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise ZipRefusedError(f"not a readable zip archive ({exc})") from None
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        if len(entries) > max_entries:
            raise ZipRefusedError(f"too many entries ({len(entries)}; the limit is {max_entries})")
        declared = sum(info.file_size for info in entries)
        if declared > max_total_bytes:
            raise ZipRefusedError(
                f"zip bomb guard: it would unpack to {mib(declared)} (the limit is {mib(max_total_bytes)})"
            )
        contents = ZipContents()
        produced = 0
        for info in entries:
            name = info.filename
            reason = unsafe_name_reason(name)
            if reason is not None:
                contents.rejected.append((name, reason))
                continue
            if _JUNK.search(name):
                contents.skipped.append((name, "system file"))
                continue
            if _NON_IMAGE_EXT.search(name):
                contents.skipped.append((name, "not an image"))
                continue
            if info.flag_bits & 0x1:
                contents.rejected.append(
                    (name, "encrypted entry (password-protected zips are not supported)")
                )
                continue
            if info.file_size > max_entry_bytes:
                contents.rejected.append(
                    (name, f"too large ({mib(info.file_size)}; the limit is {mib(max_entry_bytes)})")
                )
                continue
            budget = min(max_entry_bytes, max_total_bytes - produced)
            entry_data = _read_entry(archive, info, budget)
            produced += len(entry_data) if isinstance(entry_data, bytes) else 0
            if isinstance(entry_data, str):
                contents.rejected.append((name, entry_data))
                continue
            kind = sniff(entry_data[:64])
            if kind == "zip":
                contents.skipped.append((name, "a zip inside the zip (not unpacked; send it on its own)"))
            elif kind is None and not has_image_extension(name):
                contents.skipped.append((name, "not an image"))
            else:
                # Includes files named .jpg that are not images: ingest rejects those with a reason.
                contents.members.append(ZipMember(name, entry_data))
        return contents


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes | str:
    """The entry's real bytes, or a rejection reason. Never produces more than ``budget`` + 1 bytes.

    zipfile stops at the *declared* size; a probe copy of the header that declares ``budget + 1``
    lets us read what the stream really holds, so a header that understates the size is exposed.
    """
    probe = copy.copy(info)
    probe.file_size = budget + 1
    chunks: list[bytes] = []
    produced = 0
    failure: str | None = None
    try:
        with archive.open(probe) as handle:
            while chunk := handle.read(_READ_CHUNK):
                produced += len(chunk)
                if produced > budget:
                    break
                chunks.append(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        failure = str(exc)
    if produced > info.file_size:
        raise ZipRefusedError(
            f"zip bomb guard: {info.filename!r} unpacks to more than its header says "
            f"({info.file_size} bytes declared, over {mib(min(produced, budget))} real)"
        )
    if produced > budget:
        raise ZipRefusedError(f"zip bomb guard: it unpacks to more than the {mib(budget)} allowed")
    if failure is not None:
        if "crc" in failure.lower():
            return "corrupt entry (CRC check failed)"
        return f"unreadable entry ({failure[:100]})"
    data = b"".join(chunks)
    if len(data) != info.file_size:
        return f"corrupt entry ({len(data)} bytes instead of the {info.file_size} declared)"
    return data
