"""``gatekeeper serve --check`` refuses what ``serve``'s start-up refuses from the environment and
the file, and accepts what it accepts.

Each case is driven through both paths: the real start-up (``Gateway.start``, which does not go
through the shared pre-flight checks, so a refusal there is the start-up's own) and the command
``gatekeeper serve --check``. A case is a refusal only if the start-up refuses it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatekeeper.app import Gateway
from gatekeeper.cli import main
from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.config import load_config
from gatekeeper.settings import Settings, from_environment
from tests.cluster import RedisClusterServers
from tests.servers import RedisServer

REPO = Path(__file__).resolve().parents[2]
BAKED = REPO / "deploy" / "gatekeeper.yaml"
SECRET = "s" * 40  # long enough for identity (16) and the waiting room's HS256 (32)


def _base_config() -> dict[str, Any]:
    return {
        "listener": {"host": "127.0.0.1", "port": 8080, "shutdown_grace": 1},
        "policies": {"per-ip": {"rate": "5/10s", "algorithm": "fixed_window"}},
        "upstreams": {"api": {"endpoints": ["http://127.0.0.1:9"]}},
        "routes": [{"name": "api", "path_prefix": "/api", "upstream": "api", "limits": ["per-ip"]}],
    }


def _geo(database: str) -> Any:
    """An edit adding a geo route over one datacenter whose database is ``database``."""

    def edit(config: dict[str, Any]) -> None:
        config["geo"] = {
            "database": database,
            "regions": {"eu": {"continents": ["EU"]}},
            "datacenters": {
                "eu-west": {"region": "eu", "latitude": 53.3, "longitude": -6.3, "upstream": "api"}
            },
        }
        config["routes"].append({"name": "geo", "path_prefix": "/geo-api", "geo": True})

    return edit


def _cached(config: dict[str, Any]) -> None:
    config["cache"] = {"store": "redis"}
    config["routes"][0]["cache"] = True


@dataclass
class Case:
    """A refusal: environment (``REDIS`` stands for the private Redis' URL), a change to the
    file, and what the refusal says (alternatives when more than one part may refuse first:
    whichever the start-up names, ``--check`` must name too)."""

    env: dict[str, str] = field(default_factory=dict)
    edit: Any = None
    says: str | tuple[str, ...] = ""


CASES: dict[str, Case] = {
    # The case: the image's baked file said OK to --check, then serve refused it.
    "cache-redis-without-redis-url": Case(edit=_cached, says="needs GATEKEEPER_REDIS_URL"),
    "shared-redis-without-jwt-secret": Case(
        env={"GATEKEEPER_REDIS_URL": "REDIS"}, says="GATEKEEPER_JWT_SECRET is required"
    ),
    "jwt-secret-too-short-for-identity": Case(
        env={"GATEKEEPER_JWT_SECRET": "short"}, says="at least 16 characters"
    ),
    "jwt-secret-too-short-for-the-waiting-room": Case(
        env={"GATEKEEPER_JWT_SECRET": "x" * 20}, says="at least 32 bytes"
    ),
    "eddsa-across-replicas-without-a-key": Case(
        env={
            "GATEKEEPER_REDIS_URL": "REDIS",
            "GATEKEEPER_JWT_SECRET": SECRET,
            "GATEKEEPER_WAITINGROOM_SIGNING": "eddsa",
        },
        says="GATEKEEPER_WAITINGROOM_PRIVATE_KEY_FILE is required",
    ),
    "eddsa-key-file-missing": Case(
        env={
            "GATEKEEPER_WAITINGROOM_SIGNING": "eddsa",
            "GATEKEEPER_WAITINGROOM_PRIVATE_KEY_FILE": "/nonexistent/wr.pem",
        },
        says="cannot load Ed25519 key",
    ),
    "waiting-room-variable-out-of-range": Case(
        env={"GATEKEEPER_WAITINGROOM_GRACE_SECONDS": "1"},
        says="GATEKEEPER_WAITINGROOM_GRACE_SECONDS",
    ),
    "redis-url-of-an-unknown-scheme": Case(
        env={"GATEKEEPER_REDIS_URL": "http://127.0.0.1:1/0", "GATEKEEPER_JWT_SECRET": SECRET},
        says=("unknown scheme 'http'", "Redis URL must specify"),
    ),
    "redis-cluster-url-with-a-bad-node": Case(
        env={
            "GATEKEEPER_REDIS_URL": "redis+cluster://127.0.0.1:7000,127.0.0.1:x",
            "GATEKEEPER_JWT_SECRET": SECRET,
        },
        says="'127.0.0.1:x' is not host:port",
    ),
    "database-url-not-supported": Case(
        env={"GATEKEEPER_DATABASE_URL": "mysql://db/gatekeeper"}, says="is not supported"
    ),
    "settings-variable-invalid": Case(
        env={"GATEKEEPER_LOG_LEVEL": "loud"}, says="Input should be 'debug'"
    ),
    "listener-tls-file-unreadable": Case(
        edit=lambda c: c["listener"].update(
            tls={"cert_file": "/nonexistent/cert.pem", "key_file": "/nonexistent/key.pem"}
        ),
        says="no such file: /nonexistent/cert.pem",
    ),
    "geo-database-missing": Case(
        edit=_geo("/nonexistent/GeoLite2-City.mmdb"),
        says="geo.database: '/nonexistent/GeoLite2-City.mmdb' does not exist",
    ),
    "geo-database-not-a-maxmind-file": Case(
        edit=_geo(__file__),  # a Python source: a file, but no database
        says=f"geo.database: {__file__!r} is not a MaxMind DB file",
    ),
}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_server: RedisServer) -> Any:
    """Sets a case's environment (nothing else from the outside) and returns a setter."""
    import os

    for name in list(os.environ):
        if name.startswith("GATEKEEPER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GATEKEEPER_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}")

    def apply(env: dict[str, str | None]) -> None:
        for name, value in env.items():
            if value is None:
                monkeypatch.delenv(name)
            else:
                monkeypatch.setenv(name, redis_server.url if value == "REDIS" else value)

    return apply


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(json.dumps(config))
    return path


async def _start_up(path: Path, *, bare: bool = False) -> str | None:
    """The start-up's own refusal of the file under the current environment (``None``: it
    started, and was stopped again)."""
    try:
        settings = Settings()
        config = load_config(str(path))
    except (ValueError, ConfigurationError) as exc:
        return str(exc)
    gateway = Gateway(settings, config, host="127.0.0.1", port=0, components=() if bare else None)
    try:
        await gateway.start()
    except Exception as exc:
        return str(exc)
    await gateway.stop()
    return None


def _check(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()  # only what the command prints
    code = main(["serve", "--check", "--config", str(path), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("name", list(CASES))
async def test_check_refuses_what_the_start_up_refuses(
    name: str, environment: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The start-up refuses the case naming the problem, and so does ``serve --check``."""
    case = CASES[name]
    environment(case.env)
    config = _base_config()
    if case.edit is not None:
        case.edit(config)
    path = _write(tmp_path, config)

    refused = await _start_up(path)
    assert refused is not None, f"{name}: the start-up accepted it, so it is no refusal"
    says = [case.says] if isinstance(case.says, str) else list(case.says)
    named = [fragment for fragment in says if fragment in refused]
    assert named, refused

    code, output = _check(path, capsys)
    assert code == 1, output
    assert named[0] in output
    assert "OK" not in output


async def test_check_accepts_what_the_start_up_accepts(
    environment: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With shared Redis and a secret the same file starts and passes ``--check``; ``--bare``
    runs no waiting room, so neither refuses Redis without a secret there."""
    environment({"GATEKEEPER_REDIS_URL": "REDIS", "GATEKEEPER_JWT_SECRET": SECRET})
    config = _base_config()
    _cached(config)
    path = _write(tmp_path, config)
    assert await _start_up(path) is None
    assert _check(path, capsys) == (0, f"{path}: OK\n")

    environment({"GATEKEEPER_JWT_SECRET": None})
    assert (await _start_up(path)) is not None  # the full start-up refuses it...
    assert await _start_up(path, bare=True) is None  # ...the data plane alone does not
    assert _check(path, capsys, "--bare") == (0, f"{path}: OK\n")
    assert _check(path, capsys)[0] == 1


async def test_check_and_start_up_accept_a_redis_cluster_url(
    environment: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    redis_cluster: RedisClusterServers,
) -> None:
    """Issue 20's case: ``GATEKEEPER_REDIS_URL=redis+cluster://...`` (and ``rediss+cluster``
    to ``--check``) no longer stops ``serve`` with redis-py's "must specify one of the following
    schemes" ValueError; every component starts on the cluster, ``--bare`` too."""
    environment({"GATEKEEPER_REDIS_URL": redis_cluster.url, "GATEKEEPER_JWT_SECRET": SECRET})
    config = _base_config()
    _cached(config)
    path = _write(tmp_path, config)
    assert await _start_up(path) is None
    assert await _start_up(path, bare=True) is None
    assert _check(path, capsys) == (0, f"{path}: OK\n")
    tls = redis_cluster.url.replace("redis+cluster://", "rediss+cluster://")
    environment({"GATEKEEPER_REDIS_URL": tls})
    assert _check(path, capsys) == (0, f"{path}: OK\n")


async def test_baked_image_config_starts_with_the_documented_environment(
    environment: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """deploy/gatekeeper.yaml (baked into the image) passes ``--check`` and starts both with no
    variable set at all and with shared Redis plus its secret (the Dockerfile's documented
    environment)."""
    for env in ({}, {"GATEKEEPER_REDIS_URL": "REDIS", "GATEKEEPER_JWT_SECRET": SECRET}):
        environment(env)
        assert _check(BAKED, capsys) == (0, f"{BAKED}: OK\n"), env
        assert await _start_up(BAKED) is None, env


def test_serve_refuses_before_starting_with_every_problem_on_stderr(tmp_path: Path) -> None:
    """The ``serve`` command (not only ``--check``) refuses at once with exit code 1 and one line
    per problem, no traceback: a Redis cache without a Redis URL, and a secret too short for
    identity and for the waiting room."""
    config = _base_config()
    _cached(config)
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"PATH": "/usr/bin:/bin", "GATEKEEPER_JWT_SECRET": "short"}
    done = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "serve", "--config", str(path)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith("gatekeeper serve: ") for line in lines), lines
    assert len(lines) == 3, lines
    for says in ("needs GATEKEEPER_REDIS_URL", "at least 16 characters", "at least 32 bytes"):
        assert sum(says in line for line in lines) == 1, (says, lines)
    assert not (tmp_path / "gatekeeper.db").exists()  # refused before touching the database


def test_a_bad_variable_is_named() -> None:
    """A bad ``GATEKEEPER_*`` value is refused naming the variable, not as a pydantic dump."""
    import os

    os.environ["GATEKEEPER_LOG_LEVEL"] = "loud"
    try:
        with pytest.raises(ConfigurationError) as caught:
            from_environment(Settings)
    finally:
        del os.environ["GATEKEEPER_LOG_LEVEL"]
    assert str(caught.value).startswith("GATEKEEPER_LOG_LEVEL: Input should be 'debug'")


async def test_check_does_not_warn_of_what_only_a_running_replica_lacks(
    environment: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """Building the state to check it is not running it: ``--check`` of a route with ``auth``
    says OK without the start-up's warning that the identity component is missing, which the
    data plane alone (``--bare``) does log."""
    environment({})
    config = _base_config()
    config["routes"][0]["auth"] = "any"
    path = _write(tmp_path, config)
    warning = "routes with auth answer 503"
    assert _check(path, capsys, "--bare") == (0, f"{path}: OK\n")
    assert warning not in caplog.text
    assert await _start_up(path, bare=True) is None
    assert warning in caplog.text
