"""Worker bearer tokens: derived, never stored.

Each job's pod API is guarded by a bearer token the bot gives the pod (in its environment, once, at
creation) and sends with every call. A hash would not do (the bot must send the token again, after a
restart too), and encryption would still keep a decryptable copy beside the data. So the token is
*derived*: ``HMAC-SHA256(key, "loraops-worker-token:v1:<job id>:<nonce>")``, where the key is a secret
from the environment (``WORKER_TOKEN_KEY``, or ``RUNPOD_API_KEY`` when that is unset — a bot that trains
always has it) and the nonce is a random, non-secret value stored with the job so that a job id reused by
a fresh database never gets an old token back. A database dump holds no token; a log line that
shows one is caught by its ``lwt_`` shape (:mod:`worker.redact`).

Changing the key while jobs run orphans their workers: the next call is refused, the job fails and its
pod is terminated (no money lost, the run is). Rotate it between jobs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from bot.config import Settings
from worker.redact import WORKER_TOKEN_PREFIX


class NoTokenKeyError(RuntimeError):
    """Neither WORKER_TOKEN_KEY nor RUNPOD_API_KEY is set: no token can be derived."""


def new_nonce() -> str:
    return secrets.token_hex(16)


def token_key(settings: Settings) -> bytes:
    for secret in (settings.worker_token_key, settings.runpod_api_key):
        if secret is not None and secret.get_secret_value():
            return secret.get_secret_value().encode()
    raise NoTokenKeyError("set WORKER_TOKEN_KEY (or RUNPOD_API_KEY) to derive worker tokens")


def derive_token(key: bytes, job_id: int, nonce: str) -> str:
    mac = hmac.new(key, f"loraops-worker-token:v1:{job_id}:{nonce}".encode(), hashlib.sha256).digest()
    return WORKER_TOKEN_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def worker_token(settings: Settings, job_id: int, nonce: str | None) -> str | None:
    """The job's token, or None for a job that has none (created before tokens were derived)."""
    if not nonce:
        return None
    return derive_token(token_key(settings), job_id, nonce)
