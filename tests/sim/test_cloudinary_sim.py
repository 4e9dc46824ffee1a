"""The Cloudinary simulator, driven by the real ``cloudinary`` SDK (raw HTTP where the SDK hides things)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import io
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from cloudinary import Search, api, uploader
from cloudinary import exceptions as cx

from sim.cloudinary import CloudinarySim, generated_image


@pytest.fixture
async def sim() -> AsyncIterator[CloudinarySim]:
    server = CloudinarySim()
    await server.start()
    yield server
    await server.close()


def creds(sim: CloudinarySim, **override: str) -> dict[str, Any]:
    options = {
        "cloud_name": sim.cloud_name,
        "api_key": sim.api_key,
        "api_secret": sim.api_secret,
        "upload_prefix": sim.base_url,
    }
    options.update(override)
    return options


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    # The SDK blocks; the simulator runs on this event loop.
    return await asyncio.to_thread(fn, *args, **kwargs)


def basic(sim: CloudinarySim) -> dict[str, str]:
    token = base64.b64encode(f"{sim.api_key}:{sim.api_secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_listing_by_asset_folder_pages_with_next_cursor(sim: CloudinarySim) -> None:
    seeded = sim.seed_folder("elena", 25, tags=["elena"], context={"caption": "hi"})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        response = await call(
            api.resources_by_asset_folder,
            "elena",
            max_results=10,
            next_cursor=cursor,
            direction="asc",
            tags=True,
            context=True,
            **creds(sim),
        )
        pages += 1
        seen += [r["public_id"] for r in response["resources"]]
        first = response["resources"][0]
        assert first["tags"] == ["elena"] and first["context"] == {"custom": {"caption": "hi"}}
        assert response.rate_limit_allowed == 500 and response.rate_limit_remaining is not None
        cursor = response.get("next_cursor")
        if not cursor:
            break
    assert pages == 3
    assert seen == [a.public_id for a in seeded]
    # Tags and context only when asked; default page size 50 for asset folders (10 for the other
    # listings); default order newest first; the folder name is not case sensitive.
    plain = await call(api.resources_by_asset_folder, "Elena", **creds(sim))
    assert "tags" not in plain["resources"][0] and "context" not in plain["resources"][0]
    assert len(plain["resources"]) == 25 and plain["resources"][0]["public_id"] == seeded[-1].public_id
    assert "next_cursor" not in plain


async def test_listing_by_tag_and_prefix(sim: CloudinarySim) -> None:
    sim.seed_folder("a", 3, tags=["cat"])
    for i in range(4):
        sim.add_asset(f"datasets/dog/{i}", seed=i, tags=["dog"])
    by_tag = await call(api.resources_by_tag, "dog", max_results=500, **creds(sim))
    assert len(by_tag["resources"]) == 4
    by_prefix = await call(api.resources, type="upload", prefix="datasets/dog/", **creds(sim))
    assert sorted(r["public_id"] for r in by_prefix["resources"]) == [f"datasets/dog/{i}" for i in range(4)]
    paths = [r.path for r in sim.requests]
    assert f"/v1_1/{sim.cloud_name}/resources/image/tags/dog" in paths
    assert f"/v1_1/{sim.cloud_name}/resources/image/upload" in paths


async def test_search_expressions_and_paging(sim: CloudinarySim) -> None:
    sim.seed_folder("elena", 6, tags=["close"], first_seed=0)
    sim.seed_folder("elena", 3, tags=["far"], first_seed=10)
    sim.seed_folder("other", 2, tags=["close"], first_seed=20)

    def run(expression: str, cursor: str | None = None, size: int = 50) -> dict[str, Any]:
        search = (
            Search().expression(expression).with_field("tags").max_results(size).sort_by("public_id", "asc")
        )
        if cursor:
            search = search.next_cursor(cursor)
        return search.execute(**creds(sim))

    first = await call(run, 'asset_folder="elena" AND tags=close', None, 4)
    assert (
        first["total_count"] == 6
        and len(first["resources"]) == 4
        and first["resources"][0]["tags"] == ["close"]
    )
    second = await call(run, 'asset_folder="elena" AND tags=close', first["next_cursor"], 4)
    assert len(second["resources"]) == 2 and "next_cursor" not in second
    ids = [r["public_id"] for r in first["resources"] + second["resources"]]
    assert ids == sorted(ids)
    assert (await call(run, "tags=close"))["total_count"] == 8
    assert (await call(run, "asset_folder:elena AND resource_type:image"))["total_count"] == 9
    with pytest.raises(cx.BadRequest, match="Unsupported search field: colour"):
        await call(run, "colour=red")
    with pytest.raises(cx.BadRequest, match="Invalid next_cursor"):
        await call(run, "tags=far", first["next_cursor"])  # a cursor of another query


async def test_basic_auth_errors_are_the_real_shapes(sim: CloudinarySim) -> None:
    with pytest.raises(cx.AuthorizationRequired, match="Error 401 - Unknown API key 999"):
        await call(api.ping, **creds(sim, api_key="999"))
    with pytest.raises(cx.AuthorizationRequired, match="Error 401 - api_secret mismatch"):
        await call(api.ping, **creds(sim, api_secret="wrong"))
    with pytest.raises(cx.AuthorizationRequired, match="Invalid cloud_name nope"):
        await call(api.ping, **creds(sim, cloud_name="nope"))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sim.base_url}/v1_1/{sim.cloud_name}/ping") as response,
    ):
        assert response.status == 401
        assert await response.json() == {"error": {"message": "Must supply api_key"}}


async def test_hourly_rate_limit_headers_and_420(sim: CloudinarySim) -> None:
    sim.hourly_limit = 2
    url = f"{sim.base_url}/v1_1/{sim.cloud_name}/resources/image/tags/x"
    async with aiohttp.ClientSession(headers=basic(sim)) as http:
        statuses, remaining = [], []
        reset, body = None, {}
        for _ in range(3):
            async with http.get(url) as response:
                statuses.append(response.status)
                remaining.append(response.headers["X-FeatureRateLimit-Remaining"])
                assert response.headers["X-FeatureRateLimit-Limit"] == "2"
                reset = email.utils.parsedate_to_datetime(response.headers["X-FeatureRateLimit-Reset"])
                body = await response.json()
    assert statuses == [200, 200, 420] and remaining == ["1", "0", "0"]
    assert reset is not None and reset.minute == 0 and reset.second == 0
    assert body["error"]["message"].startswith(
        "Rate Limit Exceeded. Limit of 2 api operations reached. Try again on "
    )
    with pytest.raises(cx.RateLimited, match="Error 420 - Rate Limit Exceeded"):
        await call(api.resources_by_tag, "x", **creds(sim))


async def test_forced_rate_limits_429_and_urllib3_retry_after(sim: CloudinarySim) -> None:
    sim.force_rate_limit(1, status=429)
    with pytest.raises(cx.RateLimited, match="Error 429"):
        await call(api.ping, **creds(sim))
    assert (await call(api.ping, **creds(sim)))["status"] == "ok"
    # With Retry-After, urllib3 under the SDK waits and retries by itself: the caller sees success.
    sim.force_rate_limit(1, status=429, retry_after_s=0.1, retry_after_header=True)
    assert (await call(api.ping, **creds(sim)))["status"] == "ok"
    assert [r.status for r in sim.admin_calls()] == [429, 200, 429, 200]
    with pytest.raises(ValueError):
        sim.force_rate_limit(1, status=503)


async def test_failure_injection(sim: CloudinarySim) -> None:
    sim.fail_next(500, "General Error")
    with pytest.raises(cx.GeneralError, match="Error 500 - General Error"):
        await call(api.ping, **creds(sim))


async def test_signed_upload_and_delivery(sim: CloudinarySim) -> None:
    photo = generated_image(3)
    result = await call(
        uploader.upload,
        ("me.jpg", photo),
        asset_folder="elena",
        public_id="me",
        tags=["a", "b"],
        context={"caption": "x"},
        **creds(sim),
    )
    assert result["public_id"] == "me" and result["format"] == "jpg" and result["width"] == 256
    assert result["bytes"] == len(photo) and result["tags"] == ["a", "b"]
    upload = next(r for r in sim.requests if r.api == "upload")
    assert upload.path == f"/v1_1/{sim.cloud_name}/image/upload"
    assert upload.body["tags"] == "a,b" and upload.body["context"] == "caption=x" and upload.body["timestamp"]
    async with aiohttp.ClientSession() as http, http.get(result["secure_url"]) as response:
        assert response.status == 200 and await response.read() == photo
    listed = await call(api.resources_by_asset_folder, "elena", context=True, **creds(sim))
    assert listed["resources"][0]["context"] == {"custom": {"caption": "x"}}


async def test_upload_signature_is_verified_like_cloudinary(sim: CloudinarySim) -> None:
    timestamp = str(int(time.time()))
    to_sign = f"public_id=x&tags=a&b&timestamp={timestamp}".replace("&b", "%26b")
    good = hashlib.sha1((to_sign + sim.api_secret).encode()).hexdigest()

    async def post(signature: str, stamp: str = timestamp) -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        for key, value in {
            "public_id": "x",
            "tags": "a&b",
            "timestamp": stamp,
            "api_key": sim.api_key,
            "signature": signature,
        }.items():
            form.add_field(key, value)
        form.add_field("file", b"raw bytes", filename="x.bin")
        url = f"{sim.base_url}/v1_1/{sim.cloud_name}/raw/upload"
        async with aiohttp.ClientSession() as http, http.post(url, data=form) as response:
            return response.status, await response.json()

    status, body = await post(good)
    assert status == 200 and body["public_id"] == "x.bin" and body["resource_type"] == "raw"
    status, body = await post("0" * 40)
    assert status == 401
    assert body["error"]["message"] == f"Invalid Signature {'0' * 40}. String to sign - '{to_sign}'."
    old = str(int(time.time()) - 7200)
    stale = hashlib.sha1((to_sign.replace(timestamp, old) + sim.api_secret).encode()).hexdigest()
    status, body = await post(stale, old)
    assert status == 400 and body["error"]["message"].startswith("Stale request - reported time is")


async def test_raw_file_size_limit_like_the_free_plan(sim: CloudinarySim) -> None:
    usage = await call(api.usage, **creds(sim))
    assert usage["media_limits"]["raw_max_size_bytes"] == 10 * 1024 * 1024
    too_big = b"\x00" * (10 * 1024 * 1024 + 1)
    with pytest.raises(cx.BadRequest, match=r"File size too large\. Got 10485761\. Maximum is 10485760\."):
        await call(uploader.upload, ("lora.safetensors", too_big), resource_type="raw", **creds(sim))
    # Chunked uploads do not lift the per-file maximum…
    with pytest.raises(cx.BadRequest, match="File size too large"):
        await call(
            uploader.upload_large,
            io.BytesIO(too_big),
            resource_type="raw",
            chunk_size=5_000_000,
            filename="lora.safetensors",
            **creds(sim),
        )
    # …and below it they are reassembled.
    payload = bytes(range(256)) * 40_000  # ~10 MB minus a little
    result = await call(
        uploader.upload_large,
        io.BytesIO(payload),
        resource_type="raw",
        chunk_size=4_000_000,
        public_id="loras/ok.safetensors",
        **creds(sim),
    )
    assert result["bytes"] == len(payload)
    async with aiohttp.ClientSession() as http, http.get(result["secure_url"]) as response:
        assert await response.read() == payload
    assert sum(1 for r in sim.requests if r.api == "upload" and r.status == 200) == 3


# -- Search expressions ----------------------------------------------------------------------------------


def noise_png(seed: int, size: tuple[int, int]) -> bytes:
    """An incompressible PNG (random pixels): about width × height × 3 bytes."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


