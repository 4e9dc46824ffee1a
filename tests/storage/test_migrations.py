"""Migrations bring an empty database to head, and head matches the models exactly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from storage.db import make_engine
from storage.migrate import upgrade_to_head
from storage.models import Base


async def test_head_matches_models(db_url: str) -> None:
    upgrade_to_head(db_url)  # idempotent: already at head
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    assert diff == []
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_0002_drops_plain_text_worker_tokens(tmp_path: Path) -> None:
    """A database from before derived tokens: its plain-text tokens are gone after the upgrade."""
    from alembic import command

    from storage.migrate import alembic_config

    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    command.upgrade(alembic_config(url), "0001")
    with sqlite3.connect(path) as conn:
        _insert(conn, "datasets", {"id": 1, "name": "elena"})
        _insert(conn, "jobs", {"id": 1, "dataset_id": 1, "worker_token": "PLAINTEXT-token-from-0001"})
        _insert(conn, "jobs", {"id": 2, "dataset_id": 1, "state": "pending", "worker_token": "PLAINTEXT-2"})
        assert "PLAINTEXT-token-from-0001" in "\n".join(conn.iterdump())
    upgrade_to_head(url)
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
        dump = "\n".join(conn.iterdump())
    assert "worker_token" not in columns and "worker_token_nonce" in columns
    assert "PLAINTEXT-token-from-0001" not in dump and "PLAINTEXT-2" not in dump
    with sqlite3.connect(path) as conn:
        nonces = dict(conn.execute("SELECT id, worker_token_nonce FROM jobs").fetchall())
    # The job that rents nothing yet gets a nonce (so a token); the one that ran keeps none.
    assert nonces[1] is None and len(nonces[2]) == 32


def _insert(conn: sqlite3.Connection, table: str, values: dict[str, object]) -> None:
    """A row with ``values`` and a plain value in every other required column (by its SQL type)."""
    row = dict(values)
    for _cid, name, kind, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})"):
        if name in row or not notnull or default is not None or pk:
            continue
        kind = str(kind).upper()
        if "INT" in kind or "NUMERIC" in kind:
            row[name] = 1
        elif "DATETIME" in kind or "TIMESTAMP" in kind:
            row[name] = "2026-12-01 00:00:00"
        elif "JSON" in kind:
            row[name] = "{}"
        elif "BOOL" in kind:
            row[name] = 0
        else:
            row[name] = "x"
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row.values()))
