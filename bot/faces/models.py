"""Explicit, on-request download of the insightface ``buffalo_l`` model pack.

Nothing else in loraops downloads models: engines only load what is already on disk.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from bot.errors import ServiceUnavailableError, UserError

BUFFALO_L_URL = "https://github.com/deepinsight/insightface/releases/download/model-zoo/buffalo_l.zip"
LICENCE_NOTICE = (
    "The insightface buffalo_l models (SCRFD detector, ArcFace w600k_r50 recogniser) are licensed for "
    "NON-COMMERCIAL RESEARCH USE ONLY by their authors (insightface.ai). Downloading them is your "
    "decision and your responsibility; for commercial use obtain a licence or use the dlib engine."
)
_CHUNK = 1 << 20


def fetch_buffalo_l(
    target_dir: Path,
    *,
    url: str = BUFFALO_L_URL,
    timeout: float = 30.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download and unpack buffalo_l into ``target_dir/buffalo_l``; returns that directory.

    Raises :class:`ServiceUnavailableError` with a plain message when the server can't be reached
    (offline machine) and :class:`UserError` when the archive is not a model pack. The pack appears
    atomically: a half-finished download never looks like an installed model.
    """
    target_dir = Path(target_dir).expanduser()
    final = target_dir / "buffalo_l"
    if final.is_dir() and any(final.glob("*.onnx")):
        return final
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir, prefix=".buffalo_l-") as tmp:
        archive = Path(tmp) / "buffalo_l.zip"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, archive.open("wb") as out:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                received = 0
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    if progress:
                        progress(received, total)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnavailableError(
                f"could not download buffalo_l from {url}: {reason}. This machine may be offline: download "
                f"buffalo_l.zip elsewhere and unzip its *.onnx files into {final}"
            ) from exc
        try:
            with zipfile.ZipFile(archive) as bundle:
                members = [
                    m for m in bundle.namelist() if m.endswith(".onnx") and not m.startswith(("/", ".."))
                ]
                if not members:
                    raise UserError(f"{url} did not contain any .onnx model")
                staging = Path(tmp) / "buffalo_l"
                staging.mkdir()
                for member in members:
                    # Flatten: some archives nest the files in a buffalo_l/ folder.
                    with bundle.open(member) as src, (staging / Path(member).name).open("wb") as dst:
                        shutil.copyfileobj(src, dst)
        except zipfile.BadZipFile as exc:
            raise UserError(f"{url} did not return a zip archive") from exc
        staging.rename(final)
    return final
