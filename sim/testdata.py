"""Where the shared test photos are: ``../shared/testdata/faces`` beside the checkout.

CI lays a copy of ``shared/`` beside the clone; developers have it beside the work tree. One place says
so, for the tests, the sandbox and the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
TESTDATA_FACES = SHARED_DIR / "testdata" / "faces"


def testdata_faces() -> Path:
    return TESTDATA_FACES
