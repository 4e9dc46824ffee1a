"""Cloudinary through the official (blocking) SDK, run off the event loop, with paging and back-off.

Credentials are passed on every call (never written into the SDK's global config), so two clients
with different accounts, or a client pointed at the simulator via ``upload_prefix``, never interfere.
The SDK hides response headers when it raises, so rate-limit handling reads the error message
("… Try again on 2024-10-04 14:00:00 UTC") and the last successful response's rate-limit fields.

Every SDK failure goes through :func:`classify_failure`, the one place that knows what pycloudinary
raises for which status (``cloudinary/api_client/execute_request.py``, 1.46): ``BadRequest`` 400,
``AuthorizationRequired`` 401, ``NotAllowed`` 403, ``NotFound`` 404, ``AlreadyExists`` 409,
``RateLimited`` 420/429, ``GeneralError`` 500/503 and for network errors and answers that are not JSON;
any other status with an error JSON (402, 413, 502, 504…) is a *bare* ``Exception("Error 502 - …")``.
The Upload API (``cloudinary/uploader.py``) raises the same classes without the "Error NNN" prefix and
the base ``cloudinary.exceptions.Error`` for unmapped statuses.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from bot.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
    UserError,
)
from bot.retry import CLOUDINARY, RetryLater, RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")


class CloudinaryRateLimitedError(ServiceUnavailableError):
    """Cloudinary kept answering 420/429 after our back-off, or its hourly allowance is used up."""


@dataclass(frozen=True)
class CloudinaryCredentials:
    """What a ``cloudinary://KEY:SECRET@CLOUD?upload_prefix=…`` URL holds."""

    cloud_name: str
    api_key: str
    api_secret: str = field(repr=False)
    upload_prefix: str | None = None

    @classmethod
    def from_url(cls, url: str) -> CloudinaryCredentials:
        parts = urlsplit(url.strip())
        if parts.scheme != "cloudinary" or not parts.hostname or not parts.username or not parts.password:
            raise InvalidInputError(
                "CLOUDINARY_URL must look like cloudinary://API_KEY:API_SECRET@CLOUD_NAME"
            )
        query = parse_qs(parts.query)
        prefix = query.get("upload_prefix", [None])[0]
        # urlsplit lower-cases hostname; cloud names are case-sensitive, so read it from netloc.
        cloud = parts.netloc.rsplit("@", 1)[-1].split(":")[0]
        return cls(
            cloud_name=unquote(cloud),
            api_key=unquote(parts.username),
            api_secret=unquote(parts.password),
            upload_prefix=prefix,
        )

    def options(self) -> dict[str, Any]:
        """Per-call SDK overrides."""
        opts: dict[str, Any] = {
            "cloud_name": self.cloud_name,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
        }
        if self.upload_prefix:
            opts["upload_prefix"] = self.upload_prefix
        return opts


@dataclass(frozen=True)
class CloudinaryAsset:
    """One listed asset, with what captions need later (tags, context)."""

    public_id: str
    asset_id: str
    resource_type: str
    delivery_type: str
    format: str
    version: int
    secure_url: str
    byte_size: int
    width: int | None
    height: int | None
    asset_folder: str | None
    tags: tuple[str, ...]
    context: dict[str, str]

    @property
    def display_name(self) -> str:
        return f"{self.public_id}.{self.format}" if self.format else self.public_id

    @property
    def source_ref(self) -> str:
        # The version changes when an asset is overwritten, i.e. when its bytes may differ.
        return f"{self.resource_type}/{self.delivery_type}/{self.public_id}@v{self.version}"

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> CloudinaryAsset:
        return cls(
            public_id=str(item.get("public_id", "")),
            asset_id=str(item.get("asset_id", "")),
            resource_type=str(item.get("resource_type", "image")),
            delivery_type=str(item.get("type", "upload")),
            format=str(item.get("format") or ""),
            version=int(item.get("version") or 0),
            secure_url=str(item.get("secure_url") or item.get("url") or ""),
            byte_size=int(item.get("bytes") or 0),
            width=item.get("width"),
            height=item.get("height"),
            asset_folder=item.get("asset_folder", item.get("folder")),
            tags=tuple(str(t) for t in item.get("tags") or ()),
            context=_flatten_context(item.get("context")),
        )


