"""The served OpenAPI document describes every answer: schemathesis, run against a real
``gatekeeper serve`` (gateway, observability, identity, waiting room), finds no server error
and no answer outside the document (status code, content type, body schema, headers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway_process import ADMIN_TOKEN, GatewayProcess

pytestmark = pytest.mark.slow

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


def _config() -> dict[str, object]:
    return {
        "upstreams": {"backends": {"endpoints": [{"host": "127.0.0.1", "port": 9}]}},
        "routes": [{"name": "api", "path_prefix": "/api/info", "upstream": "backends"}],
    }


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path: Path) -> None:
    """Every operation of /openapi.json, fuzzed with the admin token (10 cases each, seeded):
    zero failures of the five checks."""
    gateway = GatewayProcess(tmp_path, _config(), {"GATEKEEPER_BUSINESS_IDS": "shop"}).start()
    try:
        spec = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
        assert len([op for ops in spec["paths"].values() for op in ops]) >= 50
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{gateway.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {ADMIN_TOKEN}",
                "--checks",
                CHECKS,
                "--max-examples",
                "10",
                "--seed",
                "1",
                # (One worker: Hypothesis' lambda descriptions are not thread-safe.)
                "--workers",
                "1",
                "--no-shrink",
                "--phases",
                "examples,coverage,fuzzing",
                "--request-timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=280,
            cwd=tmp_path,
        )
    finally:
        gateway.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Tested: " in run.stdout, run.stdout[-2000:]
