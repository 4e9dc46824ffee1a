"""``loraops run | migrate | sync``: the bot's own commands.

Problems with the configuration are printed as one clear line each and exit with status 2; a
traceback is never what a user sees for a missing token or a database that can't be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from bot.config import Settings, SettingsError, load_settings
from bot.errors import StartupError

EXIT_CONFIG = 2


def register(subparsers: Any) -> None:
    run = subparsers.add_parser("run", help="run the bot (applies migrations first)")
    run.set_defaults(handler=_run)
    migrate = subparsers.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(handler=_migrate)
    sync = subparsers.add_parser("sync", help="sync slash commands with Discord now and exit")
    sync.set_defaults(handler=_sync)


def _settings_or_report() -> Settings | None:
    try:
        return load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"loraops: {problem}", file=sys.stderr)
        return None


def _database_problem(settings: Settings) -> str | None:
    """Apply migrations; return one line describing why the database can't be used, if it can't."""
    from storage.migrate import upgrade_to_head

    try:
        upgrade_to_head(settings.database_url)
    except Exception as exc:  # any driver's failure becomes one readable line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"DATABASE_URL: cannot use the database ({type(exc).__name__}: {reason[:200]})"
    return None


def _setup_logging(settings: Settings) -> None:
    from bot.log import setup_logging

    setup_logging(settings.log_level, settings.secret_values())


def _run(_args: argparse.Namespace) -> int:
    settings = _settings_or_report()
    if settings is None:
        return EXIT_CONFIG
    problems = []
    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        problems.append("DISCORD_TOKEN: not set (the bot token from the Discord developer portal)")
    database_problem = _database_problem(settings)
    if database_problem:
        problems.append(database_problem)
    if problems:
        for problem in problems:
            print(f"loraops: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    _setup_logging(settings)
    from bot.app import run

    try:
        asyncio.run(run(settings))
    except KeyboardInterrupt:
        logging.getLogger(__name__).info("stopped")
    except StartupError as exc:
        print(f"loraops: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    settings = _settings_or_report()
    if settings is None:
        return EXIT_CONFIG
    problem = _database_problem(settings)
    if problem:
        print(f"loraops: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    print("database is at the latest schema")
    return 0


def _sync(_args: argparse.Namespace) -> int:
    settings = _settings_or_report()
    if settings is None:
        return EXIT_CONFIG
    if settings.discord_token is None:
        print("loraops: DISCORD_TOKEN: not set", file=sys.stderr)
        return EXIT_CONFIG
    _setup_logging(settings)
    token = settings.discord_token.get_secret_value()

    async def _do() -> list[str]:
        from bot.app import build_application, sync_commands

        app = await build_application(settings)
        app.bot.sync_on_start = False
        app.bot.run_background = False
        try:
            await app.bot.login(token)
            await app.bot.setup_hook()
            return await sync_commands(app.bot)
        finally:
            await app.close()

    targets = asyncio.run(_do())
    print("synced slash commands to: " + ", ".join(targets))
    return 0
