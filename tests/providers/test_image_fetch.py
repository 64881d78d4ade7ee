"""The image fetcher's SSRF guard, checked against a real image server on loopback."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tako.core.errors import InvalidRequest
from tako.providers.image_fetch import (
    FetchPolicy,
    IPAddress,
    blocked_reason,
    check_url,
    fetch_image,
    parse_ip_literal,
    sniff_image_type,
)
from tests.support.images import PNG
from tests.support.net import free_port, serve_asgi

GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
LOOPBACK_ONLY = FetchPolicy(allowlist=("127.0.0.1/32",))

seen_hosts: list[str] = []


async def cat(request: Request) -> Response:
    seen_hosts.append(request.headers.get("host", ""))
    return Response(PNG, media_type="image/png")


async def big(request: Request) -> Response:
    return Response(PNG + b"\x00" * 300_000, media_type="image/png")


async def big_unannounced(request: Request) -> StreamingResponse:
    async def body() -> Iterator[bytes]:  # type: ignore[misc]
        yield PNG
        for _ in range(100):
            yield b"\x00" * 10_000

    return StreamingResponse(body(), media_type="image/png")  # no Content-Length: chunked


async def html(request: Request) -> Response:
    return Response(b"<html>not an image</html>", media_type="text/html")


async def gif_labelled_png(request: Request) -> Response:
    return Response(GIF, media_type="image/png")


async def unlabelled_gif(request: Request) -> Response:
    return Response(GIF, headers={"content-type": "application/octet-stream"})


async def redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(request.query_params["to"], status_code=302)


async def missing(request: Request) -> Response:
    return Response(b"nope", status_code=404)


async def slow(request: Request) -> Response:
    await asyncio.sleep(2)
    return Response(PNG, media_type="image/png")


app = Starlette(
    routes=[
        Route("/cat.png", cat),
        Route("/big.png", big),
        Route("/big-chunked.png", big_unannounced),
        Route("/page.html", html),
        Route("/fake.png", gif_labelled_png),
        Route("/blob", unlabelled_gif),
        Route("/redirect", redirect),
        Route("/missing.png", missing),
        Route("/slow.png", slow),
    ]
)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with serve_asgi(app) as url:
        yield url


def fixed_resolver(*answers: list[str]):  # noqa: ANN201
    """A resolver answering each call with the next list of addresses (the last repeats)."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[IPAddress]:
        index = min(len(calls), len(answers) - 1)
        calls.append(host)
        return [ipaddress.ip_address(a) for a in answers[index]]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def refused(url: str, policy: FetchPolicy | None = None, **kw: object) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        await fetch_image(url, policy, **kw)  # type: ignore[arg-type]
    assert info.value.param == "messages"
    assert info.value.status == 400
    return info.value


# ---- fetching from an allowlisted loopback server ----


async def test_allowlisted_loopback_image_is_fetched(base: str) -> None:
    mime, data = await fetch_image(f"{base}/cat.png", LOOPBACK_ONLY)
    assert mime == "image/png"
    assert data == PNG


async def test_same_url_without_allowlist_is_blocked(base: str) -> None:
    error = await refused(f"{base}/cat.png")
    assert "loopback" in error.message


async def test_redirect_within_allowlist_is_followed(base: str) -> None:
    mime, data = await fetch_image(f"{base}/redirect?to=/cat.png", LOOPBACK_ONLY)
    assert (mime, data) == ("image/png", PNG)


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.2/cat.png", "http://10.0.0.1/"],
)
async def test_redirect_to_blocked_address_is_refused(base: str, target: str) -> None:
    error = await refused(f"{base}/redirect?to={target}", LOOPBACK_ONLY)
    assert target.split("/")[2] in error.message


async def test_redirect_to_private_address_is_refused_by_guard(base: str) -> None:
    # The name is allowlisted, but a name entry never unlocks a private address.
    policy = FetchPolicy(allowlist=("127.0.0.1/32", "*.cdn.test"))
    resolve = fixed_resolver(["10.9.8.7"])
    error = await refused(f"{base}/redirect?to=http://img.cdn.test/x.png", policy, resolve=resolve)
    assert "private" in error.message
    assert resolve.calls == ["img.cdn.test"]


async def test_too_many_redirects_are_refused(base: str) -> None:
    hop = f"{base}/redirect?to=/cat.png"
    policy = FetchPolicy(allowlist=("127.0.0.1/32",), max_redirects=1)
    two_hops = f"{base}/redirect?to=" + httpx.URL(hop).raw_path.decode()
    assert (await fetch_image(hop, policy))[1] == PNG
    error = await refused(two_hops, policy)
    assert "more than 1 redirects" in error.message


async def test_oversize_body_with_length_is_cut_off(base: str) -> None:
    policy = FetchPolicy(allowlist=("127.0.0.1/32",), max_bytes=100_000)
    error = await refused(f"{base}/big.png", policy)
    assert "larger than 100000 bytes" in error.message


