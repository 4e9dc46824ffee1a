"""The real sd-scripts v0.10.1 beside the suite: its environment, a random-weight SD1.5, the CLIP tokenizer.

``scripts/sdscripts-env`` and ``scripts/sd15-random-model`` build both once and cache them under
``~/.cache/loraops`` (CI runs them before pytest, so their cost shows there on its own). The fixture
resolves the folders with the user's real HOME: tests/conftest.py points HOME at a temporary folder
for every test, and the cache must outlive the session.

``REPORT`` lines are printed at the end of the run, whatever pytest's ``-r`` options
(``pytest_terminal_summary``), so CI output carries the ``real sd-scripts run:`` line.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_HOME = os.environ.get("HOME", str(Path.home()))  # read at import, before any test moves HOME
REPORT: list[str] = []


@dataclass(frozen=True)
class RealSdScripts:
    root: Path  # the env cache folder: src/ (sd-scripts) and venv/
    model_dir: Path  # the random SD1.5 cache folder
    prepare_s: float  # what preparing took in this session (0 when both were cached)

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def accelerate(self) -> Path:
        return self.root / "venv" / "bin" / "accelerate"

    @property
    def model(self) -> Path:
        """The single-file checkpoint (what the worker fetches for the sd15 presets)."""
        return self.model_dir / "sd15-random.safetensors"

    @property
    def tokenizers(self) -> Path:
        """For ``--tokenizer_cache_dir``."""
        return self.model_dir / "tokenizers"

    def model_sha256(self) -> str:
        """sha256 of the checkpoint, kept beside it (hashing 2 GB once per build, not per run)."""
        stamp = self.model_dir / "sd15-random.safetensors.sha256"
        if stamp.is_file() and stamp.stat().st_mtime >= self.model.stat().st_mtime:
            return stamp.read_text().strip()
        digest = hashlib.sha256()
        with self.model.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
        stamp.write_text(digest.hexdigest())
        return digest.hexdigest()


def _prepare(script: str) -> str:
    env = {**os.environ, "HOME": REAL_HOME}
    done = subprocess.run(
        [str(REPO_ROOT / "scripts" / script)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/{script} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def real_sdscripts() -> RealSdScripts:
    started = time.monotonic()
    root = Path(_prepare("sdscripts-env"))
    model_dir = Path(_prepare("sd15-random-model"))
    return RealSdScripts(root, model_dir, time.monotonic() - started)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("real sd-scripts")
        for line in REPORT:
            terminalreporter.write_line(line)
