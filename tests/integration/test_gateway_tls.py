"""HTTPS on both sides of the gateway, with certificates from a test CA (``trustme``): upstream
endpoints verified (CA file, SNI name, refusal of an unknown CA, ``verify: false``), health
checks and streamed uploads over TLS; a TLS listener whose scheme reaches the upstream; and
configuration errors that name the file."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import pytest
import trustme

from gatekeeper.gateway.config import ConfigFileError, parse_config
from tests.integration.gateway_fixtures import (
    Handler,
    ScriptedUpstream,
    config_for,
    raw_exchange,
    read_request,
    running_gateway,
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def upstream_tls(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
    return context


def answering(seen: list[bytes]) -> Handler:
    """Answers every request on the connection with 200 and remembers its head (and body)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            if b"content-length: " in head.lower():
                head += b"<%d body bytes>" % len(body)
            seen.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
            await writer.drain()

    return handler


def _tls_pool(url: str, **tls: object) -> dict[str, object]:
    return {"backends": {"endpoints": [url], "tls": tls}}


async def test_an_https_endpoint_is_verified_against_the_ca_file_and_kept_alive(
    ca: trustme.CA, ca_file: str
) -> None:
    seen: list[bytes] = []
    async with ScriptedUpstream(answering(seen), tls=upstream_tls(ca)) as up:
        config = config_for([], upstreams=_tls_pool(up.url, ca_file=ca_file))
        async with running_gateway(config) as gw:
            for path in (b"/api/a", b"/api/b"):
                raw = await raw_exchange(
                    gw.server.port,
                    b"GET %b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path,
                )
                assert raw.startswith(b"HTTP/1.1 200 OK"), raw
                assert raw.endswith(b"secure")
    assert len(seen) == 2
    assert b"x-forwarded-proto: http\r\n" in seen[0].lower()
    assert len(up.writers) == 1  # one TLS connection, reused


async def test_a_streamed_upload_crosses_a_tls_upstream(ca: trustme.CA, ca_file: str) -> None:
    """A body too big to buffer (the pipeline streams it) goes through TLS whole."""
    seen: list[bytes] = []
    body = b"x" * (3 * 1024 * 1024)
    async with ScriptedUpstream(answering(seen), tls=upstream_tls(ca)) as up:
        config = config_for([], upstreams=_tls_pool(up.url, ca_file=ca_file))
        async with running_gateway(config) as gw:
            raw = await raw_exchange(
                gw.server.port,
                b"POST /api/upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%b" % (len(body), body),
            )
    assert raw.startswith(b"HTTP/1.1 200 OK"), raw[:200]
    assert seen[0].endswith(b"<%d body bytes>" % len(body))


