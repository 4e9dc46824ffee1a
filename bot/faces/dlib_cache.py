"""Start-up cache for the dlib engine: two artefacts derived from installed files, kept on disk.

Building dlib's frontal face detector decodes a compressed blob compiled into dlib (~0.35 s), and turning
the ResNet weights into an ONNX graph imports the ``onnx`` package (~0.6 s). Every face worker did both
at start-up, on the critical path of a short curation. Both results depend only on the installed dlib
and model file, so the first process writes them to a cache directory and later ones read them (~1 ms).
Writes are atomic (temporary file, then rename) and a cache that can't be written is simply skipped.

``LORAOPS_CACHE_DIR`` chooses the directory; otherwise ``$XDG_CACHE_HOME/loraops`` or ``~/.cache/loraops``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Bump when dlib_resnet's graph changes, so old cached graphs are not reused.
CONVERTER_VERSION = "2"


def cache_dir() -> Path:
    explicit = os.environ.get("LORAOPS_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loraops"


def _write_atomic(path: Path, write: Callable[[Path], object]) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        try:
            write(Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return True
    except OSError as exc:
        log.info("faces: cache %s not written: %s", path, exc)
        return False


def frontal_face_detector(dlib: Any) -> Any:
    """``dlib.get_frontal_face_detector()``, loaded from its saved form when the cache has it."""
    path = cache_dir() / f"frontal_face_detector-dlib{dlib.__version__}.svm"
    if path.is_file():
        try:
            return dlib.fhog_object_detector(str(path))
        except RuntimeError as exc:  # a damaged file: rebuild it below
            log.info("faces: ignoring cached detector %s: %s", path, exc)
    detector = dlib.get_frontal_face_detector()
    _write_atomic(path, lambda tmp: detector.save(str(tmp)))
    return detector


# In dlib's saved frontal_face_detector, the scanner's max_pyramid_levels (1000) follows its version,
# feature extractor, cell size, padding and 80×80 window: bytes 16-18, compact integer 02 e8 03.
_LEVELS_AT, _LEVELS_1000 = 16, bytes([0x02, 0xE8, 0x03])


def fine_levels_detector(dlib: Any, levels: int) -> Any | None:
    """The frontal face detector limited to the ``levels`` finest pyramid levels of what it is given
    (the same filters; only the scanner's level count differs), or None if the saved form is not the
    one this patch knows."""
    path = cache_dir() / f"frontal_face_detector-dlib{dlib.__version__}-levels{levels}.svm"
    if path.is_file():
        try:
            return dlib.fhog_object_detector(str(path))
        except RuntimeError as exc:
            log.info("faces: ignoring cached detector %s: %s", path, exc)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "full.svm"
        frontal_face_detector(dlib).save(str(saved))
        data = saved.read_bytes()
        if data[_LEVELS_AT : _LEVELS_AT + 3] != _LEVELS_1000 or not 0 < levels < 16:
            log.info("faces: unknown detector layout, small faces are searched with the full scan")
            return None
        patched = Path(tmp) / "fine.svm"
        patched.write_bytes(data[:_LEVELS_AT] + bytes([0x01, levels]) + data[_LEVELS_AT + 3 :])
        detector = dlib.fhog_object_detector(str(patched))
        _write_atomic(path, lambda target: target.write_bytes(patched.read_bytes()))
    return detector


def resnet_onnx(dat_path: Path, *, rebuild: bool = False) -> bytes:
    """The ONNX form of the dlib ResNet at ``dat_path`` (see :mod:`bot.faces.dlib_resnet`).
    ``rebuild``: ignore (and replace) a cached copy, e.g. one onnxruntime could not load."""
    data = Path(dat_path).read_bytes()
    key = hashlib.sha256(data).hexdigest()[:16]
    path = cache_dir() / f"dlib_resnet-{key}-v{CONVERTER_VERSION}.onnx"
    if path.is_file() and not rebuild:
        try:
            return path.read_bytes()
        except OSError as exc:
            log.info("faces: ignoring cached graph %s: %s", path, exc)
    from bot.faces.dlib_resnet import build_onnx, parse_dlib_resnet_bytes

    model = build_onnx(parse_dlib_resnet_bytes(data))
    _write_atomic(path, lambda tmp: tmp.write_bytes(model))
    return model


__all__ = ["cache_dir", "fine_levels_detector", "frontal_face_detector", "resnet_onnx"]
