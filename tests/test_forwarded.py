"""The effective client of a request (wstund.forwarded), without sockets."""

from __future__ import annotations

import pytest

from wstund.config import Config, ConfigError, validate
from wstund.forwarded import Client, Trusted, client_address, effective_scope, parse_networks

TRUSTED = Trusted(parse_networks(["127.0.0.1", "10.0.0.0/8", "::1"])[0])
HOST = (b"host", b"app.example")


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [HOST, *((b"x-forwarded-for", v.encode()) for v in values)]


def test_an_untrusted_peer_is_its_own_client_whatever_it_claims() -> None:
    headers = [*xff("1.2.3.4"), (b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"x.y")]
    assert client_address("203.0.113.9", headers, TRUSTED) == Client(
        "203.0.113.9", "http", "app.example"
    )
    none = Trusted(())
    assert client_address("127.0.0.1", headers, none) == Client("127.0.0.1", "http", "app.example")
    assert client_address(None, headers, TRUSTED) == Client(None, "http", "app.example")


def test_a_trusted_peer_names_the_rightmost_untrusted_address() -> None:
    # The client wrote "6.6.6.6" itself; the proxy appended what it saw (198.51.100.7).
    assert client_address("127.0.0.1", xff("6.6.6.6, 198.51.100.7"), TRUSTED).address == (
        "198.51.100.7"
    )
    # Two trusted hops (10.1.2.3 is an inner proxy), across repeated header lines.
    chain = xff("6.6.6.6", "198.51.100.7, 10.1.2.3")
    assert client_address("127.0.0.1", chain, TRUSTED).address == "198.51.100.7"
    # Only trusted hops: the leftmost one is the client.
    assert client_address("::1", xff("10.0.0.2, 10.0.0.3"), TRUSTED).address == "10.0.0.2"
    # Ports and brackets as some proxies write them; IPv4-mapped peers.
    assert client_address("127.0.0.1", xff("[2001:db8::1]:443"), TRUSTED).address == "2001:db8::1"
    assert client_address("::ffff:127.0.0.1", xff("192.0.2.1:80"), TRUSTED).address == "192.0.2.1"
    # Garbage stops the walk at the last hop we can vouch for.
    assert client_address("127.0.0.1", xff("unknown"), TRUSTED).address == "127.0.0.1"
    assert client_address("127.0.0.1", xff("6.6.6.6, bad, 10.0.0.9"), TRUSTED).address == (
        "10.0.0.9"
    )
    assert client_address("127.0.0.1", [HOST], TRUSTED).address == "127.0.0.1"


def test_proto_and_host_from_a_trusted_proxy_only_when_sane() -> None:
    headers = [HOST, (b"x-forwarded-proto", b"HTTPS"), (b"x-forwarded-host", b"a.example:8443")]
    assert client_address("10.9.9.9", headers, TRUSTED) == Client(
        "10.9.9.9", "https", "a.example:8443"
    )
    bad = [HOST, (b"x-forwarded-proto", b"gopher"), (b"x-forwarded-host", b"a b/c")]
    assert client_address("10.9.9.9", bad, TRUSTED, proto="https") == Client(
        "10.9.9.9", "https", "app.example"
    )


def test_effective_scope_rewrites_client_scheme_host_and_drops_forwarding_headers() -> None:
    headers = [
        (b"host", b"internal:8080"),
        (b"x-forwarded-for", b"198.51.100.7"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"box.tunnel.example"),
        (b"forwarded", b"for=6.6.6.6"),
        (b"x-other", b"kept"),
    ]
    scope = {"type": "websocket", "scheme": "ws", "client": ("127.0.0.1", 5), "headers": headers}
    out = effective_scope(scope, TRUSTED)
    assert out["client"] == ("198.51.100.7", 0) and out["scheme"] == "wss"
    assert out["headers"] == [(b"host", b"box.tunnel.example"), (b"x-other", b"kept")]
    assert scope["client"] == ("127.0.0.1", 5)  # the original scope is left alone
    untrusted = effective_scope({**scope, "client": ("203.0.113.9", 5)}, TRUSTED)
    assert untrusted["client"] == ("203.0.113.9", 5) and untrusted["scheme"] == "ws"
    assert untrusted["headers"] == [(b"host", b"internal:8080"), (b"x-other", b"kept")]
    plain = {"type": "http", "scheme": "http", "client": ("1.1.1.1", 1), "headers": [HOST]}
    assert effective_scope(plain, TRUSTED) is plain


def test_trusted_proxies_are_validated() -> None:
    config = Config()
    config.server.trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "fd00::/8", "nope", "1.2.3.4/40"]
    with pytest.raises(ConfigError) as refused:
        validate(config)
    assert refused.value.errors == [
        "server.trusted_proxies: 'nope' is not an IP address or CIDR",
        "server.trusted_proxies: '1.2.3.4/40' is not an IP address or CIDR",
    ]