NOW = datetime.now(UTC)


@pytest.fixture
async def library() -> AsyncIterator[CloudinarySim]:
    """Six assets whose tags, context, folders, sizes and ages the grammar table below relies on."""
    server = CloudinarySim()
    await server.start()
    facts = [
        # public_id, data, asset_folder, tags, context, resource_type, age
        ("elena/portrait_01", generated_image(1), "elena", ["elena", "close-up"],
         {"caption": "smiling woman", "alt": "face"}, "image", timedelta(days=2)),
        ("elena/portrait_02", generated_image(2, size=(1024, 768)), "elena", ["elena", "full body"],
         {}, "image", timedelta(days=10)),
        ("elena/beach", noise_png(3, (800, 600)), "elena/holiday", ["elena", "beach"],
         {}, "image", timedelta(days=40)),
        ("marco/headshot", generated_image(4, size=(2048, 1536)), "marco", ["marco", "close-up"],
         {"caption": "Marco at the beach"}, "image", timedelta(hours=1)),
        ("elenara/x", generated_image(5, size=(300, 300)), "elenara", ["elenara"],
         {}, "image", timedelta(days=21)),
        ("docs/readme.txt", b"notes about elena", "docs", ["elena"], {}, "raw", timedelta(days=5)),
    ]  # fmt: skip
    for public_id, data, folder, tags, context, rtype, age in facts:
        asset = server.add_asset(
            public_id, data, asset_folder=folder, tags=tags, context=context, resource_type=rtype
        )
        asset.created_at = NOW - age
    yield server
    await server.close()


