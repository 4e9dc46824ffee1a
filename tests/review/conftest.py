"""Review test fixtures: the test photos, the dlib engine and an identity reference built from real photos."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.faces.engines import DlibEngine
from bot.review.scoring import ReferenceScorer


@pytest.fixture(scope="session")
def obama_scorer(dlib_engine: DlibEngine, faces_dir: Path) -> ReferenceScorer:
    """The identity of three Obama photos; obama_4 and obama_small are held out for "samples"."""
    return ReferenceScorer.from_photos(
        dlib_engine, [faces_dir / "obama" / f"obama_{i}.jpg" for i in (1, 2, 3)]
    )
