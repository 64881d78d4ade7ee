"""Fetch an image a client referenced by http(s) URL, without letting the URL reach inside.

Vendors that need image bytes rather than URLs (Ollama, Bedrock) call ``fetch_image``.
A client-supplied URL is untrusted, so by default the fetch refuses anything that is not a
public internet address:

- only ``http`` and ``https``; no credentials in the URL;
- host names that are IPv4 literals in any spelling (``2130706433``, ``0177.0.0.1``,
  ``0x7f.0.0.1``, ``127.1``) are normalised before checking; IPv6 literals that embed an
  IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible, NAT64 ``64:ff9b::/96``,
  6to4 ``2002::/16``, Teredo) are checked as the IPv4 inside;
- private, loopback, link-local (cloud metadata ``169.254.169.254``), CGNAT, multicast,
  unspecified, reserved, broadcast and IPv6 unique-local addresses are blocked;
- a name is resolved once, every address it resolves to must pass, and the connection is
  made to the checked address (the original name goes in the Host header and TLS SNI,
  and certificates are verified against it), so a DNS answer that changes between check
  and connect cannot redirect the fetch;
- redirects are followed by hand, up to ``max_redirects``, each hop checked again;
- the body is streamed and cut off past ``max_bytes`` whatever Content-Length says;
- Content-Type must be an allowed image type and the file's magic bytes must agree
  (a missing or ``application/octet-stream`` type is taken from the magic bytes).

``FetchPolicy.allowlist`` takes host names (``images.example.com``), wildcards
(``*.example.com``: any subdomain, not the apex) and IP networks (``10.2.0.0/16``,
``127.0.0.1``). When the allowlist is empty any public host may be fetched; when it is
set, only a URL it matches is fetched (by name, or by every resolved address lying in a
listed network). Only a listed network can permit an otherwise blocked address: a name
entry never does, so pointing an allowlisted name's DNS at an internal service fails.
``ca_bundle`` names a PEM file of CAs to trust for https instead of the system store
(internal image servers). ``enabled: false`` turns the address guard off (trusted
networks only); scheme, size, type and allowlist checks stay on.

Every refusal raises ``InvalidRequest`` (HTTP 400, ``param: "messages"``) saying why.

One request's fetches go through one ``ImageFetcher``, which bounds what a request can
make the gateway hold: at most ``max_images`` fetched images and ``max_total_bytes`` over
all of them (counted as the bytes arrive), ``max_concurrent`` fetches at a time, and at
most ``PROCESS_FETCH_SLOTS`` fetches at a time in the whole process. ``release`` hands
the freed memory back to the operating system once the request's images are sent.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import ipaddress
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tako.core.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

DEFAULT_MIME_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_BLOCKED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified/this-network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local/metadata"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved/broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("2001:db8::/32", "documentation"),
    ("100::/64", "discard"),
)
_BLOCKED = tuple((ipaddress.ip_network(net), why) for net, why in _BLOCKED_NETWORKS)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class FetchPolicy(BaseModel):
    """How an image URL may be fetched. Deployments set it under ``options.image_fetch``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    allowlist: tuple[str, ...] = ()
    max_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    allowed_mime_types: tuple[str, ...] = DEFAULT_MIME_TYPES
    timeout_s: float = Field(default=10.0, gt=0)
    max_redirects: int = Field(default=3, ge=0)
    ca_bundle: str | None = None  # PEM file of CAs to trust instead of the system store
    # per request: fetched images, their bytes in all, fetches at a time
    max_images: int = Field(default=20, ge=0)
    max_total_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    max_concurrent: int = Field(default=4, ge=1)

    @field_validator("allowlist")
    @classmethod
    def _valid_entries(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = []
        for entry in entries:
            entry = entry.strip().lower().rstrip(".")
            if not entry:
                raise ValueError("empty allowlist entry")
            if _as_network(entry) is None and not _is_host_pattern(entry):
                raise ValueError(f"allowlist entry {entry!r} is neither a host nor a network")
            cleaned.append(entry)
        return tuple(cleaned)

    @classmethod
    def from_options(cls, value: object) -> FetchPolicy:
        """The policy from a deployment option (a mapping, an existing policy, or None)."""
        if value is None:
            return cls()
        if isinstance(value, FetchPolicy):
            return value
        if isinstance(value, dict):
            return cls.model_validate(value)
        raise InvalidRequest("options.image_fetch must be a mapping")

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [net for net in (_as_network(e) for e in self.allowlist) if net is not None]

    def host_patterns(self) -> list[str]:
        return [e for e in self.allowlist if _as_network(e) is None]


PROCESS_FETCH_SLOTS = 16  # image fetches at a time in one process, every request together
_process_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary())