P1, P2, BEACH, MARCO, ELENARA, README = (
    "elena/portrait_01",
    "elena/portrait_02",
    "elena/beach",
    "marco/headshot",
    "elenara/x",
    "docs/readme.txt",
)
ELENA_TAGGED = {P1, P2, BEACH, README}

GRAMMAR: list[tuple[str, set[str]]] = [
    # ":" matches words, "=" the whole value
    ("tags=elena", ELENA_TAGGED),
    ("tags:elena", ELENA_TAGGED),
    ("tags=close", set()),
    ("tags:close", {P1, MARCO}),
    ("tags=close-up", {P1, MARCO}),
    ('tags:"full body"', {P2}),
    ("tags=full\\ body", {P2}),
    ("tags:body", {P2}),
    ("tags=full", set()),
    # wildcards
    ("tags:elen*", ELENA_TAGGED | {ELENARA}),
    ("public_id:elena/*", {P1, P2, BEACH}),
    ("public_id=elena/portrait_*", {P1, P2}),
    ("public_id:portrait", {P1, P2}),
    # Boolean operators, ALL CAPS; side by side means AND; AND binds tighter than OR
    ("tags=elena OR tags=marco", ELENA_TAGGED | {MARCO}),
    ("tags=elena || tags=marco", ELENA_TAGGED | {MARCO}),
    ("tags=elena && tags=beach", {BEACH}),
    ("tags=elena AND NOT tags=beach", {P1, P2, README}),
    ("tags=elena -tags=beach", {P1, P2, README}),
    ("tags=elena !tags=beach", {P1, P2, README}),
    ("tags=elena +tags=beach", {BEACH}),
    ("NOT tags=elena", {MARCO, ELENARA}),
    ("tags=elena tags=close-up", {P1}),
    ("(tags=marco OR tags=beach) AND resource_type:image", {BEACH, MARCO}),
    ("tags=marco OR tags=beach AND width>=1000", {MARCO}),
    ("(tags=marco OR tags=beach) AND width>=1000", {MARCO}),
    ("tags=elena AND (NOT tags=beach OR width>700) AND resource_type=image", {P1, P2, BEACH}),
    ("tags:elena or tags:marco", set()),  # lower-case "or" is a word to look for, not an operator
    # sizes and dimensions
    ("bytes>1mb", {BEACH}),
    ("bytes>1m", {BEACH}),
    ("bytes<=500kb AND resource_type:image", {P1, P2, MARCO, ELENARA}),
    ("width>=1024", {P2, MARCO}),
    ("width>1024", {MARCO}),
    ("width:[256 TO 1024]", {P1, P2, BEACH, ELENARA}),
    ("width:{256 TO 1024}", {BEACH, ELENARA}),
    ("width:[1000 TO *]", {P2, MARCO}),
    ('aspect_ratio="4:3"', {P2, BEACH, MARCO}),
    ("pixels>1000000", {MARCO}),
    # dates, relative and absolute
    ("created_at>1d", {MARCO}),
    ("uploaded_at>3d", {P1, MARCO}),
    ("created_at>4w", {P1, P2, MARCO, ELENARA, README}),
    ("created_at<4w", {BEACH}),
    ("created_at:[4w TO 1w]", {P2, ELENARA}),
    (f'created_at>"{(NOW - timedelta(days=15)).strftime("%Y-%m-%dT%H:%M:%SZ")}"', {P1, P2, MARCO, README}),
    (f"created_at<{(NOW - timedelta(days=30)).date().isoformat()}", {BEACH}),
    # folders, context, types, free text
    ("folder:elena", {P1, P2, BEACH}),
    ("asset_folder=elena", {P1, P2}),
    ("asset_folder:holiday", {BEACH}),
    ("asset_folder=Elena", set()),
    ("context.caption:smiling", {P1}),
    ('context.caption="smiling woman"', {P1}),
    ("context.caption=smiling", set()),
    ("context.alt=face", {P1}),
    ("resource_type:raw", {README}),
    ("format=jpg", {P1, P2, MARCO, ELENARA}),
    ("beach", {BEACH, MARCO}),
    ('"at the beach"', {MARCO}),
    ("", ELENA_TAGGED | {MARCO, ELENARA}),
]


