"""The Cloudinary simulator: an aiohttp app on 127.0.0.1 that the real ``cloudinary`` SDK talks to.

Point the SDK at it with ``upload_prefix`` (``cloudinary://KEY:SECRET@CLOUD?upload_prefix=<base>``).
It enforces what the real service enforces and answers with the real error shapes:

- Admin and Search API: HTTP Basic ``api_key:api_secret`` (401 ``{"error":{"message":…}}``); an hourly
  allowance with ``X-FeatureRateLimit-Limit/-Remaining/-Reset`` on every answer and 420
  "Rate Limit Exceeded…" when it is used up; cursor paging (opaque ``next_cursor`` that remembers where
  the last page ended, so uploads and deletions between pages neither repeat nor skip assets;
  ``max_results`` default 10, 50 for asset folders and Search, at most 500).
- Listings as the Admin API reference (https://cloudinary.com/documentation/admin_api.md) describes
  them: by ``created_at``, newest first unless ``direction`` is ``asc``/``1``; with a ``prefix`` the
  direction is ignored and assets come sorted by public ID; asset folder names are not case sensitive;
  ``tags``/``context`` only when asked for (``tags=true``, ``context=true``).
- Search expressions parsed as Cloudinary documents them (``sim/cloudinary/search.py`` lists the sources
  and the choices made where they are silent); a malformed one is a 400 with the error JSON. Tags and
  context only with ``with_field``.
- Upload API: signed form fields, checked as Cloudinary does (sorted ``k=v`` joined by ``&``, ``&``
  in values as ``%26``, sha1 or sha256 of that plus the secret); timestamps older than an hour are
  stale; per-type maximum file sizes (the free plan's 10 MB image/raw, 100 MB video), also for
  chunked uploads (``Content-Range`` + ``X-Unique-Upload-Id``).
- Delivery: the ``secure_url`` it returns serves the bytes.

Tests seed it (``add_asset``, ``seed_folder``), read ``requests``, and inject failures
(``force_rate_limit``, ``fail_next`` with any status, JSON error body or a proxy's HTML page).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from sim.cloudinary.images import generated_image
from sim.cloudinary.search import SearchExpressionError, compile_expression

FREE_PLAN_LIMITS = {
    "image_max_size_bytes": 10 * 1024 * 1024,
    "video_max_size_bytes": 100 * 1024 * 1024,
    "raw_max_size_bytes": 10 * 1024 * 1024,
    "image_max_px": 25_000_000,
    "asset_max_total_px": 50_000_000,
}


@dataclass
class SimAsset:
    public_id: str
    resource_type: str
    type: str
    format: str
    version: int
    asset_id: str
    asset_folder: str
    display_name: str
    created_at: datetime
    data: bytes
    width: int | None = None
    height: int | None = None
    tags: list[str] = field(default_factory=list)
    context: dict[str, str] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """The fixed-folder-mode folder: the public_id's directory."""
        return self.public_id.rsplit("/", 1)[0] if "/" in self.public_id else ""


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    api: str  # admin | search | upload | delivery


@dataclass
class _Forced:
    status: int
    retry_after_s: float
    retry_after_header: bool


