"""``gatekeeper demo --envoy`` (``make demo-envoy``) as a process: the README's burst of seven
through Envoy gives five 200s and two 429s with Retry-After, and ext_authz guards /api/v2/."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.servers import free_port, wait_for_port


def test_demo_envoy_burst_of_seven(tmp_path: Path) -> None:
    """Envoy in front of the demo's backends, Gatekeeper deciding: 5 answered, 2 refused."""
    port, envoy_port, grpc_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    log = (tmp_path / "demo.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper", "demo", "--envoy", "--port", str(port),
         "--envoy-port", str(envoy_port), "--grpc-port", str(grpc_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_for_port(envoy_port, timeout=60)
        with httpx.Client(base_url=f"http://127.0.0.1:{envoy_port}", timeout=10) as client:
            # Until Envoy's authorization reaches Gatekeeper (a 401, which costs no quota).
            deadline = time.monotonic() + 30
            while client.get("/api/v2/data").status_code != 401:
                assert time.monotonic() < deadline, "Envoy never reached Gatekeeper"
                time.sleep(0.2)
            responses = [client.get("/api/info") for _ in range(7)]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert [r.status_code for r in responses] == [200] * 5 + [429] * 2
    assert all(r.headers["server"] == "envoy" for r in responses)
    assert responses[0].headers["ratelimit-policy"] == '"per-client";q=5;w=60'
    refused = responses[-1]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["status"] == 429
    assert process.returncode == 0