def test_the_library_is_what_the_grammar_table_assumes(library: CloudinarySim) -> None:
    sizes = {a.public_id: len(a.data) for a in library.assets.values()}
    assert sizes[BEACH] > 1024 * 1024
    assert all(size <= 500 * 1000 for pid, size in sizes.items() if pid != BEACH)


@pytest.mark.parametrize(("expression", "expected"), GRAMMAR, ids=[e or "(empty)" for e, _ in GRAMMAR])
async def test_search_grammar(library: CloudinarySim, expression: str, expected: set[str]) -> None:
    def run() -> dict[str, Any]:
        return Search().expression(expression).max_results(500).execute(**creds(library))

    result = await call(run)
    found = {r["public_id"] for r in result["resources"]}
    assert found == expected
    assert result["total_count"] == len(expected)


MALFORMED = [
    ("tags=elena AND", "'AND' at position 12 has nothing after it"),
    ("tags=elena OR", "'OR' at position 12 has nothing after it"),
    ("AND tags=elena", "unexpected 'AND' at position 1"),
    ("NOT", "'NOT'"),
    ("(tags=elena", "missing ')'"),
    ("tags=elena)", "unexpected ')'"),
    ("()", "empty parentheses"),
    ("tags: elena", "has no value"),
    ("created_at>2026-04-24T00:00:00Z", "unexpected ':'"),  # a date-time must be quoted
    ("created_at>yesterday", "neither an ISO 8601 date nor a relative time"),
    ("bytes>lots", "'bytes' is a number"),
    ("width:[100 TO]", "a value on each side of TO"),
    ("width:[100 200]", "needs 'low TO high'"),
    ("width:[100 TO 200", "is not closed"),
    ('tags:"open', "unterminated quoted value"),
    ("tags>5", "'tags' is text"),
    ("tags:[a TO b]", "ranges apply to numbers and dates"),
    ("colour=red", "Unsupported search field: colour"),
    ("Tags=elena", "Unsupported search field: Tags"),  # field names are case sensitive
    ("tags=a & b", "reserved character '&'"),
    ("tags=elena~", "reserved character '~'"),
]


