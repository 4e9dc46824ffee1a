from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from storage.blobs import BlobNotFoundError, BlobStore


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert store.path_for(digest) == tmp_path / digest[:2] / digest[2:]
    assert store.put(b"hello") == digest
    assert store.get(digest) == b"hello"
    assert store.verify(digest)
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.rglob("*"))


def test_put_file_streams(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * (3 * 1024 * 1024 + 5))
    store = BlobStore(tmp_path / "blobs")
    digest = store.put_file(source)
    assert store.get(digest) == source.read_bytes()


def test_missing_and_corrupt_blobs(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(BlobNotFoundError):
        store.get("0" * 64)
    with pytest.raises(ValueError):
        store.path_for("../../etc/passwd")
    digest = store.put(b"data")
    store.path_for(digest).write_bytes(b"tampered")
    assert not store.verify(digest)


def test_failed_write_leaves_no_partial_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)

    def chunks():
        yield b"partial"
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError):
        store._write("a" * 64, chunks())
    assert not store.exists("a" * 64)
    assert list(tmp_path.rglob(".tmp-*")) == []
