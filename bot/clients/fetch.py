"""A careful HTTP(S) downloader for URLs that users paste (and for Cloudinary's ``secure_url``).

The dangers it guards against, and how:

- Server-side request forgery: a URL (or any redirect it leads to) that points at a private, loopback,
  link-local or otherwise non-public address is refused unless ``allow_private`` is set (the simulators
  run on 127.0.0.1). Every hop's host is resolved and *every* resolved address checked; redirects are
  followed by hand so each hop is checked. The connector's resolver applies the same policy at connect
  time, so a DNS answer that changes between our check and the connection (rebinding) is refused too.
- Size: ``Content-Length`` is checked first, then the bytes actually received are counted.
- Time: one deadline covers the whole fetch, redirects included.

The content type is never trusted here: callers sniff the bytes (``bot.datasets.sniff``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from bot.errors import UserError
from bot.text import mib, truncate

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Returns why an address is refused, or None when it may be contacted.
AddressPolicy = Callable[[IPAddress], str | None]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


class FetchError(UserError):
    """A URL could not be fetched; the message says why in words a user understands."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{truncate(url, 120)}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """Bytes downloaded from ``url`` (after redirects: ``final_url``)."""

    url: str
    final_url: str
    data: bytes
    filename: str
    content_type: str | None  # as the server claimed it; informational only


def address_refusal(ip: IPAddress) -> str | None:
    """The default policy: only globally routable unicast addresses may be contacted."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_refusal(ip.ipv4_mapped)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved (non-public) address"
    return None


