"""deploy/compose.yaml and compose-gatekeeper.yaml agree with the image and with each other:
every file, variable, command, host and port they name exists, and the replicas' file passes
``serve --check`` under the compose environment. (No compose engine runs here: these checks
read the files as compose would.)"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from gatekeeper.cli import build_parser
from tests.integration.deploy_support import DEPLOY, check_config, known_variables, project_version
from tests.servers import free_port, wait_for_port

COMPOSE = DEPLOY / "compose.yaml"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:?message}`` and ``${VAR:-default}``: a test value, or the default."""

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        return rest if op == ":-" else f"{name.lower()}-{'x' * 40}"

    return re.sub(r"\$\{(\w+)(:[?-])([^}]*)\}", one, value)


def _gatekeepers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The replicas: the image run with its own command (``gatekeeper serve``)."""
    replicas = {n: s for n, s in services.items() if "build" in s and not s.get("command")}
    assert set(replicas) == {"gatekeeper-1", "gatekeeper-2"}
    return replicas


def test_every_built_service_uses_the_projects_dockerfile_and_version(
    services: dict[str, dict[str, Any]],
) -> None:
    """Built services point at deploy/Dockerfile in the repository and tag the image with the
    project's version; the base is the Dockerfile's build argument."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=" in dockerfile
    built = {n: s for n, s in services.items() if "build" in s}
    assert set(built) >= {"migrate", "gatekeeper-1", "gatekeeper-2", "backend-1"}
    for name, service in built.items():
        context = (DEPLOY / service["build"]["context"]).resolve()
        assert (context / "pyproject.toml").is_file(), name
        assert (context / service["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert set(service["build"].get("args", {})) <= {"BASE_IMAGE"}, name
        assert service["image"] == f"gatekeeper:{project_version()}", name


def test_commands_name_what_the_image_has(services: dict[str, dict[str, Any]]) -> None:
    """``gatekeeper ...`` commands parse with the CLI; ``python -m`` modules exist."""
    for name, service in services.items():
        command = service.get("command")
        if not command or "build" not in service:
            continue
        if command[0] == "gatekeeper":
            build_parser().parse_args(command[1:])
        else:
            assert command[:2] == ["python", "-m"], name
            assert importlib.util.find_spec(command[2]) is not None, name


def test_the_replicas_file_passes_serve_check_under_the_compose_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    """Each replica's mounted file exists, its variables are ones Gatekeeper reads, and under
    them ``serve --check`` passes; the hosts in its URLs are compose services."""
    for name, service in _gatekeepers(services).items():
        env = {k: _interpolate(str(v)) for k, v in service["environment"].items()}
        assert set(env) <= known_variables(), name
        mounts = {
            target: source for source, target, *_ in (v.split(":") for v in service["volumes"])
        }
        source = mounts[env["GATEKEEPER_CONFIG_FILE"]]
        path = (DEPLOY / source).resolve()
        assert path.is_file(), source
        config, problems = check_config(path, env)
        assert problems == [], (name, problems)
        for url in (env["GATEKEEPER_REDIS_URL"], env["GATEKEEPER_DATABASE_URL"]):
            assert urlsplit(url).hostname in services, url
        published = [p.rsplit(":", 1)[1] for p in service.get("ports", [])]
        assert all(int(p) == config.listener.port for p in published), name


def test_upstreams_are_compose_services_listening_on_those_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    """Every endpoint of the replicas' file is a backend service whose command listens on
    that port on every interface."""
    config, problems = check_config(DEPLOY / "compose-gatekeeper.yaml", {})
    assert problems == []
    for upstream in config.upstreams.values():
        for endpoint in upstream.endpoints:
            service = services[endpoint.host]
            port, _name, host = service["command"][3:6]
            assert int(port) == endpoint.port
            assert host == "0.0.0.0"


def test_replicas_start_after_migration_and_drain_before_being_killed(
    services: dict[str, dict[str, Any]],
) -> None:
    """The replicas wait for the migrate service to succeed, and compose waits longer than
    listener.shutdown_grace before it kills a stopping replica."""
    config, _ = check_config(DEPLOY / "compose-gatekeeper.yaml", {})
    for name, service in _gatekeepers(services).items():
        condition = service["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
        grace = int(service["stop_grace_period"].removesuffix("s"))
        assert grace > config.listener.shutdown_grace, name
    assert services["migrate"]["command"] == ["gatekeeper", "migrate"]
    assert "migrate" not in services["migrate"]["depends_on"]


def test_the_mock_backend_listens_on_the_host_it_is_given(tmp_path: Path) -> None:
    """``python -m gatekeeper.gateway.mock_backend PORT NAME HOST`` binds HOST (compose's
    backends pass 0.0.0.0; it used to bind 127.0.0.1 whatever it was given)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper.gateway.mock_backend", str(port), "b", "127.0.0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, 20, host="127.0.0.2")
        answer = httpx.get(f"http://127.0.0.2:{port}/health", timeout=5).json()
    finally:
        process.terminate()
        process.wait(10)
    assert answer == {"status": "healthy", "backend": "b"}