def _flatten_context(raw: Any) -> dict[str, str]:
    # Admin API: {"custom": {"caption": "…"}}; Search API: {"caption": "…"}.
    if not isinstance(raw, dict):
        return {}
    custom = raw.get("custom")
    source = custom if isinstance(custom, dict) else raw
    return {str(k): str(v) for k, v in source.items() if not isinstance(v, dict)}


@dataclass
class RateLimitState:
    allowed: int | None = None
    remaining: int | None = None
    reset_at: datetime | None = None


_TRY_AGAIN = re.compile(r"Try again on (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC")


def _parse_reset(message: str) -> datetime | None:
    match = _TRY_AGAIN.search(message)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


# Statuses after which the same request may well succeed (timeouts, "too early", server errors).
RETRYABLE_STATUSES = frozenset({408, 425, 500, 502, 503, 504})
_STATUS_PREFIX = re.compile(r"^Error (\d{3}) - ")
_UNPARSABLE = re.compile(r"^Error parsing server response \((\d{3})\)")


@dataclass(frozen=True)
class CloudinaryFailure:
    """What a failed SDK call means: the HTTP status (when known), Cloudinary's message, whether the
    same request is worth another try, and (for 420/429) when Cloudinary said its allowance resets."""

    status: int | None
    message: str
    retryable: bool
    rate_limited: bool = False
    reset_at: datetime | None = None

    def user_error(self, *, tries: int = 1) -> UserError:
        """The short message the user sees once this failure is final (after ``tries`` tries)."""
        after = f" after {tries} tries" if tries > 1 else ""
        match self.status:
            case 400:
                return InvalidInputError(f"Cloudinary rejected the request: {self.message}")
            case 401:
                return ServiceUnavailableError(
                    f"Cloudinary refused our credentials ({self.message}); check CLOUDINARY_URL."
                )
            case 403:
                return ServiceUnavailableError(f"Cloudinary does not allow this: {self.message}")
            case 404:
                return NotFoundError(f"Cloudinary: {self.message}")
            case 409:
                return ConflictError(f"Cloudinary says this already exists: {self.message}")
        if self.retryable:
            code = f" (HTTP {self.status})" if self.status is not None else ""
            return ServiceUnavailableError(
                f"Cloudinary is not answering properly{code}{after}: {self.message}. Try again later."
            )
        return ServiceUnavailableError(f"Cloudinary refused the request (HTTP {self.status}): {self.message}")


def classify_failure(exc: BaseException) -> CloudinaryFailure | None:
    """What ``exc`` from the ``cloudinary`` SDK means; ``None`` if it did not come from the SDK (a bug of
    ours, which must not be dressed up as a Cloudinary failure)."""
    from cloudinary import exceptions as cx

    text = str(exc)
    status_match = _STATUS_PREFIX.match(text)
    status = int(status_match.group(1)) if status_match else None
    message = _STATUS_PREFIX.sub("", text)[:300]
    if isinstance(exc, cx.RateLimited):
        return CloudinaryFailure(
            status or 420, message, retryable=True, rate_limited=True, reset_at=_parse_reset(text)
        )
    fixed = {
        cx.BadRequest: 400,
        cx.AuthorizationRequired: 401,
        cx.NotAllowed: 403,
        cx.NotFound: 404,
        cx.AlreadyExists: 409,
    }
    for kind, code in fixed.items():
        if isinstance(exc, kind):
            return CloudinaryFailure(code, message, retryable=False)
    if isinstance(exc, cx.Error):
        # GeneralError (500/503, sockets, timeouts, a page that is not JSON) or, from the Upload API, an
        # unmapped status without its number. Without a number it is a transport fault: retry.
        if unparsable := _UNPARSABLE.match(text):
            status = int(unparsable.group(1))
            message = "it answered with a page that is not JSON"
        elif text.lower().startswith(("unexpected error", "socket error")):
            # urllib3's text names hosts, ports and retry internals: the log keeps it, the user needn't.
            message = "no answer (a network error or a timeout)"
        return CloudinaryFailure(status, message, retryable=status is None or status in RETRYABLE_STATUSES)
    if type(exc) is Exception and status is not None:
        # The Admin API's bare Exception for a status it has no class for.
        return CloudinaryFailure(status, message, retryable=status in RETRYABLE_STATUSES)
    return None