class CloudinarySim:
    """Start with ``await sim.start()`` (returns the base URL); stop with ``await sim.close()``."""

    def __init__(
        self,
        *,
        cloud_name: str = "loraops-sim",
        api_key: str = "123456789012345",
        api_secret: str = "sim-secret-abcdefghijklmnop",
        hourly_limit: int = 500,
        media_limits: dict[str, int] | None = None,
    ) -> None:
        self.cloud_name = cloud_name
        self.api_key = api_key
        self.api_secret = api_secret
        self.hourly_limit = hourly_limit
        self.media_limits = dict(FREE_PLAN_LIMITS, **(media_limits or {}))
        self.assets: dict[tuple[str, str, str], SimAsset] = {}
        self.requests: list[RecordedRequest] = []
        self._cursors: dict[str, tuple[str, tuple[Any, ...]]] = {}
        self._forced: list[_Forced] = []
        self._fail_next: list[tuple[int, str | None]] = []
        self._used_this_hour = 0
        self._window_start = self._hour_start(datetime.now(UTC))
        self._chunks: dict[str, dict[int, bytes]] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> str:
        # Large enough that our own per-type size limits answer before aiohttp's body limit does.
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/v1_1/{cloud}/{tail:.*}", self._api)
        app.router.add_get("/{cloud}/{rtype}/{dtype}/v{version:\\d+}/{public_id:.+}", self._deliver)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def cloudinary_url(self) -> str:
        """A ``CLOUDINARY_URL`` that points the SDK here."""
        return (
            f"cloudinary://{self.api_key}:{self.api_secret}@{self.cloud_name}?upload_prefix={self.base_url}"
        )

    # -- seeding and failure injection -----------------------------------------------------------------

    def add_asset(
        self,
        public_id: str,
        data: bytes | None = None,
        *,
        asset_folder: str = "",
        tags: list[str] | tuple[str, ...] = (),
        context: dict[str, str] | None = None,
        resource_type: str = "image",
        format: str | None = None,
        seed: int | None = None,
    ) -> SimAsset:
        """Store an asset as if uploaded through the Media Library (dynamic folders)."""
        if data is None:
            data = generated_image(seed if seed is not None else next(self._ids) + 10_000)
        width = height = None
        fmt = format or ""
        if resource_type == "image":
            width, height, detected = _image_facts(data)
            fmt = format or detected
        return self._store(
            public_id,
            data,
            resource_type=resource_type,
            dtype="upload",
            fmt=fmt,
            asset_folder=asset_folder,
            tags=list(tags),
            context=dict(context or {}),
            width=width,
            height=height,
        )

    def seed_folder(
        self,
        asset_folder: str,
        count: int,
        *,
        tags: list[str] | tuple[str, ...] = (),
        context: dict[str, str] | None = None,
        first_seed: int = 0,
        public_id_prefix: str | None = None,
    ) -> list[SimAsset]:
        """``count`` distinct generated JPEGs in ``asset_folder`` (random public ids unless a prefix)."""
        out = []
        for i in range(count):
            if public_id_prefix is not None:
                public_id = f"{public_id_prefix}{i:04d}"
            else:
                public_id = secrets.token_hex(10)
            out.append(
                self.add_asset(
                    public_id,
                    generated_image(first_seed + i),
                    asset_folder=asset_folder,
                    tags=tags,
                    context=context,
                )
            )
        return out

    def force_rate_limit(
        self, count: int, *, status: int = 420, retry_after_s: float = 1.0, retry_after_header: bool = False
    ) -> None:
        """Answer the next ``count`` Admin/Search calls with a rate-limit error (420 or 429).

        ``retry_after_header`` adds ``Retry-After`` to 429s. Beware: urllib3 (under the SDK) then
        sleeps and retries by itself, so the caller never sees those 429s.
        """
        if status not in (420, 429):
            raise ValueError("Cloudinary rate-limits with 420 or 429")
        self._forced.extend(_Forced(status, retry_after_s, retry_after_header) for _ in range(count))

    def fail_next(self, status: int = 500, message: str = "General Error", *, json_body: bool = True) -> None:
        """Answer the next API call with ``status`` and the error JSON (any status, 409 or 502 alike).

        ``json_body=False`` answers with an HTML page instead, as a proxy in front of Cloudinary does.
        """
        self._fail_next.append((status, message if json_body else None))

    def admin_calls(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.api in ("admin", "search")]

    # -- helpers -----------------------------------------------------------------------------------------

    def _store(
        self,
        public_id: str,
        data: bytes,
        *,
        resource_type: str,
        dtype: str,
        fmt: str,
        asset_folder: str,
        tags: list[str],
        context: dict[str, str],
        width: int | None,
        height: int | None,
    ) -> SimAsset:
        key = (resource_type, dtype, public_id)
        previous = self.assets.get(key)
        version = max(int(time.time()), (previous.version + 1) if previous else 0)
        asset = SimAsset(
            public_id=public_id,
            resource_type=resource_type,
            type=dtype,
            format=fmt,
            version=version,
            asset_id=previous.asset_id if previous else secrets.token_hex(16),
            asset_folder=asset_folder,
            display_name=public_id.rsplit("/", 1)[-1],
            created_at=previous.created_at
            if previous
            else datetime.now(UTC) + timedelta(microseconds=next(self._ids)),
            data=data,
            width=width,
            height=height,
            tags=tags,
            context=context,
        )
        self.assets.pop(key, None)
        self.assets[key] = asset
        return asset

    def _secure_url(self, asset: SimAsset) -> str:
        suffix = f".{asset.format}" if asset.format and asset.resource_type != "raw" else ""
        return (
            f"{self.base_url}/{self.cloud_name}/{asset.resource_type}/{asset.type}/"
            f"v{asset.version}/{asset.public_id}{suffix}"
        )

    def _brief(
        self,
        asset: SimAsset,
        *,
        tags: bool,
        context: bool,
        search: bool = False,
        fields: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """One asset of a listing or search. ``fields`` (when given) takes precedence over ``tags`` and
        ``context``: only those fields, plus the ones Cloudinary always includes, are returned."""
        if fields is not None:
            tags, context = "tags" in fields, "context" in fields
        url = self._secure_url(asset)
        item: dict[str, Any] = {
            "asset_id": asset.asset_id,
            "public_id": asset.public_id,
            "asset_folder": asset.asset_folder,
            "display_name": asset.display_name,
            "format": asset.format,
            "version": asset.version,
            "resource_type": asset.resource_type,
            "type": asset.type,
            "created_at": asset.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bytes": len(asset.data),
            "width": asset.width,
            "height": asset.height,
            "backup": False,
            "access_mode": "public",
            "url": url,
            "secure_url": url,
        }
        if search:
            item.update(
                folder=asset.folder,
                filename=asset.display_name,
                uploaded_at=item["created_at"],
                aspect_ratio=round(asset.width / asset.height, 5) if asset.width and asset.height else None,
                pixels=(asset.width or 0) * (asset.height or 0),
                status="active",
                etag=hashlib.md5(asset.data).hexdigest(),
            )
        if tags:
            item["tags"] = list(asset.tags)
        if context and asset.context:
            # The Admin API nests custom context under "custom"; the Search API returns it flat.
            item["context"] = dict(asset.context) if search else {"custom": dict(asset.context)}
        if fields is not None:
            keep = fields | (_ALWAYS_IN_SEARCH if search else _ALWAYS_IN_LISTINGS)
            item = {k: v for k, v in item.items() if k in keep}
        return item

    @staticmethod
    def _hour_start(now: datetime) -> datetime:
        return now.replace(minute=0, second=0, microsecond=0)

    def _record(self, request: web.Request, body: Any, status: int, api: str) -> None:
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), body, status, api)
        )

    # -- routing ---------------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        cloud = request.match_info["cloud"]
        tail = request.match_info["tail"]
        upload = re.fullmatch(r"(image|raw|video|auto)/upload", tail)
        if request.method == "POST" and upload:
            return await self._upload(request, cloud, upload.group(1))
        api = "search" if tail == "resources/search" else "admin"
        body: Any = None
        if request.method == "POST" and request.can_read_body:
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = None
        status, payload, headers = self._admin(request, cloud, tail, body)
        self._record(request, body, status, api)
        if payload is None:
            return web.Response(status=status, text=_proxy_page(status), content_type="text/html")
        return web.json_response(payload, status=status, headers=headers)

    def _admin(
        self, request: web.Request, cloud: str, tail: str, body: Any
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        error = self._check_basic_auth(request, cloud)
        if error is not None:
            return 401, _error(error), {}
        if self._fail_next:
            status, message = self._fail_next.pop(0)
            return status, (_error(message) if message is not None else None), {}
        headers, limited = self._rate_limit()
        if limited is not None:
            return limited[0], _error(limited[1]), headers
        q = request.query
        try:
            if request.method == "GET" and tail == "resources/by_asset_folder":
                folder = q.get("asset_folder")
                if folder is None:
                    return 400, _error("Missing required parameter - asset_folder"), headers
                # "The asset folder name isn't case sensitive"; sub-folders are not included.
                found = [a for a in self.assets.values() if a.asset_folder.lower() == folder.lower()]
                order = _created_order(q.get("direction"))
                return 200, self._page(f"folder:{folder.lower()}", found, order, q, default=50), headers
            if tag_match := re.fullmatch(r"resources/(image|raw|video)/tags/(.+)", tail):
                rtype, tag = tag_match.groups()
                found = [a for a in self.assets.values() if a.resource_type == rtype and tag in a.tags]
                order = _created_order(q.get("direction"))
                return 200, self._page(f"tag:{rtype}:{tag}", found, order, q, default=10), headers
            if list_match := re.fullmatch(
                r"resources/(image|raw|video)(?:/(upload|private|authenticated))?", tail
            ):
                rtype, dtype = list_match.groups()
                prefix = q.get("prefix")
                found = [
                    a
                    for a in self.assets.values()
                    if a.resource_type == rtype
                    and (dtype is None or a.type == dtype)
                    and a.public_id.startswith(prefix or "")
                ]
                # With a prefix, "direction" is ignored and the assets come sorted by public ID.
                order = _PUBLIC_ID_ORDER if prefix else _created_order(q.get("direction"))
                key = f"list:{rtype}:{dtype}:{prefix}"
                return 200, self._page(key, found, order, q, default=10), headers
            if request.method == "POST" and tail == "resources/search":
                return 200, self._search(body or {}), headers
            if tail == "usage":
                return 200, self._usage(), headers
            if tail == "ping":
                return 200, {"status": "ok"}, headers
        except (_BadRequestError, SearchExpressionError) as exc:
            return 400, _error(str(exc)), headers
        return 404, _error(f"Resource not found - {tail}"), headers

    def _check_basic_auth(self, request: web.Request, cloud: str) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return "Must supply api_key"
        try:
            key, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return "Must supply api_key"
        if cloud != self.cloud_name:
            return f"Invalid cloud_name {cloud}"
        if key != self.api_key:
            return f"Unknown API key {key}"
        if not secrets.compare_digest(secret, self.api_secret):
            return "api_secret mismatch"
        return None

    def _rate_limit(self) -> tuple[dict[str, str], tuple[int, str] | None]:
        now = datetime.now(UTC)
        if self._hour_start(now) != self._window_start:
            self._window_start, self._used_this_hour = self._hour_start(now), 0
        reset = self._window_start + timedelta(hours=1)
        if self._forced:
            forced = self._forced.pop(0)
            reset_at = now + timedelta(seconds=forced.retry_after_s)
            headers = _limit_headers(self.hourly_limit, 0, reset_at)
            if forced.status == 429 and forced.retry_after_header:
                headers["Retry-After"] = str(max(1, round(forced.retry_after_s)))
            return headers, (forced.status, _rate_limit_message(self.hourly_limit, reset_at))
        if self._used_this_hour >= self.hourly_limit:
            return _limit_headers(self.hourly_limit, 0, reset), (
                420,
                _rate_limit_message(self.hourly_limit, reset),
            )
        self._used_this_hour += 1
        return _limit_headers(self.hourly_limit, self.hourly_limit - self._used_this_hour, reset), None

    def _page(
        self, query_key: str, items: list[SimAsset], order: _Order, q: Any, *, default: int
    ) -> dict[str, Any]:
        size = _max_results(q.get("max_results"), default)
        page, cursor = self._keyset_page(query_key, items, order, q.get("next_cursor"), size)
        result: dict[str, Any] = {
            "resources": [
                self._brief(
                    a,
                    tags=q.get("tags") == "true",
                    context=q.get("context") == "true",
                    fields=_field_list(q.get("fields")),
                )
                for a in page
            ]
        }
        if cursor is not None:
            result["next_cursor"] = cursor
        return result

    def _keyset_page(
        self, query_key: str, items: list[SimAsset], order: _Order, cursor: str | None, size: int
    ) -> tuple[list[SimAsset], str | None]:
        """One page after ``cursor``, and the cursor of the next page if there is more.

        A cursor remembers the sort key of the last asset it returned, not an offset, so assets
        uploaded or deleted between two pages neither repeat nor push others out of the listing.
        """
        ordered = order.sort(items)
        if cursor:
            known = self._cursors.get(cursor)
            if known is None or known[0] != query_key:
                raise _BadRequestError("Invalid next_cursor")
            last = known[1]
            ordered = [a for a in ordered if order.after(order.key(a), last)]
        page = ordered[:size]
        if len(ordered) <= size or size == 0:
            return page, None
        token = secrets.token_hex(16)
        self._cursors[token] = (query_key, order.key(page[-1]))
        return page, token

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        expression = str(body.get("expression") or "")
        predicate = compile_expression(expression)
        items = [a for a in self.assets.values() if predicate(a)]
        keys: list[tuple[str, bool]] = []
        for spec in body.get("sort_by") or []:
            if not isinstance(spec, dict) or len(spec) != 1:
                raise _BadRequestError("Invalid sort_by")
            ((key, direction),) = spec.items()
            if key not in _SORTABLE:
                raise _BadRequestError(f"Unsupported sort_by field {key}")
            keys.append((key, direction != "asc"))
        order = _Order(tuple(keys) or (("created_at", True),))  # newest first unless asked
        with_fields = set(body.get("with_field") or [])
        size = _max_results(body.get("max_results"), 50, allow_zero=True)
        query_key = "search:" + json.dumps(
            {k: v for k, v in body.items() if k not in ("next_cursor", "max_results")}, sort_keys=True
        )
        page, cursor = self._keyset_page(query_key, items, order, body.get("next_cursor"), size)
        result: dict[str, Any] = {
            "total_count": len(items),
            "time": max(1, int((time.perf_counter() - started) * 1000)),
            "resources": [
                self._brief(
                    a,
                    tags="tags" in with_fields,
                    context="context" in with_fields,
                    search=True,
                    fields=_field_list(body.get("fields")),
                )
                for a in page
            ],
        }
        if cursor is not None:
            result["next_cursor"] = cursor
        return result

    def _usage(self) -> dict[str, Any]:
        storage = sum(len(a.data) for a in self.assets.values())
        reset = self._window_start + timedelta(hours=1)
        return {
            "plan": "Free",
            "last_updated": datetime.now(UTC).strftime("%Y-%m-%d"),
            "date_requested": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "transformations": {"usage": 0, "credits_usage": 0.0},
            "objects": {"usage": len(self.assets)},
            "bandwidth": {"usage": 0, "credits_usage": 0.0},
            "storage": {"usage": storage, "credits_usage": round(storage / 1e9, 4)},
            "credits": {"usage": round(storage / 1e9, 4), "limit": 25.0, "used_percent": 0.0},
            "requests": len(self.requests),
            "resources": len(self.assets),
            "derived_resources": 0,
            "media_limits": dict(self.media_limits),
            "rate_limit_allowed": self.hourly_limit,
            "rate_limit_reset_at": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "rate_limit_remaining": self.hourly_limit - self._used_this_hour,
        }

    # -- upload ------------------------------------------------------------------------------------------

    async def _upload(self, request: web.Request, cloud: str, rtype: str) -> web.StreamResponse:
        form = await request.post()
        params: dict[str, str] = {}
        lists: dict[str, list[str]] = {}
        file_data: bytes | None = None
        file_name = ""
        for key, value in form.items():
            if key == "file":
                if isinstance(value, web.FileField):
                    file_data = value.file.read()
                    file_name = value.filename or ""
                else:
                    file_data = (
                        str(value).encode() if not isinstance(value, bytes | bytearray) else bytes(value)
                    )
            elif key.endswith("[]"):
                lists.setdefault(key[:-2], []).append(str(value))
            else:
                params[key] = str(value)
        recorded = {k: v for k, v in params.items() if k != "signature"} | {
            k: ",".join(v) for k, v in lists.items()
        }
        status, payload = self._handle_upload(request, cloud, rtype, params, lists, file_data, file_name)
        self._record(request, recorded, status, "upload")
        return web.json_response(payload, status=status)

    def _handle_upload(
        self,
        request: web.Request,
        cloud: str,
        rtype: str,
        params: dict[str, str],
        lists: dict[str, list[str]],
        file_data: bytes | None,
        file_name: str,
    ) -> tuple[int, dict[str, Any]]:
        if cloud != self.cloud_name:
            return 401, _error(f"Invalid cloud_name {cloud}")
        if self._fail_next:
            status, message = self._fail_next.pop(0)
            return status, _error(message or "General Error")
        api_key = params.get("api_key")
        signature = params.get("signature")
        if not signature:
            if "upload_preset" not in params:
                return 400, _error("Upload preset must be specified when using unsigned upload")
            return 400, _error(f"Upload preset not found {params['upload_preset']}")
        if api_key != self.api_key:
            return 401, _error(f"Unknown API key {api_key}")
        to_sign_params: dict[str, str] = {
            k: v
            for k, v in params.items()
            if k not in ("signature", "api_key", "file", "resource_type", "cloud_name")
        }
        to_sign_params.update({k: ",".join(v) for k, v in lists.items()})
        to_sign = "&".join(sorted(f"{k}={v}".replace("&", "%26") for k, v in to_sign_params.items() if v))
        algorithm = hashlib.sha256 if len(signature) == 64 else hashlib.sha1
        expected = algorithm((to_sign + self.api_secret).encode()).hexdigest()
        if not secrets.compare_digest(expected, signature):
            return 401, _error(f"Invalid Signature {signature}. String to sign - '{to_sign}'.")
        try:
            stamp = int(params.get("timestamp", ""))
        except ValueError:
            return 400, _error("Missing required parameter - timestamp")
        if time.time() - stamp > 3600:
            reported = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            return 400, _error(f"Stale request - reported time is {reported} which is more than 1 hour ago")
        if file_data is None:
            return 400, _error("Missing required parameter - file")

        kind = rtype
        if kind == "auto":
            kind = "image" if _image_facts_or_none(file_data) else "raw"
        content_range = request.headers.get("Content-Range")
        total_size = len(file_data)
        if content_range:
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", content_range.strip())
            upload_id = request.headers.get("X-Unique-Upload-Id", "")
            if not match or not upload_id:
                return 400, _error("Invalid Content-Range header")
            start, end, total_size = (int(g) for g in match.groups())
            limit = self.media_limits.get(f"{kind}_max_size_bytes")
            if limit is not None and total_size > limit:
                self._chunks.pop(upload_id, None)
                return 400, _error(_too_large(total_size, limit))
            parts = self._chunks.setdefault(upload_id, {})
            parts[start] = file_data
            if end + 1 < total_size:
                return 200, {"done": False, "bytes": end + 1}
            file_data = b"".join(parts[k] for k in sorted(parts))
            self._chunks.pop(upload_id, None)
            if len(file_data) != total_size:
                return 400, _error("Chunked upload is incomplete")
        limit = self.media_limits.get(f"{kind}_max_size_bytes")
        if limit is not None and len(file_data) > limit:
            return 400, _error(_too_large(len(file_data), limit))

        width = height = None
        fmt = ""
        if kind == "image":
            facts = _image_facts_or_none(file_data)
            if facts is None:
                return 400, _error("Invalid image file")
            width, height, fmt = facts
        elif "." in file_name and kind == "raw":
            fmt = ""
        folder = params.get("folder", "").strip("/")
        public_id = params.get("public_id") or secrets.token_hex(10)
        if kind == "raw" and "." not in public_id.rsplit("/", 1)[-1] and "." in file_name:
            public_id += "." + file_name.rsplit(".", 1)[-1]  # raw public ids keep their extension
        if folder:
            public_id = f"{folder}/{public_id}"
        asset_folder = params.get("asset_folder", folder)
        key = (kind, "upload", public_id)
        existing = self.assets.get(key)
        if existing is not None and params.get("overwrite") in ("0", "false"):
            result = self._upload_result(existing, file_name)
            result["existing"] = True
            return 200, result
        tags = [t for t in params.get("tags", "").split(",") if t] + lists.get("tags", [])
        context = dict(part.split("=", 1) for part in params.get("context", "").split("|") if "=" in part)
        asset = self._store(
            public_id,
            file_data,
            resource_type=kind,
            dtype="upload",
            fmt=fmt,
            asset_folder=asset_folder,
            tags=tags,
            context=context,
            width=width,
            height=height,
        )
        result = self._upload_result(asset, file_name)
        result["overwritten"] = existing is not None
        return 200, result

    def _upload_result(self, asset: SimAsset, file_name: str) -> dict[str, Any]:
        url = self._secure_url(asset)
        return {
            "asset_id": asset.asset_id,
            "public_id": asset.public_id,
            "asset_folder": asset.asset_folder,
            "display_name": asset.display_name,
            "version": asset.version,
            "version_id": secrets.token_hex(16),
            "signature": secrets.token_hex(20),
            "width": asset.width,
            "height": asset.height,
            "format": asset.format,
            "resource_type": asset.resource_type,
            "created_at": asset.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tags": list(asset.tags),
            "bytes": len(asset.data),
            "type": asset.type,
            "etag": hashlib.md5(asset.data).hexdigest(),
            "placeholder": False,
            "url": url,
            "secure_url": url,
            "access_mode": "public",
            "original_filename": file_name.rsplit(".", 1)[0] if file_name else "file",
        }

    # -- delivery ----------------------------------------------------------------------------------------

    async def _deliver(self, request: web.Request) -> web.StreamResponse:
        cloud = request.match_info["cloud"]
        rtype = request.match_info["rtype"]
        dtype = request.match_info["dtype"]
        version = int(request.match_info["version"])
        path = request.match_info["public_id"]
        asset = self.assets.get((rtype, dtype, path))
        if asset is None and "." in path:
            asset = self.assets.get((rtype, dtype, path.rsplit(".", 1)[0]))
        status = 200
        if cloud != self.cloud_name or asset is None or asset.version != version:
            status = 404
        self._record(request, None, status, "delivery")
        if status == 404 or asset is None:
            return web.Response(status=404, headers={"X-Cld-Error": "Resource not found"})
        content_type = {
            "jpg": "image/jpeg",
            "jpeg": "image/jpeg",
            "png": "image/png",
            "webp": "image/webp",
            "gif": "image/gif",
        }.get(asset.format, "application/octet-stream")
        return web.Response(body=asset.data, content_type=content_type)


class _BadRequestError(Exception):
    pass


def _sort_value(asset: SimAsset, field: str) -> Any:
    match field:
        case "public_id":
            return asset.public_id
        case "created_at" | "uploaded_at":
            return asset.created_at
        case "bytes":
            return len(asset.data)
        case "filename" | "display_name":
            return asset.display_name
        case "width":
            return asset.width or 0
        case "height":
            return asset.height or 0
    raise _BadRequestError(f"Unsupported sort_by field {field}")


# "The following fields are always included in the response" (Admin API reference, ``fields``; the
# asset-management SDK's search parameters).
_ALWAYS_IN_LISTINGS = frozenset({"public_id", "asset_id"})
_ALWAYS_IN_SEARCH = frozenset(
    {"public_id", "asset_id", "asset_folder", "created_at", "status", "type", "resource_type"}
)


def _field_list(raw: Any) -> frozenset[str] | None:
    """``fields`` as a comma-separated string (Admin API query) or a list (Search body); None: absent."""
    if raw in (None, "", []):
        return None
    parts = raw.split(",") if isinstance(raw, str) else [str(p) for p in raw]
    return frozenset(p.strip() for p in parts if p.strip())


_SORTABLE = ("public_id", "created_at", "uploaded_at", "bytes", "filename", "display_name", "width", "height")


@dataclass(frozen=True)
class _Order:
    """A listing's order: (field, descending) pairs, then the asset id so that the order is total."""

    fields: tuple[tuple[str, bool], ...]

    def key(self, asset: SimAsset) -> tuple[Any, ...]:
        return (*(_sort_value(asset, f) for f, _ in self.fields), asset.asset_id)

    def sort(self, items: list[SimAsset]) -> list[SimAsset]:
        ordered = sorted(items, key=lambda a: a.asset_id)
        for name, descending in reversed(self.fields):  # stable sorts, least significant first
            ordered.sort(key=lambda a, f=name: _sort_value(a, f), reverse=descending)
        return ordered

    def after(self, key: tuple[Any, ...], last: tuple[Any, ...]) -> bool:
        """Whether an asset with ``key`` comes after the one with ``last`` in this order."""
        directions = [descending for _, descending in self.fields] + [False]
        for mine, theirs, descending in zip(key, last, directions, strict=True):
            if mine != theirs:
                return (mine < theirs) if descending else (mine > theirs)
        return False


_PUBLIC_ID_ORDER = _Order((("public_id", False),))


def _created_order(direction: str | None) -> _Order:
    """Admin listings: by creation time, newest first unless ``direction`` is ``asc`` or ``1``."""
    if direction not in (None, "", "asc", "1", "desc", "-1"):
        raise _BadRequestError(f"Invalid direction {direction}")
    return _Order((("created_at", direction not in ("asc", "1")),))


def _proxy_page(status: int) -> str:
    reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}.get(status, "Error")
    title = f"{status} {reason}"
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message}}


