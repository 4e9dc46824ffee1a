"""Small shared pieces of the Discord simulator: clock, snowflakes, API errors, JSON responses."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

DISCORD_EPOCH_MS = 1420070400000
DEFAULT_FILE_SIZE_LIMIT = 10 * 1024 * 1024  # 10 MiB, Discord's default since 2025-01
# Guild premium tier -> upload limit, as discord.py's Guild.filesize_limit table.
TIER_FILE_SIZE_LIMIT = {
    0: DEFAULT_FILE_SIZE_LIMIT,
    1: DEFAULT_FILE_SIZE_LIMIT,
    2: 50 * 1024**2,
    3: 100 * 1024**2,
}


class SimClock:
    """Monotonic clock for the simulator's deadlines (3 s first response, 15 min token).

    Defaults to real monotonic time; ``advance(seconds)`` moves it forward so tests can cross a
    deadline without sleeping. Snowflakes and message timestamps use real wall time, because
    discord.py compares them with ``datetime.now()``.
    """

    def __init__(self) -> None:
        self._offset = 0.0

    def monotonic(self) -> float:
        """Seconds on the simulator's clock (real monotonic time plus every advance)."""
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds

    @property
    def offset(self) -> float:
        """Total seconds advanced so far."""
        return self._offset


class Snowflakes:
    """Generates realistic, strictly increasing Discord snowflakes from the current wall time."""

    def __init__(self) -> None:
        self._increment = itertools.count()
        self._last = 0

    def next(self) -> int:
        """A new snowflake: milliseconds since the Discord epoch << 22, worker 1, an increment."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = (ms << 22) | (1 << 17) | (next(self._increment) & 0xFFF)
        if value <= self._last:
            value = self._last + 1
        self._last = value
        return value


def snowflake_time(snowflake: int) -> datetime:
    """The creation time encoded in a snowflake."""
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, tz=UTC)


def iso(dt: datetime) -> str:
    """Discord's ISO 8601 timestamp format."""
    return dt.isoformat()


def now_iso() -> str:
    """The current wall time as a Discord timestamp."""
    return iso(datetime.now(UTC))


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response whose Content-Type is exactly ``application/json``.

    discord.py's ``json_or_text`` only parses the body when the header equals that string;
    ``web.json_response`` adds ``; charset=utf-8`` and would make the client see a str.
    """
    body = json.dumps(data, ensure_ascii=False).encode()
    response = web.Response(body=body, status=status, headers=headers)
    response.headers["Content-Type"] = "application/json"
    return response


class ApiError(Exception):
    """An error the simulated API answers with, in Discord's JSON shape."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.extra_body: dict[str, Any] = {}

    def body(self) -> dict[str, Any]:
        """The JSON body Discord sends for this error."""
        body: dict[str, Any] = {"message": self.message}
        if self.status != 429:  # Discord's 429 body is {message, retry_after, global}
            body["code"] = self.code
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra_body)
        return body

    def response(self) -> web.Response:
        """This error as an aiohttp response."""
        return json_response(self.body(), status=self.status, headers=self.headers)


def form_error(path: list[str | int], code: str, message: str) -> ApiError:
    """A 400 "Invalid Form Body" (50035) error for the field at ``path`` (nested like Discord's)."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path):
        errors = {str(key): errors}
    return ApiError(400, 50035, "Invalid Form Body", errors=errors)


# Well-known errors, named as in Discord's JSON error code table.
def unknown_interaction() -> ApiError:
    """404 10062: the interaction is unknown or its 3 s first-response window has passed."""
    return ApiError(404, 10062, "Unknown interaction")


def already_acknowledged() -> ApiError:
    """400 40060: a second initial response to the same interaction."""
    return ApiError(400, 40060, "Interaction has already been acknowledged.")


def invalid_webhook_token() -> ApiError:
    """401 50027: the interaction token expired (15 minutes) or is wrong."""
    return ApiError(401, 50027, "Invalid Webhook Token")


def unknown_webhook() -> ApiError:
    """404 10015: no such webhook (also: follow-up before the interaction was answered)."""
    return ApiError(404, 10015, "Unknown Webhook")


def unknown_message() -> ApiError:
    """404 10008."""
    return ApiError(404, 10008, "Unknown Message")


def unknown_channel() -> ApiError:
    """404 10003."""
    return ApiError(404, 10003, "Unknown Channel")


def missing_access() -> ApiError:
    """403 50001: the bot cannot see the channel (no VIEW_CHANNEL), or lacks a privileged intent."""
    return ApiError(403, 50001, "Missing Access")


def missing_permissions() -> ApiError:
    """403 50013."""
    return ApiError(403, 50013, "Missing Permissions")


def unauthorized() -> ApiError:
    """401 with code 0, as Discord answers a bad bot token."""
    return ApiError(401, 0, "401: Unauthorized")


def entity_too_large() -> ApiError:
    """413 40005: a file is larger than the upload limit."""
    return ApiError(413, 40005, "Request entity too large")
