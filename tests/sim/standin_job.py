"""The job folder both sd-scripts stand-in test files start from (one definition, two prompt files)."""

from __future__ import annotations

import shutil
from pathlib import Path

from sim.testdata import TESTDATA_FACES


def make_job_folder(folder: Path, prompts: str) -> Path:
    """Two captioned photos of one person in ``img/``, a placeholder base model and ``prompts.txt``.

    The configs are each test file's own (they pin different sd-scripts behaviour)."""
    (folder / "img").mkdir()
    for index, photo in enumerate(sorted((TESTDATA_FACES / "obama").glob("*.jpg"))[:2]):
        shutil.copy(photo, folder / "img" / f"{index}.jpg")
        (folder / "img" / f"{index}.txt").write_text("ohwx man")
    (folder / "models").mkdir()
    (folder / "models" / "base.safetensors").write_bytes(b"x" * 64)
    (folder / "prompts.txt").write_text(prompts)
    return folder
