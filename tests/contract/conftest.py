"""The real sd-scripts v0.10.1 environment for contract tests (``scripts/sdscripts-env``).

The environment is built by the test run itself when the cache does not have it (minutes, once; the
script holds a lock, so a parallel build elsewhere is waited for, not repeated). Its cache folder is
resolved here, at import: the autouse fixture of tests/conftest.py points HOME at a temporary folder
for every test, and the cache must be the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("sdscripts_probe.py")
ENV_SCRIPT = REPO_ROOT / "scripts" / "sdscripts-env"
_CACHE = os.environ.get("LORAOPS_SDSCRIPTS_CACHE") or str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "loraops" / "sd-scripts-v0.10.1"
)
_BUILD_TIMEOUT_S = 3600  # a cold build downloads torch & co.; a warm cache answers at once
_PROBE_TIMEOUT_S = 1200


@dataclass(frozen=True)
class SdScriptsEnv:
    root: Path

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    def probe(self, request: dict[str, Any], scratch: Path) -> Any:
        """Runs the probe with ``request`` in sd-scripts' venv and returns its JSON answer."""
        scratch.mkdir(parents=True, exist_ok=True)
        request_file, result_file = scratch / "request.json", scratch / "result.json"
        request_file.write_text(json.dumps(request))
        result_file.unlink(missing_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(scratch),
            # Nothing may reach the network: a download would hide a missing local file.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        proc = subprocess.run(
            [str(self.python), str(PROBE), str(self.src), str(request_file), str(result_file)],
            capture_output=True,
            text=True,
            env=env,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0 or not result_file.is_file():
            pytest.fail(f"the sd-scripts probe failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(result_file.read_text())


@pytest.fixture(scope="session")
def sdscripts_env() -> SdScriptsEnv:
    env = {**os.environ, "LORAOPS_SDSCRIPTS_CACHE": _CACHE}
    proc = subprocess.run(
        [str(ENV_SCRIPT)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=_BUILD_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/sdscripts-env failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    root = Path(proc.stdout.strip().splitlines()[-1])
    found = SdScriptsEnv(root)
    if not found.python.is_file() or not (found.src / "train_network.py").is_file():
        pytest.fail(f"scripts/sdscripts-env printed {root}, which has no venv/bin/python or src/")
    return found