@pytest.mark.parametrize(("expression", "message"), MALFORMED, ids=[e for e, _ in MALFORMED])
async def test_malformed_expressions_are_400_with_the_error_json(
    library: CloudinarySim, expression: str, message: str
) -> None:
    def run() -> dict[str, Any]:
        return Search().expression(expression).execute(**creds(library))

    with pytest.raises(cx.BadRequest, match="Error 400 - .*" + re.escape(message)):
        await call(run)
    assert library.requests[-1].status == 400


async def test_a_malformed_expression_answers_the_error_shape_over_http(library: CloudinarySim) -> None:
    url = f"{library.base_url}/v1_1/{library.cloud_name}/resources/search"
    async with (
        aiohttp.ClientSession(headers=basic(library)) as http,
        http.post(url, json={"expression": "(tags=elena"}) as response,
    ):
        assert response.status == 400
        body = await response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message"}
    assert "missing ')'" in body["error"]["message"]


async def test_search_returns_tags_and_context_only_when_asked(library: CloudinarySim) -> None:
    def run(*fields: str) -> dict[str, Any]:
        search = Search().expression("public_id=elena/portrait_01")
        for name in fields:
            search = search.with_field(name)
        return search.execute(**creds(library))

    plain = (await call(run))["resources"][0]
    assert "tags" not in plain and "context" not in plain
    full = (await call(run, "tags", "context"))["resources"][0]
    assert full["tags"] == ["elena", "close-up"]
    assert full["context"] == {"caption": "smiling woman", "alt": "face"}
    assert library.requests[-1].body["with_field"] == ["tags", "context"]


