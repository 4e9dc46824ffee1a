"""Logging set-up: one format, library noise turned down, secrets redacted from every record.

Two guards keep secrets out of the log at every level, DEBUG included:

1. Drivers that log the *parameters* of what they do are held at WARNING whatever the level: aiosqlite
   logs each call with its SQL parameters at DEBUG, SQLAlchemy's engine logs parameters at INFO when
   echoing, urllib3 logs request URLs (RunPod's GraphQL key travels in the query string).
2. Every formatted line — message, arguments, traceback — is redacted by value (the settings' secrets)
   and by shape (:func:`worker.redact.redact`: bearer tokens, ``api_key=...``, worker tokens, ...).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TextIO

from worker.redact import RedactingFormatter, redact

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Loggers that print parameters, URLs or payloads when verbose; never below WARNING.
QUIET_LOGGERS = (
    "aiosqlite",
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "sqlalchemy.orm",
    "asyncpg",
    "urllib3",
    "requests",
    "discord.http",
    "discord.gateway",
    "aiohttp.access",
    "aiohttp.client",
    "websockets",
    "cloudinary",
    "runpod",
    "alembic",
)


class RedactSecrets(logging.Filter):
    """Redacts configured secret values and secret-shaped text from a record's message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the formatter report it, redacted
            return True
        redacted = redact(message, self._secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redacting_handler(secrets: Iterable[str] = (), stream: TextIO | None = None) -> logging.Handler:
    secrets = list(secrets)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(RedactingFormatter(secrets, _FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    return handler


def quiet_drivers() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def setup_logging(level: str = "INFO", secrets: Iterable[str] = (), stream: TextIO | None = None) -> None:
    root = logging.getLogger()
    root.handlers[:] = [redacting_handler(secrets, stream)]
    root.setLevel(level)
    logging.getLogger("discord").setLevel(max(logging.INFO, root.level))
    quiet_drivers()