def process_fetch_slots() -> asyncio.Semaphore:
    """The process-wide fetch slots of the running event loop."""
    loop = asyncio.get_running_loop()
    slots = _process_slots.get(loop)
    if slots is None:
        slots = _process_slots[loop] = asyncio.Semaphore(PROCESS_FETCH_SLOTS)
    return slots


class ImageFetcher:
    """The image fetches of one request, within the policy's per-request bounds."""

    def __init__(self, policy: FetchPolicy | None = None, *,
                 resolve: Resolver | None = None) -> None:
        self.policy = policy or FetchPolicy()
        self.resolve = resolve
        self.started = 0
        self.received = 0  # bytes of every image of this request so far
        self.in_flight = 0
        # Once one fetch failed, the rest stop. The reason, not the error: an error's
        # traceback holds this fetcher, and the cycle would keep every image alive.
        self.failure: str | None = None
        self.released = False
        self.slots = asyncio.Semaphore(self.policy.max_concurrent)
        map_large_blocks_apart()

    def take(self, url: str, size: int) -> None:
        """Count ``size`` more bytes received; refuse once the request's total is over, or
        once another of its fetches failed."""
        self.received += size
        if self.failure is not None:
            raise _refused(url, self.failure)
        if self.received > self.policy.max_total_bytes:
            raise _refused(url, f"the request's images are larger than "
                                f"{self.policy.max_total_bytes} bytes in all")

    async def fetch(self, url: str) -> tuple[str, bytes]:
        self.started += 1
        if self.started > self.policy.max_images:
            raise _refused(url, f"the request has more than {self.policy.max_images} "
                                f"image URLs to fetch")
        async with self.slots, process_fetch_slots():
            if self.failure is not None:
                raise _refused(url, self.failure)
            self.in_flight += 1
            try:
                return await fetch_image(url, self.policy, resolve=self.resolve, fetcher=self)
            except InvalidRequest as exc:
                self.failure = self.failure or f"another image of the request failed: {exc}"
                raise
            finally:
                self.in_flight -= 1
                if self.released and not self.in_flight:
                    release_free_memory()  # the last fetch left running after a failure

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Release the memory; an error leaves without the frames below, which hold the
        images fetched so far (errors are kept in cycles that only a full collection
        frees, long after the request)."""
        self.release()
        if exc is not None:
            exc.with_traceback(None)
            if self.received:
                collect_soon()

    def release(self) -> None:
        """Give the memory the images took back to the operating system (now, and again
        when fetches still running after a failure end)."""
        self.released = True
        if self.received:
            release_free_memory()


COLLECT_AFTER_S = 0.2  # a failed request has answered by then; its error's cycles are garbage
_collection_due: list[bool] = []


def collect_soon() -> None:
    """Collect cyclic garbage shortly, then release free memory: a request that failed
    holds its error in reference cycles (error, traceback, frames, the request's objects)
    that the gateway's collector settings leave alone for a long time, and with them the
    images fetched so far. At most one collection is pending at a time."""
    if _collection_due:
        return
    _collection_due.append(True)

    def collect() -> None:
        _collection_due.clear()
        gc.collect()
        release_free_memory()

    asyncio.get_running_loop().call_later(COLLECT_AFTER_S, collect)


def release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc's malloc_trim); a no-op elsewhere."""
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)


_M_MMAP_THRESHOLD = -3
_PINNED_MMAP_THRESHOLD = 1024 * 1024


def map_large_blocks_apart() -> None:
    """Blocks of 1 MB and more get their own mapping, unmapped when freed. glibc's
    threshold for that otherwise rises with every large block freed (up to 32 MB), after
    which image-sized buffers come from the heap and stay in the process."""
    if _LIBC_CACHE.get("pinned"):
        return
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _PINNED_MMAP_THRESHOLD)
    _LIBC_CACHE["pinned"] = True


_LIBC_CACHE: dict[str, object] = {}


