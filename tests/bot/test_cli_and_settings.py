"""Start-up problems are one clear line each, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]


def _loraops(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "DATABASE_", "RUNPOD_"))}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_run_without_token_or_database_says_so_in_one_line_each(tmp_path: Path) -> None:
    result = _loraops(
        ["run"], tmp_path, DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:1/none", PYTHONPATH=str(REPO)
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("loraops: DISCORD_TOKEN: not set")
    assert lines[1].startswith("loraops: DATABASE_URL: cannot use the database")
    assert "Traceback" not in result.stderr


def test_run_with_bad_settings_lists_each(tmp_path: Path) -> None:
    result = _loraops(
        ["run"], tmp_path, DATABASE_URL="mysql://x", APPROVALS_REQUIRED="0", PYTHONPATH=str(REPO)
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("loraops: DATABASE_URL:") for line in lines)
    assert any(line.startswith("loraops: APPROVALS_REQUIRED:") for line in lines)


def test_migrate_creates_the_default_sqlite_database(tmp_path: Path) -> None:
    result = _loraops(["migrate"], tmp_path, PYTHONPATH=str(REPO))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "loraops.db").exists()


def test_secrets_are_hidden_and_lists_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "very-secret-token-value")
    monkeypatch.setenv("DISCORD_GUILD_IDS", "1, 2,3")
    settings = load_settings(_env_file=None)
    assert settings.discord_guild_ids == [1, 2, 3]
    assert "very-secret-token-value" not in repr(settings)
    monkeypatch.setenv("DEFAULT_JOB_BUDGET_USD", "-1")
    with pytest.raises(SettingsError) as info:
        load_settings(_env_file=None)
    assert info.value.problems == [info.value.problems[0]]
    assert info.value.problems[0].startswith("DEFAULT_JOB_BUDGET_USD:")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CLOUDINARY_URL": "notaurl"}, "loraops: CLOUDINARY_URL must look like cloudinary://"),
        (
            {"FACE_ENGINE": "insightface", "FACE_MODELS_DIR": "/nonexistent"},
            "loraops: FACE_ENGINE: no insightface",
        ),
    ],
)
def test_unusable_service_settings_stop_start_up_in_one_line(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    result = _loraops(["run"], tmp_path, DISCORD_TOKEN="not-a-real-token", PYTHONPATH=str(REPO), **env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(expected)
    assert "Traceback" not in result.stderr
