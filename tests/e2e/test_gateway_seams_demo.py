"""``gatekeeper demo`` as a process: the tenant ``demo`` exists, ``/shop`` is behind its waiting
room, and the waiting-room worker runs without database errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.servers import free_port, wait_for_port


def test_demo_shop_is_behind_the_demo_waiting_room(tmp_path: Path) -> None:
    """/shop redirects to the demo tenant's waiting page; enqueueing for ``demo`` works; the
    log has no ``no such table`` (the worker reads a migrated database)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:  # the child keeps its own descriptor
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
            shop = client.get("/shop/cart", follow_redirects=False)
            enqueued = client.post(
                "/queue/enqueue", headers={"business_id": "demo", "user_id": "visitor-1"}
            )
            unknown = client.post(
                "/queue/enqueue", headers={"business_id": "no-such-shop", "user_id": "v"}
            )
            # a request that waits a worker round (the worker ticks every second or faster)
            status = client.get("/queue/status", params={"business_id": "demo"})
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert shop.status_code == 302, output[-2000:]
    assert shop.headers["location"].startswith("/queue/wait?business_id=demo&")
    assert enqueued.status_code == 200, enqueued.text
    assert "jwt" in enqueued.json()
    assert unknown.status_code != 200
    assert status.status_code < 500
    assert "no such table" not in output
    assert process.returncode == 0