def _libc_function(name: str) -> Callable[..., int] | None:
    if "libc" not in _LIBC_CACHE:
        path = ctypes.util.find_library("c")
        _LIBC_CACHE["libc"] = ctypes.CDLL(path) if path else None
    libc = _LIBC_CACHE["libc"]
    return getattr(libc, name, None) if libc is not None else None


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Resolve ``host`` with the system resolver (getaddrinfo), every address it returns."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def fetch_image(
    url: str,
    policy: FetchPolicy | None = None,
    *,
    resolve: Resolver | None = None,
    fetcher: ImageFetcher | None = None,
) -> tuple[str, bytes]:
    """Fetch the image at ``url`` under ``policy``; return (mime type, bytes).

    ``resolve`` maps (host, port) to addresses; the system resolver by default. The bytes
    count against ``fetcher``'s per-request total when one is given."""
    policy = policy or FetchPolicy()
    resolver = resolve or system_resolve
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _fetch(url, policy, resolver, fetcher)
    except TimeoutError as exc:
        raise _refused(url, f"fetching took longer than {policy.timeout_s:g}s") from exc


async def _fetch(url: str, policy: FetchPolicy, resolver: Resolver,
                 fetcher: ImageFetcher | None) -> tuple[str, bytes]:
    verify: ssl.SSLContext | bool = True
    if policy.ca_bundle:
        verify = ssl.create_default_context(cafile=policy.ca_bundle)
    async with httpx.AsyncClient(
        trust_env=False, follow_redirects=False, timeout=None, verify=verify
    ) as client:
        current = url
        for hop in range(policy.max_redirects + 1):
            target = await check_url(current, policy, resolver)
            request = target.build_request(client)
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                detail = f"{type(exc).__name__}: {exc}"[:300]
                raise _refused(url, f"could not connect: {detail}") from exc
            try:
                if response.status_code in REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise _refused(url, f"redirect {response.status_code} without Location")
                    if hop == policy.max_redirects:
                        raise _refused(url, f"more than {policy.max_redirects} redirects")
                    current = urljoin(current, location)
                    continue
                if response.status_code != 200:
                    raise _refused(url, f"the image server answered HTTP {response.status_code}")
                return await _read_image(url, response, policy, fetcher)
            finally:
                await response.aclose()
    raise _refused(url, "redirect loop")  # pragma: no cover - the loop always returns or raises


@dataclass(frozen=True, slots=True)
class CheckedTarget:
    """A URL that passed the guard, with the address the connection must go to."""

    scheme: str
    host: str  # ASCII host name as the client wrote it (Host header, SNI)
    port: int
    address: IPAddress
    path: str  # path and query
    host_header: str

    def pinned_url(self) -> str:
        literal = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    def build_request(self, client: httpx.AsyncClient) -> httpx.Request:
        extensions = {"sni_hostname": self.host} if self.scheme == "https" else {}
        return client.build_request(
            "GET",
            self.pinned_url(),
            headers={"host": self.host_header, "accept": "image/*"},
            extensions=extensions,
        )