class CloudinaryClient:
    """Async façade over ``cloudinary`` (Admin, Search, Upload). Blocking calls run in threads."""

    def __init__(
        self,
        credentials: CloudinaryCredentials,
        *,
        page_size: int = 500,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 1 <= page_size <= 500:
            raise ValueError("page_size must be 1..500 (Cloudinary's maximum)")
        self.credentials = credentials
        self.page_size = page_size
        self.timeout_s = timeout_s
        self.retry = retry or CLOUDINARY
        self._sleep = sleep
        self.rate_limit = RateLimitState()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> CloudinaryClient:
        return cls(CloudinaryCredentials.from_url(url), **kwargs)

    # -- listings -----------------------------------------------------------------------------------

    def iter_asset_folder(self, folder: str) -> AsyncIterator[list[CloudinaryAsset]]:
        """Pages of the assets in a (dynamic-folder mode) asset folder, oldest first."""
        import cloudinary.api

        return self._pages(
            lambda cursor: cloudinary.api.resources_by_asset_folder(folder, **self._list_options(cursor))
        )

    def iter_tag(self, tag: str) -> AsyncIterator[list[CloudinaryAsset]]:
        """Pages of the images carrying ``tag``."""
        import cloudinary.api

        return self._pages(lambda cursor: cloudinary.api.resources_by_tag(tag, **self._list_options(cursor)))

    def iter_prefix(self, prefix: str) -> AsyncIterator[list[CloudinaryAsset]]:
        """Pages of uploaded images whose public_id starts with ``prefix`` (fixed-folder accounts)."""
        import cloudinary.api

        return self._pages(
            lambda cursor: cloudinary.api.resources(
                type="upload", prefix=prefix, **self._list_options(cursor)
            )
        )

    def iter_search(self, expression: str) -> AsyncIterator[list[CloudinaryAsset]]:
        """Pages of a Search API expression, e.g. ``asset_folder="elena" AND tags=portrait``."""
        import cloudinary

        def call(cursor: str | None) -> dict[str, Any]:
            search = (
                cloudinary.Search()
                .expression(expression)
                .sort_by("public_id", "asc")
                # Search results carry tags and context only when asked for; captions are made of them.
                .with_field("tags")
                .with_field("context")
                .max_results(self.page_size)
            )
            if cursor:
                search = search.next_cursor(cursor)
            return search.execute(timeout=self.timeout_s, **self.credentials.options())

        return self._pages(call)

    def _list_options(self, cursor: str | None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_results": self.page_size,
            # Admin listings leave out tags and context unless asked for; captions are made of them.
            "tags": True,
            "context": True,
            "direction": "asc",
            "timeout": self.timeout_s,
            **self.credentials.options(),
        }
        if cursor:
            options["next_cursor"] = cursor
        return options

    async def _pages(
        self, call: Callable[[str | None], dict[str, Any]]
    ) -> AsyncIterator[list[CloudinaryAsset]]:
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while True:
            response = await self._call(lambda c=cursor: call(c))
            yield [CloudinaryAsset.from_api(item) for item in response.get("resources", [])]
            cursor = response.get("next_cursor")
            if not cursor:
                return
            if cursor in seen_cursors:  # a misbehaving server must not loop us forever
                raise ServiceUnavailableError("Cloudinary returned the same page cursor twice")
            seen_cursors.add(cursor)

    # -- upload and account ---------------------------------------------------------------------------

    async def upload(
        self,
        data: bytes,
        *,
        filename: str,
        resource_type: str = "raw",
        asset_folder: str | None = None,
        public_id: str | None = None,
        tags: tuple[str, ...] = (),
        context: dict[str, str] | None = None,
        overwrite: bool = True,
        timeout_s: float = 300.0,
    ) -> dict[str, Any]:
        """A signed upload; returns Cloudinary's result (``secure_url``, ``public_id``, ``bytes``…)."""
        import cloudinary.uploader

        def call() -> dict[str, Any]:
            return cloudinary.uploader.upload(
                (filename, data),
                resource_type=resource_type,
                asset_folder=asset_folder,
                public_id=public_id,
                tags=list(tags) or None,
                context=context or None,
                overwrite=overwrite,
                timeout=timeout_s,
                **self.credentials.options(),
            )

        return await self._call(call)

    async def usage(self) -> dict[str, Any]:
        """Account usage, including ``media_limits`` (per-type maximum file sizes)."""
        import cloudinary.api

        return await self._call(
            lambda: cloudinary.api.usage(timeout=self.timeout_s, **self.credentials.options())
        )

    async def max_file_size(self, resource_type: str) -> int | None:
        """The plan's maximum size in bytes for ``image``/``video``/``raw`` uploads, if reported."""
        limits = (await self.usage()).get("media_limits") or {}
        value = limits.get(f"{resource_type}_max_size_bytes")
        return int(value) if value is not None else None

    # -- the one place that calls the SDK ------------------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        async def attempt() -> T:
            try:
                return await asyncio.to_thread(fn)
            except Exception as exc:
                failure = classify_failure(exc)
                if failure is None:
                    raise  # not the SDK's: a bug of ours, shown as one
                if not failure.retryable:
                    raise failure.user_error() from None
                if failure.rate_limited and failure.reset_at is not None:
                    until_reset = (failure.reset_at - datetime.now(UTC)).total_seconds()
                    if until_reset > self.retry.max_wait_for_reset_s:
                        raise CloudinaryRateLimitedError(
                            _rate_limited_text(failure.reset_at, self.rate_limit)
                        ) from None
                    raise _TryAgain(failure, after_s=until_reset + 0.5) from None
                raise _TryAgain(failure) from None

        try:
            result = await self.retry.call(attempt, what="cloudinary call", sleep=self._sleep)
        except _TryAgain as exc:
            last = exc.failure
            if last.rate_limited:
                raise CloudinaryRateLimitedError(
                    _rate_limited_text(last.reset_at, self.rate_limit, tries=self.retry.attempts)
                ) from None
            raise last.user_error(tries=self.retry.attempts) from None
        self._note_rate_limit(result)
        return result

    def _note_rate_limit(self, result: object) -> None:
        allowed = getattr(result, "rate_limit_allowed", None)
        if allowed is None:
            return
        self.rate_limit.allowed = allowed
        self.rate_limit.remaining = getattr(result, "rate_limit_remaining", None)
        parsed = getattr(result, "rate_limit_reset_at", None)  # a time.struct_time-like 9-tuple, UTC
        if parsed:
            self.rate_limit.reset_at = datetime(*parsed[:6], tzinfo=UTC)


class _TryAgain(RetryLater):
    """A failure the retry policy tries again (5xx, network, 420/429); after the last try it becomes the
    user's error. For 420/429 ``after_s`` is the time to Cloudinary's named reset (never waited longer)."""

    def __init__(self, failure: CloudinaryFailure, *, after_s: float | None = None) -> None:
        code = f"HTTP {failure.status}: " if failure.status is not None else ""
        super().__init__(code + failure.message, after_s=after_s)
        self.failure = failure


def _rate_limited_text(reset_at: datetime | None, state: RateLimitState, tries: int | None = None) -> str:
    text = "Cloudinary is rate-limiting our requests"
    if tries:
        text += f" and still was after {tries} tries with back-off"
    if reset_at is not None:
        text += f"; its allowance resets at {reset_at:%H:%M} UTC"
    elif state.reset_at is not None:
        text += f"; the hourly allowance ({state.allowed} calls) resets at {state.reset_at:%H:%M} UTC"
    return text + ". Nothing more was listed; try again later (already gathered images are kept)."