async def test_oversize_body_without_length_is_cut_off_while_streaming(base: str) -> None:
    policy = FetchPolicy(allowlist=("127.0.0.1/32",), max_bytes=50_000)
    error = await refused(f"{base}/big-chunked.png", policy)
    assert "larger than 50000 bytes" in error.message
    # The same body under a bigger limit is accepted, so the limit is what refused it.
    roomy = FetchPolicy(allowlist=("127.0.0.1/32",), max_bytes=2_000_000)
    mime, data = await fetch_image(f"{base}/big-chunked.png", roomy)
    assert mime == "image/png" and len(data) == len(PNG) + 1_000_000


async def test_wrong_content_type_is_refused(base: str) -> None:
    error = await refused(f"{base}/page.html", LOOPBACK_ONLY)
    assert "text/html" in error.message


async def test_magic_bytes_must_agree_with_content_type(base: str) -> None:
    error = await refused(f"{base}/fake.png", LOOPBACK_ONLY)
    assert "image/gif" in error.message


async def test_octet_stream_takes_type_from_magic_bytes(base: str) -> None:
    assert await fetch_image(f"{base}/blob", LOOPBACK_ONLY) == ("image/gif", GIF)


async def test_disallowed_image_type_is_refused(base: str) -> None:
    policy = FetchPolicy(allowlist=("127.0.0.1/32",), allowed_mime_types=("image/jpeg",))
    error = await refused(f"{base}/cat.png", policy)
    assert "image/png" in error.message


async def test_http_error_status_is_refused(base: str) -> None:
    error = await refused(f"{base}/missing.png", LOOPBACK_ONLY)
    assert "HTTP 404" in error.message


async def test_slow_server_hits_the_timeout(base: str) -> None:
    policy = FetchPolicy(allowlist=("127.0.0.1/32",), timeout_s=0.3)
    error = await refused(f"{base}/slow.png", policy)
    assert "longer than 0.3s" in error.message


# ---- DNS: resolved once, every address checked, connection pinned ----


async def test_connection_is_pinned_to_the_checked_address(base: str) -> None:
    """A rebinding resolver answers loopback (allowlisted) first and metadata second: the
    fetch uses the first, checked answer and never asks again."""
    port = httpx.URL(base).port
    resolve = fixed_resolver(["127.0.0.1"], ["169.254.169.254"])
    seen_hosts.clear()
    mime, data = await fetch_image(f"http://rebind.test:{port}/cat.png", LOOPBACK_ONLY,
                                   resolve=resolve)
    assert (mime, data) == ("image/png", PNG)
    assert resolve.calls == ["rebind.test"]  # resolved once; the second answer is unused
    assert seen_hosts == [f"rebind.test:{port}"]  # original Host header, pinned IP


async def test_every_resolved_address_is_checked(base: str) -> None:
    port = httpx.URL(base).port
    resolve = fixed_resolver(["127.0.0.1", "10.0.0.5"])
    error = await refused(f"http://mixed.test:{port}/cat.png", LOOPBACK_ONLY, resolve=resolve)
    assert "10.0.0.5" in error.message


async def test_unresolvable_name_is_refused() -> None:
    async def nxdomain(host: str, port: int) -> list[IPAddress]:
        raise OSError("Name or service not known")

    error = await refused("http://nowhere.invalid/x.png", resolve=nxdomain)
    assert "does not resolve" in error.message


async def test_public_address_passes_and_is_pinned_with_sni() -> None:
    resolve = fixed_resolver(["93.184.216.34", "2606:2800:220:1::1"])
    target = await check_url("https://images.example.com/a.png?x=1", FetchPolicy(), resolve)
    assert str(target.address) == "93.184.216.34"
    async with httpx.AsyncClient() as client:
        request = target.build_request(client)
    assert request.url.host == "93.184.216.34"
    assert request.url.raw_path == b"/a.png?x=1"
    assert request.headers["host"] == "images.example.com"
    assert request.extensions["sni_hostname"] == "images.example.com"


# ---- URL and address rules (no network needed) ----


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://x/", "data:image/png;base64,AA"],
)
async def test_only_http_and_https(url: str) -> None:
    error = await refused(url, resolve=fixed_resolver(["93.184.216.34"]))
    assert "only http and https" in error.message


