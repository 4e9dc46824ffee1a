"""The samples and checkpoints sd-scripts writes, listed with their step and sha256.

sd-scripts writes both straight to their final names (not atomically), so a file is listed only once
it is complete: a PNG once its IEND chunk is there, a safetensors file once its size equals what its
own header promises. Each file is hashed once (keyed by name, size and mtime); ``scan`` does blocking
I/O and hashing and is meant to run in a worker thread.

Names (reference §3.3): samples
``{output_name}_{step:06d}|e{epoch:06d}_{idx:02d}_{YYYYmmddHHMMSS}[_{seed}].png`` in ``output_dir/sample``;
checkpoints ``{name}-step{step:08d}``, ``{name}-{epoch:06d}`` and ``{name}`` (final),
with the ``save_model_as`` extension, in ``output_dir``.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .protocol import FileInfo

_SAMPLE_TAIL = re.compile(
    r"^(?:e(?P<epoch>\d{6})|(?P<step>\d{6}))_(?P<idx>\d{2})_(?P<stamp>\d{14})(?:_(?P<seed>\d+))?\.png$"
)
_CHECKPOINT_EXTS = (".safetensors", ".ckpt", ".pt")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parse_sample_name(name: str, output_name: str | None) -> tuple[int | None, int | None, int] | None:
    """(step, epoch, prompt index) of a sample file name, or None when it is not a sample of this run."""
    prefix = f"{output_name}_" if output_name else ""
    if not name.startswith(prefix):
        return None
    match = _SAMPLE_TAIL.match(name[len(prefix) :])
    if match is None:
        return None
    step = int(match["step"]) if match["step"] is not None else None
    epoch = int(match["epoch"]) if match["epoch"] is not None else None
    return step, epoch, int(match["idx"])


def safetensors_complete(path: Path) -> dict[str, str] | None:
    """The file's metadata when it is a complete safetensors file, else None."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if length > 100_000_000:
                return None
            raw = handle.read(length)
            if len(raw) < length:
                return None
        header = json.loads(raw)
    except (OSError, ValueError):
        return None
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if path.stat().st_size != 8 + length + end:
        return None
    metadata = header.get("__metadata__", {})
    return metadata if isinstance(metadata, dict) else {}


def png_complete(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            if handle.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            handle.seek(-12, 2)
            return handle.read(12)[4:8] == b"IEND"
    except OSError:
        return False


@dataclass
class ArtifactIndex:
    """What the run has produced so far; ``scan`` refreshes it."""

    output_dir: Path
    output_name: str | None
    extension: str = ".safetensors"
    samples: dict[str, FileInfo] = field(default_factory=dict)
    checkpoints: dict[str, FileInfo] = field(default_factory=dict)
    _hashes: dict[tuple[str, int, int], str] = field(default_factory=dict)
    _sizes: dict[str, int] = field(default_factory=dict)  # last seen size, for non-safetensors checkpoints
    _epoch_steps: dict[str, int] = field(default_factory=dict)

    @property
    def final_name(self) -> str:
        return f"{self.output_name or 'last'}{self.extension}"

    def _sha(self, path: Path) -> str:
        stat = path.stat()
        key = (path.name, stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]

    def scan(self, current_step: int, *, finished: bool = False) -> None:
        """Lists complete files (blocking; run in a thread). ``finished``: the trainer has exited."""
        samples: dict[str, FileInfo] = {}
        sample_dir = self.output_dir / "sample"
        if sample_dir.is_dir():
            for path in sorted(sample_dir.glob("*.png")):
                parsed = parse_sample_name(path.name, self.output_name)
                if parsed is None or not png_complete(path):
                    continue
                step, epoch, index = parsed
                if step is None:
                    # Epoch samples carry no step: they are drawn at the epoch's last step, i.e. now
                    # when first seen (e000000 is sample_at_first, step 0).
                    step = 0 if epoch == 0 else self._epoch_steps.setdefault(path.name, current_step)
                samples[path.name] = FileInfo(path.name, step, path.stat().st_size, self._sha(path), index)
        checkpoints: dict[str, FileInfo] = {}
        if self.output_dir.is_dir():
            for path in sorted(self.output_dir.iterdir()):
                if not path.is_file() or path.suffix not in _CHECKPOINT_EXTS:
                    continue
                step = self._checkpoint_step(path, current_step, finished)
                if step is None:
                    continue
                checkpoints[path.name] = FileInfo(path.name, step, path.stat().st_size, self._sha(path))
        self.samples, self.checkpoints = samples, checkpoints

    def _checkpoint_step(self, path: Path, current_step: int, finished: bool) -> int | None:
        if path.suffix == ".safetensors":
            metadata = safetensors_complete(path)
            if metadata is None:
                return None
            if metadata.get("ss_steps", "").isdigit():
                return int(metadata["ss_steps"])
        else:
            size = path.stat().st_size
            stable = self._sizes.get(path.name) == size
            self._sizes[path.name] = size
            if not (stable or finished):
                return None
        match = re.search(r"-step(\d{8})\.", path.name)
        return int(match.group(1)) if match else current_step

    def find(self, kind: str, name: str) -> tuple[Path, FileInfo] | None:
        """The path and info of a listed file (only listed files are ever served)."""
        if kind == "samples" and name in self.samples:
            return self.output_dir / "sample" / name, self.samples[name]
        if kind == "checkpoints" and name in self.checkpoints:
            return self.output_dir / name, self.checkpoints[name]
        return None
