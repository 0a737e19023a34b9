"""``gatekeeper demo`` as a process: round robin, 5 per 10 s per IP, /health."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.servers import free_port, wait_for_port


def test_demo_burst_of_seven_gives_five_200s_and_two_429s(tmp_path: Path) -> None:
    """The demo proxies /api/info round robin to three named backends, limits a burst of 7 to
    five 200s and two 429s, and answers /health."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    log = (tmp_path / "demo.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper", "demo", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        wait_for_port(port, timeout=30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            responses = [client.get("/api/info") for _ in range(7)]
            health = client.get("/health")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 5 + [429] * 2
    names = [r.json()["backend"] for r in responses[:5]]
    assert set(names[:3]) == {"backend-1", "backend-2", "backend-3"}
    assert names[3:] == names[:2]
    denied = responses[5]
    assert denied.json()["status"] == 429
    assert int(denied.headers["retry-after"]) >= 1
    assert health.status_code == 200
    assert health.json() == {"status": "healthy"}
    assert process.returncode == 0


def test_demo_prints_the_tenant_secret_key_beside_the_admin_token(tmp_path: Path) -> None:
    """The demo prints its tenant's secret key (this run's): with it /config answers, with the
    public id "demo" it is 403, and browsers still queue with the public id."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    log_path = tmp_path / "demo.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper", "demo", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        wait_for_port(port, timeout=30)
        found = None
        for _ in range(100):  # the banner follows the listener by a moment
            found = re.search(
                r"tenant 'demo' secret key \(this run\): (gkwr_\S+)", log_path.read_text()
            )
            if found:
                break
            time.sleep(0.1)
        assert found is not None, log_path.read_text()
        assert "admin token (this run):" in log_path.read_text()
        secret = found.group(1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            with_key = client.get("/config", headers={"business_id": secret})
            public = client.get("/config", headers={"business_id": "demo"})
            queued = client.post("/queue/enqueue", headers={"business_id": "demo", "user_id": "u"})
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert with_key.status_code == 200
    assert with_key.json()["updated_config"]["admission_limit"] == 10
    assert public.status_code == 403
    assert public.json()["needed"] == "secret_key"
    assert queued.status_code == 200


def test_demo_routes_a_european_client_to_the_eu_datacenter(tmp_path: Path) -> None:
    """One curl with a European X-Forwarded-For is answered by eu-west (the README's line);
    without it, loopback lands in the default region (us-east); /geo/stats counts both."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    log = (tmp_path / "demo.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper", "demo", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        wait_for_port(port, timeout=30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            european = client.get("/api/geo", headers={"X-Forwarded-For": "81.2.69.142"})
            local = client.get("/api/geo")
            stats = client.get("/geo/stats").json()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert european.status_code == 200
    assert european.headers["x-datacenter"] == "eu-west"
    assert european.headers["x-datacenter-region"] == "eu"
    assert european.json()["backend"] == "backend-2"
    assert european.json()["headers"]["x-client-region"] == "eu"
    assert local.headers["x-datacenter"] == "us-east"
    assert stats["by_datacenter"] == {"eu-west": 1, "us-east": 1}
    assert stats["database"]["type"] == "Gatekeeper-Demo-City"


def test_demo_shows_every_seeds_scenario(tmp_path: Path) -> None:
    """Beside /api/info: seed 001's token bucket per IP and path, seed 004's JWT and
    premium-tier routes, a route cached 30 s with Cache-Status, backends that answer with
    hostname and message, and a summary at /."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    log_path = tmp_path / "demo.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper", "demo", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        wait_for_port(port, timeout=30)
        admin = None
        for _ in range(100):  # the banner follows the listener by a moment
            admin = re.search(r"admin token \(this run\): (\S+)", log_path.read_text())
            if admin:
                break
            time.sleep(0.1)
        assert admin is not None, log_path.read_text()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            orders = [client.get("/api/v1/orders").status_code for _ in range(6)]
            users = client.get("/api/v1/users")
            anonymous = client.get("/api/v2/data")
            registered = client.post(
                "/auth/register",
                json={"email": "demo-user@example.com", "password": "a long demo password"},
            )
            token = {"authorization": f"Bearer {registered.json()['access_token']}"}
            data = client.get("/api/v2/data", headers=token)
            free = client.get("/api/v2/premium", headers=token)
            client.post(
                "/admin/upgrade_tier",
                json={"user_id": registered.json()["user_id"], "tier": "premium"},
                headers={"authorization": f"Bearer {admin.group(1)}"},
            )
            premium = client.get("/api/v2/premium", headers=token)
            first = client.get("/api/cached/page")
            second = client.get("/api/cached/page")
            summary = client.get("/")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert orders == [200] * 5 + [429]
    assert users.status_code == 200  # another path: another bucket
    assert {"hostname", "message"} <= set(users.json())
    assert users.json()["message"].startswith("Hello from backend-")
    assert (anonymous.status_code, data.status_code) == (401, 200)
    assert free.status_code == 403
    assert free.json()["tiers"] == ["enterprise", "premium"]
    assert premium.status_code == 200
    assert "stored" in first.headers["cache-status"]
    assert "hit" in second.headers["cache-status"]
    assert second.json() == first.json()
    assert summary.json()["links"]["docs"] == "/docs"
