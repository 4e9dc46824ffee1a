"""Secrets out of log text, by value and by shape (shared by the bot and the in-pod worker; stdlib only).

Redacting only the values we know (the settings' secrets) misses every secret we do not hold at start-up:
each job's worker token, a key in a URL an HTTP library logs, a token a trainer prints. So text is also
redacted by *shape*: bearer tokens, ``key=value`` pairs whose key says secret, credentials in URLs,
and the formats of the tokens this system handles (loraops worker tokens, Hugging Face, RunPod and
Discord tokens, long random strings). Hex digests stay: they are how blobs and files are named.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

REDACTED = "***"
WORKER_TOKEN_PREFIX = "lwt_"  # loraops worker token: a prefix so its shape is unmistakable

_SECRET_WORD = (
    r"(?:authorization|api[_-]?key|apikey|api[_-]?secret|secret|token|access[_-]?token|password|passwd"
    r"|x-api-key|credentials?|auth)"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Bearer abc", "Basic dXNlcjpwYXNz" (an Authorization header however it is printed)
    (re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{REDACTED}"),
    (re.compile(r"\b(Basic)(\s+)[A-Za-z0-9+/]{16,}={0,2}"), rf"\1\2{REDACTED}"),
    # api_key=..., "token": "...", Authorization: ..., HF_TOKEN=..., ?api_key=... in a URL
    (
        re.compile(
            rf"(?i)([\w-]*{_SECRET_WORD}[\w-]*)(\"?'?\s*[:=]\s*\"?'?)(?!\*\*\*)([^\s\"'&,;)}}\]]{{4,}})"
        ),
        rf"\1\2{REDACTED}",
    ),
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), rf"\1{REDACTED}:{REDACTED}@"),
    # token formats
    (re.compile(rf"{WORKER_TOKEN_PREFIX}[A-Za-z0-9_-]{{16,}}"), REDACTED),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\brpa_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\b[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{20,}"), REDACTED),  # Discord/JWT
)
# Long random strings (secrets.token_urlsafe, API keys): letters and digits mixed, 32+ characters.
_LONG_RANDOM = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32,}(?![A-Za-z0-9_-])")
_HEX = re.compile(r"[0-9a-fA-F]+")


def _random_looking(match: re.Match[str]) -> str:
    word = match.group(0)
    if _HEX.fullmatch(word):  # sha256 / md5 digests name blobs and files: keep them
        return word
    has_digit = any(c.isdigit() for c in word)
    has_upper = any(c.isupper() for c in word)
    has_lower = any(c.islower() for c in word)
    if has_digit and (has_upper or has_lower) and not ("_" in word and word.count("_") > 3):
        return REDACTED
    return word


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret value and every secret-shaped string replaced by ``***``."""
    for secret in sorted((s for s in secrets if s and len(s) >= 6), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _LONG_RANDOM.sub(_random_looking, text)


class RedactingFormatter(logging.Formatter):
    """The last guard of a log handler: the whole formatted line (traceback and stack included) is
    redacted by value and by shape."""

    def __init__(
        self, secrets: Iterable[str] = (), fmt: str = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    ) -> None:
        super().__init__(fmt)
        self._secrets = [s for s in secrets if s and len(s) >= 6]

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)