async def test_credentials_in_url_are_refused() -> None:
    error = await refused("http://user:pw@example.com/a.png",
                          resolve=fixed_resolver(["93.184.216.34"]))
    assert "credentials" in error.message


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "reserved/broadcast"),
        ("240.0.0.1", "reserved/broadcast"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::10.0.0.1", "private"),
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 around 169.254.169.254
    ],
)
async def test_blocked_addresses(address: str, reason: str) -> None:
    ip = ipaddress.ip_address(address)
    assert reason in (blocked_reason(ip) or "")
    error = await refused("http://victim.test/a.png", resolve=fixed_resolver([address]))
    assert reason in error.message


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111",
                                     "64:ff9b::8.8.8.8", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1", "0177.1", "127.0.1",
     "017700000001"],
)
async def test_alternate_ipv4_spellings_are_normalised(host: str) -> None:
    assert parse_ip_literal(host) == ipaddress.IPv4Address("127.0.0.1")
    error = await refused(f"http://{host}/a.png")
    assert "loopback" in error.message and "127.0.0.1" in error.message


async def test_ipv6_literal_urls_are_checked() -> None:
    error = await refused("http://[::ffff:7f00:1]/a.png")
    assert "loopback" in error.message
    error = await refused("http://[fe80::1%25eth0]/a.png")
    assert "link-local" in error.message


@pytest.mark.parametrize("host", ["256.1.1.1", "1.2.3.4.5", "0x1g.0.0.1", "1.16777216"])
async def test_invalid_numeric_hosts_are_refused(host: str) -> None:
    await refused(f"http://{host}/a.png", resolve=fixed_resolver(["93.184.216.34"]))


async def test_host_allowlist_restricts_names() -> None:
    policy = FetchPolicy(allowlist=("*.example.com", "cdn.test"))
    public = fixed_resolver(["93.184.216.34"])
    assert (await check_url("http://a.b.example.com/x", policy, public)).host == "a.b.example.com"
    assert (await check_url("http://CDN.test./x", policy, public)).host == "cdn.test"
    for url in ("http://example.com/x", "http://evil-example.com/x", "http://other.test/x"):
        with pytest.raises(InvalidRequest, match="not in the allowlist"):
            await check_url(url, policy, public)


async def test_disabled_guard_permits_private_addresses() -> None:
    target = await check_url("http://intranet.test/x.png", FetchPolicy(enabled=False),
                             fixed_resolver(["10.0.0.8"]))
    assert str(target.address) == "10.0.0.8"


def test_policy_rejects_bad_entries_and_unknown_options() -> None:
    with pytest.raises(ValueError):
        FetchPolicy(allowlist=("not a host!",))
    with pytest.raises(ValueError):
        FetchPolicy.from_options({"allow_list": ["x"]})
    assert FetchPolicy.from_options(None) == FetchPolicy()
    assert FetchPolicy.from_options({"max_bytes": 5}).max_bytes == 5


def test_sniffing() -> None:
    assert sniff_image_type(PNG) == "image/png"
    assert sniff_image_type(GIF) == "image/gif"
    assert sniff_image_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image_type(b"<svg") is None


# ---- https: connection to the pinned IP, certificate checked against the name ----


def make_tls_files(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``name`` only (no IP in its SANs)."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
                    signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                              content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False),
                critical=True,
            ).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("tako test CA", ca_key, "tako test CA", ca_key, ca=True)
    server_cert = certificate(name, server_key, "tako test CA", ca_key, ca=False)
    ca_path, cert_path, key_path = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


@contextmanager
def serve_tls(app: Starlette, certfile: Path, keyfile: Path) -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", ssl_certfile=str(certfile),
                            ssl_keyfile=str(keyfile))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "TLS server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    ca, cert, key = make_tls_files(tmp_path_factory.mktemp("tls"), "images.test")
    with serve_tls(app, cert, key) as port:
        yield port, ca


async def test_https_connects_to_pinned_ip_and_verifies_the_name(
    tls_server: tuple[int, Path],
) -> None:
    port, ca = tls_server
    policy = FetchPolicy(allowlist=("127.0.0.1/32",), ca_bundle=str(ca))
    resolve = fixed_resolver(["127.0.0.1"], ["10.0.0.1"])
    seen_hosts.clear()
    mime, data = await fetch_image(f"https://images.test:{port}/cat.png", policy, resolve=resolve)
    assert (mime, data) == ("image/png", PNG)
    assert resolve.calls == ["images.test"]
    assert seen_hosts == [f"images.test:{port}"]


async def test_https_certificate_for_another_name_is_refused(
    tls_server: tuple[int, Path],
) -> None:
    port, ca = tls_server
    policy = FetchPolicy(allowlist=("127.0.0.1/32",), ca_bundle=str(ca))
    error = await refused(f"https://other.test:{port}/cat.png", policy,
                          resolve=fixed_resolver(["127.0.0.1"]))
    assert "could not connect" in error.message and "Hostname mismatch" in error.message
    # Without the tako test CA the system store does not trust the server either.
    error = await refused(f"https://images.test:{port}/cat.png", LOOPBACK_ONLY,
                          resolve=fixed_resolver(["127.0.0.1"]))
    assert "certificate verify failed" in error.message
