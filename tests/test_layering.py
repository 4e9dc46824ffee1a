"""The layering of design §3, checked on the source: queries live in ``storage/``, cogs never import it.

ruff's import ban (``cogs/ruff.toml``) already refuses ``import storage`` in ``cogs/``; this test adds
what an import ban can't see: a query written in ``bot/``. It walks the syntax tree of every module of
``bot/`` and fails on

- building SQL: importing from ``sqlalchemy`` anything but the session types (``sqlalchemy.ext.asyncio``)
  and the errors (``sqlalchemy.exc``), e.g. ``select``, ``update``, ``func``;
- running it: calling ``execute``, ``scalar``, ``scalars``, ``get``, ``add``, ``delete``, ... on a session
  (a name bound by ``async with <sessions>() as x`` / ``unit_of_work(...) as x`` or a parameter annotated
  ``AsyncSession``; for the methods only a database session has, any name that says ``session``; an
  aiohttp ``session.get(url)`` is not a query).

Unit-of-work control (``begin_nested``, ``flush``, ``commit``) stays with the domain service that owns
the transaction, so it is allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Methods only a database session has: on any name that says "session" they run a query.
SQL_ONLY_METHODS = frozenset(
    {
        "execute",
        "scalar",
        "scalars",
        "get_one",
        "add",
        "add_all",
        "merge",
        "refresh",
        "stream",
        "stream_scalars",
    }
)
# Also an HTTP verb (aiohttp's session.get/delete): a query only on a name known to hold a database session.
QUERY_METHODS = SQL_ONLY_METHODS | {"get", "delete"}
ALLOWED_SQLALCHEMY = ("sqlalchemy.ext.asyncio", "sqlalchemy.exc")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    return ""


def _session_names(tree: ast.AST) -> set[str]:
    """Names that hold a session in this module."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncWith | ast.With):
            for item in node.items:
                source = _dotted(item.context_expr).lower()
                if ("session" in source or "unit_of_work" in source) and isinstance(
                    item.optional_vars, ast.Name
                ):
                    names.add(item.optional_vars.id)
        elif (
            isinstance(node, ast.arg)
            and node.annotation is not None
            and "AsyncSession" in ast.unparse(node.annotation)
        ):
            names.add(node.arg)
    return names


def query_calls(source: str, filename: str = "<source>") -> list[str]:
    """``"line: what"`` for every query built or run in ``source``."""
    tree = ast.parse(source, filename)
    sessions = _session_names(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sqlalchemy":
            if not node.module.startswith(ALLOWED_SQLALCHEMY):
                names = ", ".join(alias.name for alias in node.names)
                found.append(f"{node.lineno}: from {node.module} import {names}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy" and not alias.name.startswith(ALLOWED_SQLALCHEMY):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in QUERY_METHODS
        ):
            receiver = node.func.value
            name = receiver.id if isinstance(receiver, ast.Name) else getattr(receiver, "attr", "")
            if name in sessions or ("session" in name.lower() and node.func.attr in SQL_ONLY_METHODS):
                found.append(f"{node.lineno}: {_dotted(node.func)}(...)")
    return found


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if ".venv" not in p.parts)


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_no_query_outside_storage() -> None:
    offenders: list[str] = []
    for path in _modules("bot"):
        relative = _relative(path)
        offenders.extend(f"{relative}:{hit}" for hit in query_calls(path.read_text(), relative))
    assert offenders == [], (
        "queries belong in storage/ (a query module there, called from bot/):\n" + "\n".join(offenders)
    )


def test_cogs_never_import_storage() -> None:
    offenders: list[str] = []
    for path in _modules("cogs"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            offenders.extend(
                f"{_relative(path)}:{node.lineno}: {m}" for m in modules if m.split(".")[0] == "storage"
            )
    assert offenders == [], "cogs read frozen views from bot/views.py, never storage:\n" + "\n".join(
        offenders
    )


# The checker itself: it must see a query written back into bot/, in each form, and pass clean code.
@pytest.mark.parametrize(
    "source",
    [
        "from sqlalchemy import select\n",
        "import sqlalchemy as sa\n",
        "from sqlalchemy.orm import selectinload\n",
        "async def f(sessions):\n    async with sessions() as s:\n        await s.execute(q)\n",
        "async def f(self):\n    async with unit_of_work(self._sessions) as uow:\n        uow.add(row)\n",
        "async def f(db: AsyncSession):\n    return await db.get(Job, 1)\n",
        "async def f(self):\n    return await self._session.scalar(q)\n",
    ],
)
def test_checker_sees_a_query(source: str) -> None:
    assert query_calls(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "from sqlalchemy.exc import IntegrityError\nfrom sqlalchemy.ext.asyncio import AsyncSession\n",
        "async def f(self):\n    async with unit_of_work(self._sessions) as session:\n"
        "        async with session.begin_nested():\n            await store.add_vote(session, v)\n",
        "def f(cache):\n    return cache.get(1)\n",
        "async def f(self):\n    session = self._get_session()\n"
        "    async with session.get(url) as response:\n        return response\n",
    ],
)
def test_checker_passes_clean_code(source: str) -> None:
    assert query_calls(source) == []
