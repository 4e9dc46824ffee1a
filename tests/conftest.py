"""Fixtures shared by every test area: paths, settings, databases."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.faces.engines import DlibEngine
from sim.testdata import TESTDATA_FACES
from storage.db import make_engine, make_sessionmaker
from storage.migrate import upgrade_to_head

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("LORAOPS_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The shared real photos (one folder per person), beside the checkout."""
    assert TESTDATA_FACES.is_dir(), f"test photos missing: {TESTDATA_FACES} (shared/ sits beside it)"
    return TESTDATA_FACES


@pytest.fixture(scope="session")
def dlib_engine() -> DlibEngine:
    return DlibEngine()


@pytest.fixture
def root_logging() -> Iterator[None]:
    """For tests that call ``setup_logging`` (it replaces the root handlers and levels): pytest's come
    back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # The runpod SDK reads ~/.runpod/config.toml at import; a developer's real key must never be used.
    monkeypatch.setenv("HOME", str(tmp_path_factory.getbasetemp() / "home"))


# LORAOPS_TEST_DB=postgresql runs every test that takes `database_url` (and so `settings`, `sessions`, the
# training fixtures and the end-to-end harness) on a fresh PostgreSQL database of its own; CI does so for
# the domain tests whose row locks and savepoints SQLite cannot show.
TEST_DB = os.environ.get("LORAOPS_TEST_DB", "sqlite")


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """The database of one test: SQLite in its temporary folder, or a fresh PostgreSQL database."""
    if TEST_DB == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'loraops.db'}"
        return
    if TEST_DB != "postgresql":
        pytest.fail(f"LORAOPS_TEST_DB must be sqlite or postgresql, not {TEST_DB!r}")
    name = f"loraops_t_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    yield f"{base}/{name}"
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_admin(sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        dsn = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(run())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        _postgres_unavailable(f"{type(exc).__name__}: {exc}")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Embedded defaults in a temporary data directory; no secrets."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        data_dir=tmp_path / "data",
    )


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A migrated SQLite database for one test."""
    upgrade_to_head(settings.database_url)
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


def _postgres_unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true" or TEST_DB == "postgresql":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not reachable here: {reason}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    name = f"loraops_test_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    yield f"{base}/{name}"
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- Discord's OpenAPI description referees every simulated request and response -------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> object:
    """Fail the test whose run made the Discord simulator see or send a body the spec refuses."""
    from sim.discord import spec

    result = yield
    _fail_on_violations(spec.VIOLATIONS, "during the test (or its set-up)")
    return result


@pytest.fixture(autouse=True)
def _discord_spec_violations() -> Iterator[None]:
    """Also catch mismatches from fixtures' set-up and tear-down (bot start-up and shutdown)."""
    from sim.discord import spec

    reason = spec.unavailable_reason()
    if reason is not None:  # the referee is part of every test that talks to the simulator
        pytest.fail(f"the Discord simulator cannot check the API contract: {reason}", pytrace=False)
    spec.VIOLATIONS.clear()
    yield
    _fail_on_violations(spec.VIOLATIONS, "in set-up or tear-down")


def _fail_on_violations(violations: list[object], when: str) -> None:
    if not violations:
        return
    lines = "\n".join(f"  {v}" for v in violations[:20])
    more = f"\n  ... and {len(violations) - 20} more" if len(violations) > 20 else ""
    found = list(violations)
    violations.clear()
    pytest.fail(
        f"{len(found)} Discord API contract violation(s) {when} "
        f"(sim/discord/spec.py; request = the bot sent it, response = the simulator did):\n{lines}{more}",
        pytrace=False,
    )
