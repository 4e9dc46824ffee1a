"""Cloudinary through the official (blocking) SDK, run off the event loop, with paging and back-off.

Credentials are passed on every call (never written into the SDK's global config), so two clients
with different accounts, or a client pointed at the simulator via ``upload_prefix``, never interfere.
The SDK hides response headers when it raises, so rate-limit handling reads the error message
("… Try again on 2024-10-04 14:00:00 UTC") and the last successful response's rate-limit fields.
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

from bot.errors import InvalidInputError, NotFoundError, ServiceUnavailableError
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
        from cloudinary import exceptions as cx

        async def attempt() -> T:
            try:
                return await asyncio.to_thread(fn)
            except cx.RateLimited as exc:
                reset_at = _parse_reset(str(exc))
                until_reset = None if reset_at is None else (reset_at - datetime.now(UTC)).total_seconds()
                if until_reset is not None and until_reset > self.retry.max_wait_for_reset_s:
                    raise CloudinaryRateLimitedError(_rate_limited_text(reset_at, self.rate_limit)) from None
                raise _RateLimited(str(exc), reset_at, until_reset) from None
            except cx.AuthorizationRequired as exc:
                raise ServiceUnavailableError(
                    f"Cloudinary refused our credentials ({_strip_code(exc)}); check CLOUDINARY_URL."
                ) from None
            except cx.NotAllowed as exc:
                raise ServiceUnavailableError(f"Cloudinary does not allow this: {_strip_code(exc)}") from None
            except cx.NotFound as exc:
                raise NotFoundError(f"Cloudinary: {_strip_code(exc)}") from None
            except cx.BadRequest as exc:
                raise InvalidInputError(f"Cloudinary rejected the request: {_strip_code(exc)}") from None
            except cx.Error as exc:  # GeneralError, socket errors, bad JSON: transient, retry
                raise RetryLater(f"Cloudinary is not answering properly: {_strip_code(exc)}") from None

        try:
            result = await self.retry.call(attempt, what="cloudinary call", sleep=self._sleep)
        except _RateLimited as exc:
            raise CloudinaryRateLimitedError(
                _rate_limited_text(exc.reset_at, self.rate_limit, tries=self.retry.attempts)
            ) from None
        except RetryLater as exc:
            raise ServiceUnavailableError(str(exc)) from None
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


class _RateLimited(RetryLater):
    """A 420/429; ``reset_at``: when Cloudinary said its allowance resets (the back-off waits no longer)."""

    def __init__(self, message: str, reset_at: datetime | None, until_reset_s: float | None) -> None:
        super().__init__(message, after_s=None if until_reset_s is None else until_reset_s + 0.5)
        self.reset_at = reset_at


def _strip_code(exc: Exception) -> str:
    # Admin errors read "Error 404 - <message>"; keep the message.
    return re.sub(r"^Error \d{3} - ", "", str(exc))[:300]


def _rate_limited_text(reset_at: datetime | None, state: RateLimitState, tries: int | None = None) -> str:
    text = "Cloudinary is rate-limiting our requests"
    if tries:
        text += f" and still was after {tries} tries with back-off"
    if reset_at is not None:
        text += f"; its allowance resets at {reset_at:%H:%M} UTC"
    elif state.reset_at is not None:
        text += f"; the hourly allowance ({state.allowed} calls) resets at {state.reset_at:%H:%M} UTC"
    return text + ". Nothing more was listed; try again later (already gathered images are kept)."
