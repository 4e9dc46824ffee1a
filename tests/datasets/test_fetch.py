"""The safe URL fetcher: address policy on every hop, size and redirect limits, and URL gathering."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clients.fetch import FetchError, IPAddress, SafeFetcher, address_refusal
from bot.datasets.gather import DatasetGatherService
from storage.models import Image

from .images import jpeg, make_zip, png

Build = Callable[..., DatasetGatherService]


class Site:
    """A small web server on 127.0.0.1 standing in for "some website"."""

    def __init__(self) -> None:
        self.base = ""
        self.hits: list[str] = []
        self.photo = jpeg(1)
        self.redirect_to = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{name:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits.append(name)
        if name == "photo.jpg":
            # Lies about its type: the bytes decide.
            return web.Response(body=self.photo, content_type="text/plain")
        if name == "album.zip":
            return web.Response(body=make_zip({"a.jpg": jpeg(2), "b.png": png(3), "notes.txt": b"hi"}))
        if name == "page.jpg":
            return web.Response(text="<html><body>Not found</body></html>", content_type="text/html")
        if name == "relative":
            raise web.HTTPFound("/photo.jpg")
        if name == "away":
            raise web.HTTPFound(self.redirect_to)
        if name.startswith("loop"):
            raise web.HTTPFound(f"/{name}x")
        if name == "big":
            return web.Response(body=b"\xff\xd8\xff" + b"\x00" * 3000)
        if name == "big-chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(10):
                await response.write(b"\x00" * 500)
            await response.write_eof()
            return response
        return web.Response(status=404)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    server = Site()
    await server.start()
    yield server
    await server.close()


def only_loopback_one_is_public(ip: IPAddress) -> str | None:
    """A policy for tests: pretend 127.0.0.1 is a public web host; everything else as in production."""
    if ip == ipaddress.ip_address("127.0.0.1"):
        return None
    return address_refusal(ip)


async def test_loopback_url_refused_when_private_addresses_are_not_allowed(site: Site) -> None:
    fetcher = SafeFetcher(allow_private=False)
    try:
        with pytest.raises(FetchError, match=r"refused: 127\.0\.0\.1 is a loopback address"):
            await fetcher.fetch(f"{site.base}/photo.jpg")
        with pytest.raises(FetchError, match="is a loopback address"):
            await fetcher.fetch(f"{site.base.replace('127.0.0.1', 'localhost')}/photo.jpg")
    finally:
        await fetcher.close()
    assert site.hits == []  # refused before any connection


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://10.1.2.3/photo.jpg", "10.1.2.3 is a private address"),
        ("http://[::1]/photo.jpg", "is a loopback address"),
        ("http://[::ffff:192.168.1.1]/x.jpg", "is a private address"),
        ("http://0.0.0.0/x.jpg", "is an unspecified address"),
    ],
)
async def test_redirect_from_allowed_host_to_private_address_refused(
    site: Site, target: str, reason: str
) -> None:
    site.redirect_to = target
    fetcher = SafeFetcher(policy=only_loopback_one_is_public)
    try:
        with pytest.raises(FetchError, match=f"refused: .*{reason.replace('.', '[.]')}"):
            await fetcher.fetch(f"{site.base}/away")
    finally:
        await fetcher.close()
    assert site.hits == ["away"]


async def test_redirects_followed_and_type_not_trusted(site: Site) -> None:
    fetcher = SafeFetcher(policy=only_loopback_one_is_public)
    try:
        fetched = await fetcher.fetch(f"{site.base}/relative")
    finally:
        await fetcher.close()
    assert fetched.data == site.photo
    assert fetched.final_url.endswith("/photo.jpg") and fetched.filename == "photo.jpg"
    assert fetched.content_type is not None and fetched.content_type.startswith("text/plain")


async def test_redirect_loop_and_non_http_schemes_refused(site: Site) -> None:
    fetcher = SafeFetcher(allow_private=True, max_redirects=3)
    try:
        with pytest.raises(FetchError, match="more than 3 redirects"):
            await fetcher.fetch(f"{site.base}/loop")
        site.redirect_to = "file:///etc/passwd"
        with pytest.raises(FetchError, match="only http:// and https://"):
            await fetcher.fetch(f"{site.base}/away")
        with pytest.raises(FetchError, match="only http:// and https://"):
            await fetcher.fetch("ftp://example.com/x.jpg")
        with pytest.raises(FetchError, match="user name or password"):
            await fetcher.fetch(f"http://user:pw@{site.base[7:]}/photo.jpg")
    finally:
        await fetcher.close()


async def test_size_limit_by_header_and_by_bytes_received(site: Site) -> None:
    fetcher = SafeFetcher(allow_private=True, max_bytes=2000)
    try:
        with pytest.raises(FetchError, match="too large"):
            await fetcher.fetch(f"{site.base}/big")
        with pytest.raises(FetchError, match="too large \\(over the"):
            await fetcher.fetch(f"{site.base}/big-chunked")
        with pytest.raises(FetchError, match="HTTP 404"):
            await fetcher.fetch(f"{site.base}/missing.jpg")
    finally:
        await fetcher.close()


class RebindingResolver(AbstractResolver):
    """Answers a public address when we check, then a loopback one when the connector resolves."""

    def __init__(self) -> None:
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if family == socket.AF_INET6:
            raise OSError("no IPv6 here")
        self.calls += 1
        address = "93.184.216.34" if self.calls == 1 else "127.0.0.1"
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


async def test_dns_rebinding_between_check_and_connect_is_refused(site: Site) -> None:
    port = site.base.rsplit(":", 1)[1]
    fetcher = SafeFetcher(resolver=RebindingResolver())
    try:
        with pytest.raises(
            FetchError, match=r"refused: photos\.example resolves to 127\.0\.0\.1, a loopback address"
        ):
            await fetcher.fetch(f"http://photos.example:{port}/photo.jpg")
    finally:
        await fetcher.close()
    assert site.hits == []


async def test_gather_from_urls_sniffs_bytes_unpacks_zips_and_reports_refusals(
    site: Site, make_service: Build, dataset_id: int, sessions: async_sessionmaker[AsyncSession]
) -> None:
    service = make_service(fetcher=SafeFetcher(policy=only_loopback_one_is_public))
    site.redirect_to = "http://10.0.0.7/secret.jpg"
    report = await service.from_urls(
        dataset_id,
        f"{site.base}/photo.jpg\n{site.base}/album.zip {site.base}/page.jpg {site.base}/away",
        added_by=5,
    )
    assert [a.name for a in report.added] == [
        f"{site.base}/photo.jpg",
        f"{site.base}/album.zip/a.jpg",
        f"{site.base}/album.zip/b.png",
    ]
    reasons = {r.name: r.reason for r in report.rejected}
    assert reasons[f"{site.base}/page.jpg"] == "not an image: the content is an HTML page"
    assert "10.0.0.7 is a private address" in reasons[f"{site.base}/away"]
    assert [(s.name, s.reason) for s in report.skipped] == [
        (f"{site.base}/album.zip/notes.txt", "not an image")
    ]
    async with sessions() as session:
        kinds = (
            await session.execute(select(Image.source_kind, Image.source_ref).order_by(Image.position))
        ).all()
    assert kinds[0] == ("url", f"{site.base}/photo.jpg")
    assert kinds[1] == ("zip", f"{site.base}/album.zip!a.jpg")


async def test_gather_from_private_url_with_default_settings_is_refused(
    site: Site, make_service: Build, dataset_id: int
) -> None:
    service = make_service(allow_private=False)
    report = await service.from_urls(dataset_id, [f"{site.base}/photo.jpg"], added_by=5)
    assert report.added == []
    assert len(report.rejected) == 1 and "127.0.0.1 is a loopback address" in report.rejected[0].reason
    assert site.hits == []
