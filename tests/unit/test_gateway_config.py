"""The YAML configuration: valid files load, bad ones list every error with file and path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.gateway.config import ConfigFileError, load_config, parse_config

GOOD = """
listener: {host: 127.0.0.1, port: 8081}
trusted_proxies: [10.0.0.0/8]
policies:
  per-ip: {rate: 5/10s, algorithm: fixed_window}
upstreams:
  backends:
    strategy: round_robin
    endpoints:
      - http://127.0.0.1:5001
      - {url: "http://127.0.0.1:5002", weight: 2}
      - {host: 127.0.0.1, port: 5003}
routes:
  - name: api
    path_prefix: /api
    methods: [get, post]
    upstream: backends
    limits: [per-ip, {policy: per-ip, key: "header:X-Tenant"}]
    timeouts: {connect: 1, read: 5, total: 10}
"""


def test_a_good_file_loads(tmp_path: Path) -> None:
    """Every section is parsed, with short forms expanded."""
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.listener.port == 8081
    endpoints = config.upstreams["backends"].endpoints
    assert [(e.host, e.port, e.weight) for e in endpoints] == [
        ("127.0.0.1", 5001, 1), ("127.0.0.1", 5002, 2), ("127.0.0.1", 5003, 1),
    ]  # fmt: skip
    route = config.routes[0]
    assert route.methods == ["GET", "POST"]
    assert [(limit.policy, limit.key) for limit in route.limits] == [
        ("per-ip", "ip"), ("per-ip", "header:x-tenant"),
    ]  # fmt: skip
    assert config.policies["per-ip"].build("per-ip").rate.limit == 5


def test_every_error_is_listed_with_file_and_field_path(tmp_path: Path) -> None:
    """A file with several mistakes names each one: file, dotted field path and reason."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        """
listener: {port: 70000}
trusted_proxies: [not-a-cidr]
policies:
  p: {rate: 5/fortnight}
upstreams:
  u: {endpoints: [ftp://x]}
routes:
  - {path_prefix: api, upstream: missing, limits: [nope]}
  - {upstream: u, surprise: 1}
"""
    )
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert all(p.startswith(str(path)) for p in problems)
    for fragment in (
        "listener.port",
        "trusted_proxies.0",
        "policies.p.rate",
        "fortnight",
        "upstreams.u.endpoints.0",
        "routes.0.path_prefix",
        "routes.0.upstream: unknown upstream 'missing'",
        "routes.0.limits.0.policy: unknown policy 'nope'",
        "routes.1.surprise",
    ):
        assert fragment in text, fragment
    assert len(problems) >= 8


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    """A missing file and invalid YAML are configuration errors naming the file."""
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("routes: [\n")
    with pytest.raises(ConfigFileError, match="invalid YAML"):
        load_config(broken)


def test_empty_document_is_a_valid_empty_config() -> None:
    """An empty file means defaults: no routes, no pools."""
    config = parse_config(None)
    assert config.routes == []
    assert config.listener.port == 8080


def test_bad_limit_key_is_refused() -> None:
    """A limit key other than ip/api_key/global/header:/query: is an error."""
    data = {
        "policies": {"p": {"rate": "1/s"}},
        "upstreams": {"u": {"endpoints": ["http://127.0.0.1:1"]}},
        "routes": [{"upstream": "u", "limits": [{"policy": "p", "key": "cookie"}]}],
    }
    with pytest.raises(ConfigFileError, match=r"routes\.0\.limits\.0\.key"):
        parse_config(data)