async def test_an_unknown_ca_is_refused_with_a_502_unless_verification_is_off(
    ca: trustme.CA,
) -> None:
    """Without the test CA the certificate does not verify: 502 naming the problem, the
    endpoint judged failing. ``verify: false`` accepts it (test rigs only)."""
    seen: list[bytes] = []
    async with ScriptedUpstream(answering(seen), tls=upstream_tls(ca)) as up:
        refused = config_for([], upstreams=_tls_pool(up.url))
        async with running_gateway(refused) as gw:
            raw = await raw_exchange(
                gw.server.port, b"GET /api/a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            endpoint = gw.runtime.snapshot.pools["backends"].endpoints[0]  # type: ignore[union-attr]
            assert endpoint.failures == 1
        assert raw.startswith(b"HTTP/1.1 502 "), raw
        assert b"bad_gateway" in raw
        assert b"certificate" in raw.lower()
        assert seen == []
        trusting = config_for([], upstreams=_tls_pool(up.url, verify=False))
        async with running_gateway(trusting) as gw:
            raw = await raw_exchange(
                gw.server.port, b"GET /api/a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
        assert raw.startswith(b"HTTP/1.1 200 OK"), raw


async def test_server_name_sets_sni_and_the_name_verified(ca: trustme.CA, ca_file: str) -> None:
    """An endpoint addressed by IP whose certificate names a host: ``server_name`` says which
    name to verify (and to send as SNI); without it the certificate does not match."""
    seen: list[bytes] = []
    names: list[str | None] = []
    context = upstream_tls(ca, "api.internal")

    def remember(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = remember  # type: ignore[assignment]
    async with ScriptedUpstream(answering(seen), tls=context) as up:
        named = config_for(
            [], upstreams=_tls_pool(up.url, ca_file=ca_file, server_name="api.internal")
        )
        async with running_gateway(named) as gw:
            raw = await raw_exchange(
                gw.server.port, b"GET /api/a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
        assert raw.startswith(b"HTTP/1.1 200 OK"), raw
        assert names == ["api.internal"]
        unnamed = config_for([], upstreams=_tls_pool(up.url, ca_file=ca_file))
        async with running_gateway(unnamed) as gw:
            raw = await raw_exchange(
                gw.server.port, b"GET /api/a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
        assert raw.startswith(b"HTTP/1.1 502 "), raw


async def test_health_checks_speak_tls_to_https_endpoints(ca: trustme.CA, ca_file: str) -> None:
    """Active health checks of an https endpoint reach it over TLS and pass."""
    seen: list[bytes] = []
    async with ScriptedUpstream(answering(seen), tls=upstream_tls(ca)) as up:
        pools = _tls_pool(up.url, ca_file=ca_file)
        pools["backends"]["health"] = {"path": "/healthz", "interval": 0.05}  # type: ignore[index]
        async with running_gateway(config_for([], upstreams=pools)) as gw:
            pool = gw.runtime.snapshot.pools["backends"]  # type: ignore[union-attr]
            endpoint = pool.endpoints[0]
            # Wait for a recorded result, not for the upstream to see the request: the checker
            # records only after reading the answer, which a loaded machine may not have done.
            for _ in range(250):
                if endpoint.health_successes or endpoint.last_check_error:
                    break
                await asyncio.sleep(0.02)
            assert any(head.startswith(b"GET /healthz ") for head in seen)
            assert endpoint.healthy
            assert endpoint.health_successes >= 1
            assert endpoint.last_check_error == ""


async def test_a_tls_listener_serves_https_and_tells_the_upstream(
    ca: trustme.CA, tmp_path: Path
) -> None:
    """Clients speak HTTPS to the gateway; the upstream (plain HTTP) learns the scheme from
    X-Forwarded-Proto and Forwarded."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    seen: list[bytes] = []
    async with ScriptedUpstream(answering(seen)) as up:
        config = config_for(
            [up.url],
            listener={
                "host": "127.0.0.1",
                "port": 8443,
                "tls": {"cert_file": str(cert_file), "key_file": str(key_file)},
            },
        )
        async with running_gateway(config) as gw:
            client_context = ssl.create_default_context()
            ca.configure_trust(client_context)
            base = f"https://127.0.0.1:{gw.server.port}"
            async with httpx.AsyncClient(verify=client_context, base_url=base) as client:
                response = await client.get("/api/a")
                health = await client.get("/health")
    assert response.status_code == 200
    assert response.text == "secure"
    assert health.json() == {"status": "healthy"}
    head = seen[0].lower()
    assert b"x-forwarded-proto: https\r\n" in head
    assert b"proto=https" in head


def test_unusable_tls_files_stop_the_configuration_naming_them(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigFileError) as listener:
        parse_config({"listener": {"tls": {"cert_file": missing, "key_file": missing}}})
    assert "listener.tls" in str(listener.value)
    assert "nope.pem" in str(listener.value)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigFileError) as upstream:
        parse_config({"upstreams": _tls_pool("https://api.example.com", ca_file=str(garbage))})
    assert "upstreams.backends.tls" in str(upstream.value)
    assert "garbage.pem" in str(upstream.value)
    with pytest.raises(ConfigFileError) as scheme:
        parse_config({"upstreams": {"backends": {"endpoints": ["ftp://files.example.com"]}}})
    assert "https://host:port" in str(scheme.value)
    https = parse_config({"upstreams": {"backends": {"endpoints": ["https://api.example.com"]}}})
    endpoint = https.upstreams["backends"].endpoints[0]
    assert (endpoint.host, endpoint.port, endpoint.tls) == ("api.example.com", 443, True)