async def check_url(url: str, policy: FetchPolicy, resolver: Resolver) -> CheckedTarget:
    """Validate ``url`` against ``policy``; resolve it once and pick the address to use."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refused(url, "it is not a valid URL") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refused(url, "only http and https URLs can be fetched")
    if parts.username is not None or parts.password is not None:
        raise _refused(url, "URLs with credentials are not fetched")
    raw_host = (parts.hostname or "").rstrip(".")
    if not raw_host:
        raise _refused(url, "it has no host")
    port = port or (443 if scheme == "https" else 80)
    literal = parse_ip_literal(raw_host)
    if literal is not None:
        host = str(literal)
        addresses = [literal]
    else:
        host, addresses = await _resolved(url, raw_host, port, resolver)
    name_listed = literal is None and _matches_host(host, policy.host_patterns())
    _check_addresses(url, policy, addresses, name_listed)
    default_port = 443 if scheme == "https" else 80
    literal_host = f"[{host}]" if ":" in host else host
    host_header = literal_host if port == default_port else f"{literal_host}:{port}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return CheckedTarget(scheme, host, port, addresses[0], path, host_header)


async def _resolved(url: str, raw_host: str, port: int,
                    resolver: Resolver) -> tuple[str, list[IPAddress]]:
    """The host name (IDNA-encoded) and the addresses it resolves to."""
    try:
        host = raw_host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise _refused(url, "its host name is not valid") from exc
    try:
        addresses = await resolver(host, port)
    except OSError as exc:
        raise _refused(url, f"its host {host!r} does not resolve") from exc
    if not addresses:
        raise _refused(url, f"its host {host!r} does not resolve")
    return host, addresses


def _check_addresses(url: str, policy: FetchPolicy, addresses: list[IPAddress],
                     name_listed: bool) -> None:
    networks = policy.networks()
    for address in addresses:
        in_listed_network = any(address in net for net in networks)
        if policy.allowlist and not (name_listed or in_listed_network):
            raise _refused(url, f"address {address} is not in the allowlist")
        if policy.enabled and not in_listed_network:
            reason = blocked_reason(address)
            if reason:
                raise _refused(url, f"it points to a {reason} address ({address})")


def _matches_host(host: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be fetched from, or None when it is a public address."""
    embedded = embedded_ipv4(address)
    if embedded is not None:
        reason = blocked_reason(embedded)
        return f"{reason} (embedded in IPv6)" if reason else None
    for network, why in _BLOCKED:
        if address.version == network.version and address in network:
            return why
    if not address.is_global:
        return "non-public"
    return None


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """An IP address written as a host, in any spelling browsers and libc accept, or None
    for a name. A host that looks numeric but is not a valid address raises."""
    host = host.strip("[]").split("%", 1)[0]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise InvalidRequest(
                f"image URL host {host!r} is not a valid IPv6 address", param="messages"
            ) from exc
    parts = host.split(".")
    if not _looks_numeric(parts[-1]):
        return None
    if len(parts) > 4:
        raise InvalidRequest(f"image URL host {host!r} is not a valid address", param="messages")
    try:
        numbers = [_parse_ipv4_part(p) for p in parts]
    except ValueError as exc:
        raise InvalidRequest(
            f"image URL host {host!r} is not a valid address", param="messages"
        ) from exc
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise InvalidRequest(f"image URL host {host!r} is not a valid address", param="messages")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _looks_numeric(part: str) -> bool:
    lowered = part.lower()
    if lowered.startswith("0x"):
        return all(c in "0123456789abcdef" for c in lowered[2:])
    return part.isdigit()


def _parse_ipv4_part(part: str) -> int:
    lowered = part.lower()
    if lowered.startswith("0x"):
        return int(lowered[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part, 10)


def _as_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _is_host_pattern(entry: str) -> bool:
    name = entry[2:] if entry.startswith("*.") else entry
    labels = name.split(".")
    return bool(name) and all(
        label and all(c.isalnum() or c == "-" for c in label) for label in labels
    )


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image_type(data: bytes) -> str | None:
    """The image type the leading bytes announce, or None."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _declared_type(response: httpx.Response) -> str | None:
    value = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if value in ("", "application/octet-stream", "binary/octet-stream"):
        return None
    return "image/jpeg" if value in ("image/jpg", "image/pjpeg") else value


async def _read_image(url: str, response: httpx.Response, policy: FetchPolicy,
                      fetcher: ImageFetcher | None) -> tuple[str, bytes]:
    declared = _declared_type(response)
    if declared is not None and declared not in policy.allowed_mime_types:
        raise _refused(url, f"its content type {declared!r} is not an allowed image type")
    length = response.headers.get("content-length")
    if length and length.isdigit() and int(length) > policy.max_bytes:
        raise _refused(url, f"the image is larger than {policy.max_bytes} bytes")
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > policy.max_bytes:
                raise _refused(url, f"the image is larger than {policy.max_bytes} bytes")
            if fetcher is not None:
                fetcher.take(url, len(chunk))
    except httpx.HTTPError as exc:
        body.clear()
        raise _refused(url, f"the download failed: {type(exc).__name__}") from exc
    except BaseException:
        body.clear()  # the error's traceback keeps this frame alive: not its bytes too
        raise
    sniffed = sniff_image_type(bytes(body[:16]))
    if sniffed is None or sniffed not in policy.allowed_mime_types:
        raise _refused(url, "its bytes are not an allowed image type")
    if declared is not None and declared != sniffed:
        raise _refused(url, f"it says {declared!r} but its bytes are {sniffed!r}")
    return sniffed, bytes(body)


def _refused(url: str, why: str) -> InvalidRequest:
    shown = url if len(url) <= 200 else url[:200] + "..."
    return InvalidRequest(
        f"image URL {shown!r} was not fetched: {why}",
        param="messages",
        code="image_fetch_refused",
    )