def _too_large(size: int, limit: int) -> str:
    return (
        f"File size too large. Got {size}. Maximum is {limit}. Upgrade your plan to enjoy higher limits "
        "https://www.cloudinary.com/pricing/upgrades/file-limit"
    )


def _limit_headers(limit: int, remaining: int, reset: datetime) -> dict[str, str]:
    return {
        "X-FeatureRateLimit-Limit": str(limit),
        "X-FeatureRateLimit-Remaining": str(max(0, remaining)),
        "X-FeatureRateLimit-Reset": email.utils.format_datetime(reset.astimezone(UTC), usegmt=True),
    }


def _rate_limit_message(limit: int, reset: datetime) -> str:
    return (
        f"Rate Limit Exceeded. Limit of {limit} api operations reached. "
        f"Try again on {reset:%Y-%m-%d %H:%M:%S} UTC"
    )


def _max_results(raw: Any, default: int, *, allow_zero: bool = False) -> int:
    """1..500 (more is capped). The Search API also takes 0: only ``total_count``, no assets."""
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise _BadRequestError("Invalid max_results") from None
    if value < (0 if allow_zero else 1):
        raise _BadRequestError("Invalid max_results")
    return min(value, 500)


def _image_facts(data: bytes) -> tuple[int, int, str]:
    facts = _image_facts_or_none(data)
    if facts is None:
        raise ValueError("not an image")
    return facts


def _image_facts_or_none(data: bytes) -> tuple[int, int, str] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = (image.format or "").lower()
            return image.width, image.height, {"jpeg": "jpg"}.get(fmt, fmt)
    except (UnidentifiedImageError, OSError):
        return None
