"""What the deployment tests share: the repository's deploy files, the variables Gatekeeper
reads, and ``serve --check`` of a configuration under a given environment."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from gatekeeper.gateway.config import GatewayConfig, load_config
from gatekeeper.preflight import preflight
from gatekeeper.settings import Settings
from gatekeeper.waitingroom.config import WaitingRoomSettings

__all__ = ["DEPLOY", "REPO", "check_config", "known_variables", "project_version"]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def known_variables() -> set[str]:
    """Every ``GATEKEEPER_*`` variable a replica reads (its settings classes' fields)."""
    names: set[str] = set()
    for cls in (Settings, WaitingRoomSettings):
        prefix = str(cls.model_config.get("env_prefix", ""))
        names |= {(prefix + field).upper() for field in cls.model_fields}
    return names


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("GATEKEEPER_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(env)
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("GATEKEEPER_")]:
            del os.environ[name]
        os.environ.update(saved)


def check_config(path: Path, env: Mapping[str, str]) -> tuple[GatewayConfig, list[str]]:
    """The configuration at ``path`` and what ``serve --check`` refuses in it under ``env``
    (only ``env``'s ``GATEKEEPER_*`` variables are set meanwhile)."""
    with _environment(env):
        config = load_config(str(path))
        return config, preflight(Settings(), config)
