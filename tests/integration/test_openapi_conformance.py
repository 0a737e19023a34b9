"""The served OpenAPI document describes every answer: schemathesis, run against a real
``gatekeeper serve`` (gateway, observability, identity, waiting room), finds no server error
and no answer outside the document (status code, content type, body schema, headers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

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


def _schemathesis(url: str, cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``schemathesis run`` of ``url``'s /openapi.json with the five checks, seeded."""
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{url}/openapi.json",
            *options,
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
        cwd=cwd,
    )


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path: Path) -> None:
    """Every operation of /openapi.json, fuzzed with the admin token (10 cases each, seeded):
    zero failures of the five checks."""
    gateway = GatewayProcess(tmp_path, _config(), {"GATEKEEPER_BUSINESS_IDS": "shop"}).start()
    try:
        spec = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
        assert len([op for ops in spec["paths"].values() for op in ops]) >= 50
        run = _schemathesis(
            gateway.url, tmp_path, "--header", f"Authorization: Bearer {ADMIN_TOKEN}"
        )
    finally:
        gateway.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Tested: " in run.stdout, run.stdout[-2000:]


def test_the_waiting_room_with_a_tenant_secret_key_has_no_server_error_and_no_mismatch(
    tmp_path: Path,
) -> None:
    """A tenant made through the admin API, as an operator does; then every waiting-room
    operation fuzzed with its secret key as business_id and no admin token (verify, finish and
    /config pass their guard and reach the service): zero failures of the five checks."""
    gateway = GatewayProcess(tmp_path, _config()).start()
    try:
        created = httpx.post(
            f"{gateway.url}/admin/tenants",
            json={"business_id": "fuzz"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        key = created.json()["secret_key"]
        check = httpx.get(f"{gateway.url}/config", headers={"business_id": key}, timeout=10)
        assert check.status_code == 200, check.text  # the key passes the guard
        har = tmp_path / "exchanges.har"
        run = _schemathesis(
            gateway.url,
            tmp_path,
            "--header",
            f"business_id: {key}",
            "--include-tag",
            "waiting room",
            "--report",
            "har",
            "--report-har-path",
            str(har),
        )
    finally:
        gateway.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Tested: " in run.stdout, run.stdout[-2000:]
    # The guarded operations were reached with the key: never a 403, and answers only a caller
    # past the guard gets (the settings read and changed; a token checked and found bad).
    seen: dict[tuple[str, str], set[int]] = {}
    for entry in json.loads(har.read_text())["log"]["entries"]:
        where = (entry["request"]["method"], urlsplit(entry["request"]["url"]).path)
        seen.setdefault(where, set()).add(entry["response"]["status"])
    for where in (("GET", "/queue/verify"), ("DELETE", "/queue/finish"), ("GET", "/config")):
        assert where in seen, where
        assert 403 not in seen[where], (where, seen[where])
    assert 200 in seen[("GET", "/config")]
    assert 200 in seen[("POST", "/config")]
    assert 401 in seen[("GET", "/queue/verify")]  # a made-up token, checked past the guard
