"""A content-addressed blob store: ``<root>/ab/cdef…`` keyed by sha256, written atomically.

Writes go to a temporary file in the same directory and are moved into place with ``os.replace``, so
a reader never sees half a blob and a crash leaves at worst a stray temporary file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1024 * 1024


class BlobNotFoundError(KeyError):
    pass


class BlobStore:
    """Local content-addressed storage. Blocking I/O: call from a thread for large blobs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:]

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its sha256. Storing the same bytes twice is a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        self._write(digest, [data])
        return digest

    def put_file(self, source: Path) -> str:
        """Store a file's bytes (streamed) and return their sha256."""
        hasher = hashlib.sha256()
        with open(source, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                hasher.update(chunk)
        digest = hasher.hexdigest()
        if not self.path_for(digest).exists():
            with open(source, "rb") as handle:
                self._write(digest, iter(lambda: handle.read(_CHUNK), b""))
        return digest

    def _write(self, digest: str, chunks: Iterable[bytes]) -> None:
        target = self.path_for(digest)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def get(self, sha256: str) -> bytes:
        try:
            return self.path_for(sha256).read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(sha256) from None

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

    def verify(self, sha256: str) -> bool:
        """True when the stored bytes still hash to their name."""
        hasher = hashlib.sha256()
        try:
            with open(self.path_for(sha256), "rb") as handle:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    hasher.update(chunk)
        except FileNotFoundError:
            return False
        return hasher.hexdigest() == sha256