_NUMERIC_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a non-dotted-quad numeric host names, as ``inet_aton`` reads it, or None.

    One to four parts, each decimal, ``0x`` hex or ``0`` octal; the last part fills the remaining bytes
    (``127.1`` is 127.0.0.1, ``2130706433`` is 127.0.0.1). A plain dotted quad returns None: it is
    an ordinary IP literal.
    """
    text = host.rstrip(".")
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMERIC_PART.fullmatch(p) for p in parts):
        return None
    values = [
        int(p, 16) if p[:2].lower() == "0x" else int(p, 8) if p.startswith("0") else int(p, 10)
        for p in (p if p[:2].lower() != "0x" or len(p) > 2 else "0x0" for p in parts)
    ]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for value in head:
        number = number * 256 + value
    number = number * 256 ** (4 - len(head)) + last
    address = ipaddress.IPv4Address(number)
    if len(parts) == 4 and all(p == str(int(p, 10)) for p in parts) and text == host:
        return None  # 93.184.216.34: not a trick, just an address
    return address


def allow_all(_ip: IPAddress) -> str | None:
    """Policy used when private addresses are allowed (simulators, trusted networks)."""
    return None


class _AddressRefusedError(OSError):
    pass


class _GuardedResolver(AbstractResolver):
    """Resolves through ``inner`` and refuses the whole answer if any address breaks the policy."""

    def __init__(self, inner: AbstractResolver, policy: AddressPolicy) -> None:
        self._inner = inner
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            reason = self._policy(ipaddress.ip_address(result["host"]))
            if reason is not None:
                raise _AddressRefusedError(f"{host} resolves to {result['host']}, {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()


class SafeFetcher:
    """Downloads one URL at a time under the limits above. Owns its aiohttp session; call ``close()``."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        max_bytes: int = 50 * 1024 * 1024,
        timeout_s: float = 30.0,
        max_redirects: int = 5,
        policy: AddressPolicy | None = None,
        resolver: AbstractResolver | None = None,
        user_agent: str = "loraops/0.1 (+dataset gathering)",
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self.policy: AddressPolicy = policy or (allow_all if allow_private else address_refusal)
        self._inner_resolver = resolver
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> SafeFetcher:
        """Build from ``bot.config.Settings`` (allow_private_urls, fetch_max_bytes, fetch_timeout_s)."""
        return cls(
            allow_private=settings.allow_private_urls,
            max_bytes=settings.fetch_max_bytes,
            timeout_s=settings.fetch_timeout_s,
        )

    def _resolver(self) -> AbstractResolver:
        # Created lazily: some resolvers need a running event loop.
        if self._inner_resolver is None:
            self._inner_resolver = DefaultResolver()
        return self._inner_resolver

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=_GuardedResolver(self._resolver(), self.policy), limit=8
            )
            # trust_env=False: an environment proxy would make our address checks meaningless.
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, headers={"User-Agent": self._user_agent}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()  # closes the connector, and with it the resolver
            self._session = None
        elif self._inner_resolver is not None:
            await self._inner_resolver.close()
        self._inner_resolver = None

    async def check_url(self, url: URL) -> None:
        """Raise ``FetchError`` unless ``url`` is http(s) and every address of its host is allowed."""
        if url.scheme not in ("http", "https"):
            raise FetchError(str(url), "only http:// and https:// links can be fetched")
        host = url.host
        if not host:
            raise FetchError(str(url), "the link has no host name")
        if url.user or url.password:
            raise FetchError(str(url), "links with a user name or password are not fetched")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        numeric = numeric_ipv4(host) if literal is None else None
        if numeric is not None:
            # 0x7f000001, 2130706433, 0177.0.0.1, 127.1: the C resolver reads these as IPv4 addresses.
            # Judge the address they name by the policy; a public one is refused too, with its usual form.
            reason = self.policy(numeric)
            if reason is not None:
                raise FetchError(str(url), f"refused: {host} is {numeric}, {reason}")
            raise FetchError(
                str(url),
                f"refused: {host} is the IPv4 address {numeric} written in a numeric form; use {numeric}",
            )
        if literal is not None:
            addresses = [literal]
        else:
            addresses = await self._resolve(str(url), host, url.port or 0)
        for address in addresses:
            reason = self.policy(address)
            if reason is not None:
                shown = host if literal is not None else f"{host} ({address})"
                raise FetchError(str(url), f"refused: {shown} is {reason}")

    async def _resolve(self, url: str, host: str, port: int) -> list[IPAddress]:
        addresses: list[IPAddress] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                results = await self._resolver().resolve(host, port, family)
            except OSError:
                continue
            addresses.extend(ipaddress.ip_address(r["host"].split("%")[0]) for r in results)
        if not addresses:
            raise FetchError(url, f"the host {host} could not be found")
        return addresses

    async def fetch(self, url: str) -> FetchedFile:
        """Download ``url`` following up to ``max_redirects`` checked redirects."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(url)
        except TimeoutError:
            raise FetchError(url, f"took longer than {self.timeout_s:g} s") from None

    async def _fetch(self, original: str) -> FetchedFile:
        try:
            current = URL(original.strip())
        except ValueError:
            raise FetchError(original, "this is not a valid link") from None
        session = self._get_session()
        for _hop in range(self.max_redirects + 1):
            await self.check_url(current)
            try:
                async with session.get(current, allow_redirects=False) as response:
                    if response.status in _REDIRECT_STATUSES:
                        location = response.headers.get("Location")
                        if not location:
                            raise FetchError(original, f"redirect ({response.status}) without a Location")
                        current = current.join(URL(location))
                        continue
                    if response.status >= 400:
                        raise FetchError(original, f"the server answered HTTP {response.status}")
                    if response.status != 200:
                        raise FetchError(original, f"unexpected HTTP status {response.status}")
                    data = await self._read_limited(original, response)
                    return FetchedFile(
                        url=original,
                        final_url=str(current),
                        data=data,
                        filename=_filename(response, current),
                        content_type=response.headers.get("Content-Type"),
                    )
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _AddressRefusedError):
                    raise FetchError(original, f"refused: {exc.os_error}") from None
                raise FetchError(original, f"could not connect to {current.host}") from None
            except aiohttp.ClientError as exc:
                raise FetchError(original, f"download failed ({type(exc).__name__})") from None
        raise FetchError(original, f"more than {self.max_redirects} redirects")

    async def _read_limited(self, url: str, response: aiohttp.ClientResponse) -> bytes:
        declared = response.content_length
        if declared is not None and declared > self.max_bytes:
            raise FetchError(url, f"too large ({mib(declared)}; the limit is {mib(self.max_bytes)})")
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            received += len(chunk)
            if received > self.max_bytes:
                raise FetchError(url, f"too large (over the {mib(self.max_bytes)} limit)")
            chunks.append(chunk)
        return b"".join(chunks)


_DISPOSITION_NAME = re.compile(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)\"?", re.IGNORECASE)


def _filename(response: aiohttp.ClientResponse, url: URL) -> str:
    disposition = response.headers.get("Content-Disposition", "")
    match = _DISPOSITION_NAME.search(disposition)
    name = unquote(match.group(1)) if match else url.name
    # Only the last path component, whatever the server said.
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name or "download"