# -- Listings: order and stable cursors --------------------------------------------------------------


async def test_prefix_listing_is_sorted_by_public_id_whatever_the_direction(sim: CloudinarySim) -> None:
    for name in ("p/c", "p/a", "p/d", "p/b"):  # uploaded out of order
        sim.add_asset(name)
    sim.add_asset("q/a")
    for direction in ("desc", "asc", None):
        options = {"direction": direction} if direction else {}
        listed = await call(api.resources, type="upload", prefix="p/", **options, **creds(sim))
        assert [r["public_id"] for r in listed["resources"]] == ["p/a", "p/b", "p/c", "p/d"]
    # Without a prefix: by creation time, newest first unless asked otherwise.
    newest = await call(api.resources, type="upload", **creds(sim))
    assert [r["public_id"] for r in newest["resources"]] == ["q/a", "p/b", "p/d", "p/a", "p/c"]
    oldest = await call(api.resources, type="upload", direction="asc", **creds(sim))
    assert [r["public_id"] for r in oldest["resources"]] == ["p/c", "p/a", "p/d", "p/b", "q/a"]
    with pytest.raises(cx.BadRequest, match="Invalid direction sideways"):
        await call(api.resources, type="upload", direction="sideways", **creds(sim))


async def test_next_cursor_survives_uploads_and_deletions_between_pages(sim: CloudinarySim) -> None:
    seeded = sim.seed_folder("elena", 6)
    first = await call(api.resources_by_asset_folder, "elena", max_results=2, **creds(sim))
    assert [r["public_id"] for r in first["resources"]] == [seeded[5].public_id, seeded[4].public_id]
    # Between two pages someone uploads a newer photo and deletes one not listed yet.
    sim.add_asset("late", asset_folder="elena")
    del sim.assets[("image", "upload", seeded[2].public_id)]
    seen = [r["public_id"] for r in first["resources"]]
    cursor = first["next_cursor"]
    while cursor:
        page = await call(
            api.resources_by_asset_folder, "elena", max_results=2, next_cursor=cursor, **creds(sim)
        )
        seen += [r["public_id"] for r in page["resources"]]
        cursor = page.get("next_cursor")
    # Nothing repeated, nothing skipped: the cursor is where the last page ended, not an offset.
    assert seen == [seeded[i].public_id for i in (5, 4, 3, 1, 0)]


