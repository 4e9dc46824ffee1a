"""Dataset intake: the snapshot zip streamed to disk, sha256-verified, unpacked safely into
``dataset/``, then checked against the job's dataset.toml (see ``worker.protocol``'s layout)."""

from __future__ import annotations

import hashlib
import shutil
import stat
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

from .protocol import WORK_DATASET_DIR

MAX_MEMBERS = 20_000
MAX_UNPACKED_BYTES = 20 * 1024**3
# What sd-scripts picks up from an image_dir (train_util.glob_images at v0.10.1): these exact suffixes
# (".Jpg" is not one), not recursive, and no dotfile (glob's "*" skips them).
_LOWER = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
IMAGE_SUFFIXES = frozenset(_LOWER + tuple(suffix.upper() for suffix in _LOWER))


class DatasetRejected(Exception):
    """The upload is not acceptable; the message goes back to the bot with a 400."""


class HashingWriter:
    """Appends chunks to a file and hashes them; blocking, call from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("wb")
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, block: bytes) -> None:
        self._handle.write(block)
        self._digest.update(block)
        self.size += len(block)

    def close(self) -> str:
        self._handle.close()
        return self._digest.hexdigest()


def unpack(zip_path: Path, target: Path) -> int:
    """Unpacks ``zip_path`` into ``target`` and returns the number of files (blocking).

    Refuses absolute names, ``..`` components, symlinks, too many members and too many bytes, so a
    hostile or broken zip can neither escape ``target`` nor fill the disk.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise DatasetRejected(f"not a zip file: {exc}") from exc
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise DatasetRejected(f"too many files in the zip ({len(members)} > {MAX_MEMBERS})")
        if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
            raise DatasetRejected("the zip unpacks to more than 20 GiB")
        root = target.resolve()
        for member in members:
            name = PurePosixPath(member.filename.replace("\\", "/"))
            if name.is_absolute() or ".." in name.parts or (name.parts and name.parts[0].endswith(":")):
                raise DatasetRejected(f"unsafe path in zip: {member.filename!r}")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise DatasetRejected(f"symlink in zip: {member.filename!r}")
            destination = (root / Path(*name.parts)).resolve() if name.parts else root
            if destination != root and root not in destination.parents:
                raise DatasetRejected(f"unsafe path in zip: {member.filename!r}")
        target.mkdir(parents=True, exist_ok=True)
        count = 0
        try:
            for member in members:
                if member.is_dir():
                    (target / member.filename).mkdir(parents=True, exist_ok=True)
                    continue
                destination = target / member.filename
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                count += 1
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DatasetRejected(f"corrupt zip: {exc}") from exc
    return count


def check_dataset(dataset_toml: str, work_dir: Path) -> int:
    """The number of images in dataset.toml's subsets, once unpacked (blocking).

    sd-scripts only warns about a missing ``image_dir`` and exits 0 without training when it finds no
    image, so a zip laid out differently from what dataset.toml says (e.g. ``dataset/dataset/full``)
    would cost a whole pod start for nothing: it is refused here, at upload, naming what is missing.
    """
    try:
        document = tomllib.loads(dataset_toml)
    except tomllib.TOMLDecodeError as exc:
        raise DatasetRejected(f"the job's dataset.toml is not valid TOML: {exc}") from None
    root = work_dir.resolve()
    problems: list[str] = []
    total = 0
    subsets = [
        subset
        for dataset in document.get("datasets", [])
        if isinstance(dataset, dict)
        for subset in dataset.get("subsets", [])
        if isinstance(subset, dict)
    ]
    for subset in subsets:
        for key in ("image_dir", "conditioning_data_dir"):
            value = subset.get(key)
            if not isinstance(value, str):
                continue
            folder = (root / value).resolve()
            if not folder.is_dir():
                problems.append(f"{key} {value!r} is not in the uploaded dataset")
            elif key == "image_dir":
                total += sum(
                    1
                    for item in folder.iterdir()
                    if item.suffix in IMAGE_SUFFIXES and not item.name.startswith(".") and item.is_file()
                )
    if problems:
        unpacked = root / WORK_DATASET_DIR
        present = sorted(f"{WORK_DATASET_DIR}/{item.name}" for item in unpacked.glob("*") if item.is_dir())
        raise DatasetRejected(
            "; ".join(problems)
            + f" (the zip unpacks into {WORK_DATASET_DIR}/; folders there: {', '.join(present) or 'none'})"
        )
    if subsets and total == 0:
        raise DatasetRejected("the uploaded dataset has no images in dataset.toml's image_dir folders")
    return total
