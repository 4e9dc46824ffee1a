"""A minimal writer and reader of the safetensors format, enough for LoRA files.

Layout (https://github.com/huggingface/safetensors): 8 bytes little-endian header length N, N bytes
of UTF-8 JSON, then the raw little-endian tensor bytes. The JSON maps each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end of the header) and
holds string-only metadata under ``__metadata__``. The header is padded with spaces to a multiple of
8 bytes, as the reference implementation does.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2")}


def _to_bytes(array: np.ndarray, dtype: str) -> bytes:
    if dtype == "BF16":
        # bfloat16 is the top half of a float32 (round-to-nearest-even is not needed for fake weights).
        as_u32 = np.ascontiguousarray(array, dtype="<f4").view("<u4")
        return (as_u32 >> 16).astype("<u2").tobytes()
    return np.ascontiguousarray(array, dtype=_DTYPES[dtype]).tobytes()


def encode(tensors: dict[str, np.ndarray], metadata: dict[str, str], dtype: str = "F32") -> bytes:
    """The bytes of a safetensors file holding ``tensors`` (all stored as ``dtype``) and ``metadata``."""
    if any(not isinstance(value, str) for value in metadata.values()):
        raise TypeError("safetensors metadata values must be strings")
    header: dict[str, Any] = {"__metadata__": metadata}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        blob = _to_bytes(tensors[name], dtype)
        header[name] = {
            "dtype": dtype,
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def write(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str], dtype: str = "F32") -> int:
    """Writes the file (directly to its final name, as sd-scripts does) and returns its size."""
    data = encode(tensors, metadata, dtype)
    path.write_bytes(data)
    return len(data)


def read_header(path: Path) -> dict[str, Any]:
    """The parsed JSON header (tensor table plus ``__metadata__``)."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


def read_metadata(path: Path) -> dict[str, str]:
    return read_header(path).get("__metadata__", {})
