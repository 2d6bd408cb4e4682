"""Manifest and list validation without sockets."""

from __future__ import annotations

import json

import pytest

from wstund.marketplace.manifest import MarketplaceError, is_newer, parse_list, parse_manifest


def manifest(**fields: object) -> bytes:
    base: dict[str, object] = {
        "name": "echo",
        "endpoints": [{"path": "main", "file": "main.html", "type": "client"}],
    }
    return json.dumps(base | fields).encode()


def test_reference_manifest_is_accepted() -> None:
    parsed = parse_manifest(
        manifest(
            displayName="Echo",
            version="1.2.0",
            icon="x",
            extra="ignored",
            endpoints=[
                {"path": "service", "file": "service.html", "type": "service"},
                {"path": "main", "file": "ui/main.html", "type": "client"},
                {"path": "style", "file": "s.css", "type": "client", "contentType": "text/css"},
            ],
        ),
        "echo",
        64,
    )
    assert [e.file for e in parsed.endpoints] == ["service.html", "ui/main.html", "s.css"]


def test_reference_documented_paths_with_a_slash() -> None:
    # The reference marketplace documentation's manifest, field for field.
    documented = {
        "name": "myservice",
        "displayName": "My Awesome Service",
        "description": "A great service for doing things",
        "version": "1.0.0",
        "author": "Your Name",
        "icon": "https://example.com/icon.png",
        "endpoints": [
            {"path": "/service", "file": "index.html", "type": "service"},
            {"path": "/main", "file": "main.html", "type": "client"},
        ],
    }
    parsed = parse_manifest(json.dumps(documented).encode(), "myservice", 64)
    assert [(e.path, e.file, e.type) for e in parsed.endpoints] == [
        ("service", "index.html", "service"),
        ("main", "main.html", "client"),
    ]
    twice = documented | {
        "endpoints": [{"path": "/main", "file": "a.html"}, {"path": "main", "file": "b.html"}]
    }
    with pytest.raises(MarketplaceError) as info:
        parse_manifest(json.dumps(twice).encode(), "myservice", 64)
    assert info.value.code == "invalid_manifest"


@pytest.mark.parametrize(
    ("endpoint", "error"),
    [
        ({"path": "main", "file": "../x"}, "invalid_path"),
        ({"path": "main", "file": "a/../../x"}, "invalid_path"),
        ({"path": "main", "file": "/etc/passwd"}, "invalid_path"),
        ({"path": "main", "file": "a\\b"}, "invalid_path"),
        ({"path": "main", "file": "a\x00b"}, "invalid_path"),
        ({"path": "main", "file": ""}, "invalid_path"),
        ({"path": "../main", "file": "m.html"}, "invalid_path"),
        ({"path": "/../main", "file": "m.html"}, "invalid_path"),
        ({"path": "//main", "file": "m.html"}, "invalid_path"),
        ({"path": "/", "file": "m.html"}, "invalid_path"),
        ({"path": "/a/b", "file": "m.html"}, "invalid_path"),
        ({"path": "a/b", "file": "m.html"}, "invalid_path"),
        ({"path": "main", "file": "m.html", "sha256": "zz"}, "invalid_manifest"),
        (
            {"path": "main", "file": "m.html", "contentType": "text/html\r\nX: y"},
            "invalid_manifest",
        ),
        ({"path": "main", "file": "m.html", "type": "other"}, "invalid_manifest"),
        ({"file": "m.html"}, "invalid_manifest"),
    ],
)
def test_unsafe_endpoints_are_refused(endpoint: dict[str, str], error: str) -> None:
    with pytest.raises(MarketplaceError) as info:
        parse_manifest(manifest(endpoints=[endpoint]), "echo", 64)
    assert info.value.code == error


@pytest.mark.parametrize(
    ("data", "name", "error"),
    [
        (manifest(name="admin"), "admin", "reserved_name"),
        (manifest(name="fileshare"), "fileshare", "builtin_conflict"),
        (manifest(name="Echo"), "Echo", "invalid_name"),
        (manifest(name="other"), "echo", "invalid_manifest"),
        (manifest(endpoints=[]), "echo", "invalid_manifest"),
        (
            manifest(endpoints=[{"path": "m", "file": "a"}, {"path": "m", "file": "b"}]),
            "echo",
            "invalid_manifest",
        ),
        (
            manifest(endpoints=[{"path": f"p{i}", "file": "a"} for i in range(3)]),
            "echo",
            "invalid_manifest",
        ),
        (b"[1, 2", "echo", "invalid_manifest"),
        (b'{"endpoints": []}', "echo", "invalid_manifest"),
    ],
)
def test_bad_manifests_are_refused(data: bytes, name: str, error: str) -> None:
    with pytest.raises(MarketplaceError) as info:
        parse_manifest(data, name, 2)
    assert info.value.code == error


def test_list_drops_unusable_names_and_refuses_garbage() -> None:
    entries = parse_list(b'[{"name": "echo", "version": "1"}, {"name": "../x"}, {"name": "A"}]')
    assert [e.name for e in entries] == ["echo"]
    with pytest.raises(MarketplaceError):
        parse_list(b'{"name": "echo"}')


def test_versions() -> None:
    assert is_newer("1.10.0", "1.9.3") and not is_newer("1.0", "1.0") and not is_newer("1.0", "2.0")
    assert is_newer("beta", "alpha") and not is_newer("beta", "beta")


def test_config_refuses_non_http_marketplace_urls() -> None:
    from wstund.config import ConfigError, parse

    assert parse("[marketplace]\nurls = ['https://m.example/x']").marketplace.urls
    with pytest.raises(ConfigError) as info:
        parse("[marketplace]\nurls = ['ftp://m.example']\nmax_file_size = 0")
    assert "marketplace.urls: 'ftp://m.example' is not an http(s) URL" in info.value.errors
    assert any(e.startswith("marketplace.max_file_size") for e in info.value.errors)
