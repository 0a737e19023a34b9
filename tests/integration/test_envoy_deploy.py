"""The Envoy configuration users copy (deploy/envoy/) and the generated bootstrap are accepted
by the real Envoy (``--mode validate``), and the Gatekeeper side by ``parse_config``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from gatekeeper.envoy.bootstrap import bootstrap
from gatekeeper.envoy.process import envoy_binary
from gatekeeper.gateway.config import parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "envoy"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_deploy_envoy_yaml_is_valid() -> None:
    """deploy/envoy/envoy.yaml: Envoy accepts it as it is."""
    result = validate(DEPLOY / "envoy.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_gatekeeper_section_matches_envoy_yaml() -> None:
    """deploy/envoy/gatekeeper.yaml parses, and names the domain envoy.yaml asks for."""
    config = parse_config(yaml.safe_load((DEPLOY / "gatekeeper.yaml").read_text()))
    envoy = yaml.safe_load((DEPLOY / "envoy.yaml").read_text())
    filters = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    http_filters = filters[0]["typed_config"]["http_filters"]
    ratelimit = next(f for f in http_filters if f["name"] == "envoy.filters.http.ratelimit")
    assert [d.domain for d in config.envoy.domains] == [ratelimit["typed_config"]["domain"]]
    assert config.envoy.grpc_port == 8081


@pytest.mark.parametrize("deny", [True, False])
def test_generated_bootstrap_is_valid(tmp_path: Path, deny: bool) -> None:
    """What the demo, the tests and the benchmark run is valid Envoy configuration."""
    path = tmp_path / "envoy.json"
    config = bootstrap(
        listen=("127.0.0.1", 10000),
        backends=[("127.0.0.1", 9001), ("127.0.0.1", 9002)],
        gatekeepers=[("127.0.0.1", 8081), ("127.0.0.1", 8082)],
        domain="edge",
        routes=[("/private/", True), ("/", False)],
        failure_mode_deny=deny,
        admin=("127.0.0.1", 9901),
    )
    path.write_text(json.dumps(config))
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
