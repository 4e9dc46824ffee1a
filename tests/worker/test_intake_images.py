"""The worker counts the images of an upload the way sd-scripts v0.10.1 will find them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.sdscripts import config as standin
from worker import intake

DATASET_TOML = '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "dataset/full"\n'


def test_only_files_sd_scripts_trains_on_count(tmp_path: Path) -> None:
    folder = tmp_path / "dataset" / "full"
    folder.mkdir(parents=True)
    for name in ("a.png", "b.JPG", "c.Jpg", ".d.png", "._e.jpg", "f.gif", "g.txt"):
        (folder / name).write_bytes(b"x")
    (folder / "h.png").mkdir()
    # The same rule as the stand-in's (pinned to the real IMAGE_EXTENSIONS by the contract test).
    assert frozenset(standin.IMAGE_EXTENSIONS) == intake.IMAGE_SUFFIXES
    assert intake.check_dataset(DATASET_TOML, tmp_path) == 2


def test_an_upload_of_only_skipped_names_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "dataset" / "full"
    folder.mkdir(parents=True)
    for name in ("x.Jpg", ".y.png"):
        (folder / name).write_bytes(b"x")
    with pytest.raises(intake.DatasetRejected, match="no images"):
        intake.check_dataset(DATASET_TOML, tmp_path)