async def test_search_cursor_pages_by_sort_key(library: CloudinarySim) -> None:
    def run(cursor: str | None) -> dict[str, Any]:
        search = Search().expression("resource_type:image").sort_by("public_id", "asc").max_results(2)
        if cursor:
            search = search.next_cursor(cursor)
        return search.execute(**creds(library))

    first = await call(run, None)
    library.add_asset("elena/a_first_by_name")  # sorts before the cursor: not in later pages
    ids = [r["public_id"] for r in first["resources"]]
    cursor = first.get("next_cursor")
    while cursor:
        page = await call(run, cursor)
        ids += [r["public_id"] for r in page["resources"]]
        cursor = page.get("next_cursor")
    assert ids == sorted([P1, P2, BEACH, MARCO, ELENARA])


# -- Statuses the SDK does not map ----------------------------------------------------------------------


async def test_any_status_with_the_error_json_and_what_the_sdk_raises(sim: CloudinarySim) -> None:
    raised: dict[int, type[BaseException]] = {}
    for status in (409, 420, 500, 502, 503, 504, 413):
        sim.fail_next(status, f"injected {status}")
        with pytest.raises(Exception, match=f"Error {status} - injected {status}") as caught:
            await call(api.ping, **creds(sim))
        raised[status] = caught.type
    # pycloudinary 1.46: 409, 420, 500 and 503 have classes; 502, 504 and 413 raise a bare Exception.
    assert raised == {
        409: cx.AlreadyExists,
        420: cx.RateLimited,
        500: cx.GeneralError,
        502: Exception,
        503: cx.GeneralError,
        504: Exception,
        413: Exception,
    }
    sim.fail_next(502, json_body=False)  # a proxy's HTML page: the SDK cannot parse it
    with pytest.raises(cx.GeneralError, match=r"Error parsing server response \(502\)"):
        await call(api.ping, **creds(sim))


async def test_fields_takes_precedence_over_tags_context_and_with_field(library: CloudinarySim) -> None:
    listed = await call(
        api.resources_by_asset_folder, "marco", fields=["context", "width"], tags=True, **creds(library)
    )
    assert listed["resources"] == [
        {
            "public_id": MARCO,
            "asset_id": library.assets[("image", "upload", MARCO)].asset_id,
            "width": 2048,
            "context": {"custom": {"caption": "Marco at the beach"}},
        }
    ]

    def run() -> dict[str, Any]:
        return (
            Search()
            .expression(f"public_id={MARCO}")
            .with_field("context")
            .fields("tags")
            .execute(**creds(library))
        )

    (found,) = (await call(run))["resources"]
    assert set(found) == {
        "public_id", "asset_id", "asset_folder", "created_at", "status", "type", "resource_type", "tags"
    }  # fmt: skip
    assert found["tags"] == ["marco", "close-up"]


async def test_search_max_results_0_counts_without_listing(library: CloudinarySim) -> None:
    def run(size: int) -> dict[str, Any]:
        return Search().expression("tags=elena").max_results(size).execute(**creds(library))

    counted = await call(run, 0)
    assert counted["total_count"] == 4 and counted["resources"] == [] and "next_cursor" not in counted
    with pytest.raises(cx.BadRequest, match="Invalid max_results"):
        await call(api.resources_by_tag, "elena", max_results=0, **creds(library))
