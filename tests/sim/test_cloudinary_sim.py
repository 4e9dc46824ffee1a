"""The Cloudinary simulator, driven by the real ``cloudinary`` SDK (raw HTTP where the SDK hides things)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import io
import time
from collections.abc import AsyncIterator, Callable
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
    # Tags and context only when asked; default page size 10; default order newest first.
    plain = await call(api.resources_by_asset_folder, "elena", **creds(sim))
    assert "tags" not in plain["resources"][0] and "context" not in plain["resources"][0]
    assert len(plain["resources"]) == 10 and plain["resources"][0]["public_id"] == seeded[-1].public_id


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
