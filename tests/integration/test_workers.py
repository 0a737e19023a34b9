"""``gatekeeper serve --workers N``: processes sharing one port, exact limits across them, a
crashed worker replaced, SIGHUP and SIGTERM reaching every worker, metrics summed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import free_port, wait_for_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]

_ID_PREFIX = re.compile(r'"request_id":"([0-9a-f]{16})')


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


class Served:
    """A ``gatekeeper serve`` process (a supervisor when workers > 1) and its log."""

    def __init__(self, workdir: Path, config: dict[str, Any], env: dict[str, str], *args: str):
        self.port = config["listener"]["port"]
        self.config_path = workdir / "gatekeeper.yaml"
        self.config_path.write_text(json.dumps(config))
        self.log_path = workdir / "serve.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gatekeeper", "serve", "--config", str(self.config_path),
                 *args],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
            )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, workers: int) -> None:
        wait_for_port(self.port, 60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(_children(self.process.pid)) == workers and self.all_answer(workers):
                return
            time.sleep(0.1)
        pytest.fail(f"the workers did not come up:\n{self.log()[-3000:]}")

    def all_answer(self, workers: int) -> bool:
        """Whether every worker answers (new connections land on each, sooner or later)."""
        seen: set[str] = set()
        for _ in range(50 * workers):
            try:
                response = httpx.get(f"{self.url}/health", timeout=2)
            except httpx.HTTPError:
                return False
            seen.add(response.headers["x-request-id"][:16])
            if len(seen) == workers:
                return True
        return False

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@pytest.fixture
def env(tmp_path: Path, redis_url: str, redis_prefix: str) -> dict[str, str]:
    database = tmp_path / "gk.db"
    environment = dict(
        os.environ,
        GATEKEEPER_REDIS_URL=redis_url,
        GATEKEEPER_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        GATEKEEPER_AUTO_MIGRATE="true",
        GATEKEEPER_JWT_SECRET="j" * 40,
        GATEKEEPER_ADMIN_TOKEN="a" * 32,
        GATEKEEPER_LIVE_STATS_PREFIX=f"{redis_prefix}:live",
    )
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return environment


@pytest.fixture
def upstream() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper.gateway.mock_backend", str(port), "b1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


def _config(upstream: str, policy: str, prefix: str = "/api") -> dict[str, Any]:
    return {
        "listener": {"host": "127.0.0.1", "port": free_port(), "shutdown_grace": 5},
        "policies": {policy: {"rate": "20/60s", "algorithm": "fixed_window"}},
        # A loaded machine can be slower than the 20 ms default: never fail open here.
        "limiter": {"deadline": 2.0},
        "upstreams": {"up": {"endpoints": [{"url": upstream}]}},
        "routes": [
            {"name": "api", "path_prefix": prefix, "upstream": "up",
             "limits": [{"policy": policy, "key": "ip"}]},
        ],
    }  # fmt: skip


def _fresh_get(url: str) -> httpx.Response:
    # A connection of its own per request: the kernel hands connections to either worker.
    return httpx.get(url, headers={"connection": "close"}, timeout=10)


def test_two_workers_share_the_port_and_one_limit_exactly(
    tmp_path: Path, env: dict[str, str], upstream: str, redis_prefix: str
) -> None:
    """Two workers answer on one port; one key's limit of 20 is exact across them, and
    /metrics on either worker counts every request of both."""
    served = Served(tmp_path, _config(upstream, redis_prefix), env, "--workers", "2")
    try:
        served.wait_ready(2)
        responses = [_fresh_get(f"{served.url}/api/x") for _ in range(30)]
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 20
        assert statuses.count(429) == 10
        workers = {r.headers["x-request-id"][:16] for r in responses}
        assert len(workers) == 2, "every request went to one worker"
        metrics = httpx.get(f"{served.url}/metrics", timeout=5).text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('gatekeeper_http_requests_total{route="api"')
        )
        assert counted == 30
    finally:
        assert served.stop() == 0


def test_a_crashed_worker_is_replaced(
    tmp_path: Path, env: dict[str, str], upstream: str, redis_prefix: str
) -> None:
    """kill -9 of a worker: the supervisor starts another, and both serve again."""
    served = Served(tmp_path, _config(upstream, redis_prefix), env, "--workers", "2")
    try:
        served.wait_ready(2)
        victim = _children(served.process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            children = _children(served.process.pid)
            if len(children) == 2 and victim not in children:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"no worker replaced {victim}:\n{served.log()[-2000:]}")
        served.wait_ready(2)
        assert _fresh_get(f"{served.url}/api/x").status_code == 200
        assert f"worker {victim} exited" in served.log()
    finally:
        served.stop()


def test_sighup_reloads_every_worker(
    tmp_path: Path, env: dict[str, str], upstream: str, redis_prefix: str
) -> None:
    """A route moved in the file and SIGHUP to the supervisor: every worker serves the new
    route, none the old one."""
    served = Served(tmp_path, _config(upstream, redis_prefix), env, "--workers", "2")
    try:
        served.wait_ready(2)
        assert _fresh_get(f"{served.url}/api/x").status_code == 200
        moved = _config(upstream, redis_prefix, prefix="/v2")
        moved["listener"] = json.loads(served.config_path.read_text())["listener"]
        served.config_path.write_text(json.dumps(moved))
        served.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while served.log().count("configuration reloaded") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert served.log().count("configuration reloaded") == 2
        answers = [_fresh_get(f"{served.url}/v2/x") for _ in range(12)]
        assert {r.status_code for r in answers} == {200}
        assert len({r.headers["x-request-id"][:16] for r in answers}) == 2
        assert {_fresh_get(f"{served.url}/api/x").status_code for _ in range(6)} == {404}
    finally:
        served.stop()


def test_sigterm_drains_every_worker_and_the_supervisor_exits_cleanly(
    tmp_path: Path, env: dict[str, str], redis_prefix: str
) -> None:
    """A slow request in flight when SIGTERM arrives is answered; then every process exits,
    the supervisor with 0."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(1.5)
            self.send_response(200)
            self.send_header("content-length", "4")
            self.end_headers()
            self.wfile.write(b"slow")

        def log_message(self, *args: Any) -> None:
            pass

    backend = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{backend.server_address[1]}"
    served = Served(tmp_path, _config(url, redis_prefix), env, "--workers", "2")
    try:
        served.wait_ready(2)
        workers = _children(served.process.pid)
        result: list[int] = []
        thread = threading.Thread(
            target=lambda: result.append(_fresh_get(f"{served.url}/api/slow").status_code)
        )
        thread.start()
        time.sleep(0.5)  # the request is with the upstream now
        served.process.send_signal(signal.SIGTERM)
        thread.join(20)
        assert result == [200]
        assert served.process.wait(30) == 0
        for pid in workers:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )
    finally:
        served.stop()
        backend.shutdown()
        backend.server_close()


def test_without_redis_one_process_serves_and_more_workers_are_refused(
    tmp_path: Path, env: dict[str, str], upstream: str, redis_prefix: str
) -> None:
    """Without GATEKEEPER_REDIS_URL, --workers 2 is refused naming why (also by --check);
    the default runs a single process."""
    plain = {k: v for k, v in env.items() if k != "GATEKEEPER_REDIS_URL"}
    config = _config(upstream, redis_prefix)
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(config))
    for extra in ([], ["--check"]):
        refused = subprocess.run(
            [sys.executable, "-m", "gatekeeper", "serve", "--config", str(path),
             "--workers", "2", *extra],
            env=plain, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 2
        assert "GATEKEEPER_REDIS_URL" in refused.stderr
    served = Served(tmp_path, config, plain)
    try:
        wait_for_port(served.port, 60)
        assert _children(served.process.pid) == []  # no supervisor: the process serves
        assert _fresh_get(f"{served.url}/api/x").status_code == 200
    finally:
        assert served.stop() == 0


def test_a_second_serve_on_the_same_port_is_refused(
    tmp_path: Path, env: dict[str, str], upstream: str, redis_prefix: str
) -> None:
    """The port is bound once by the supervisor: another serve on it fails, naming it."""
    config = _config(upstream, redis_prefix)
    served = Served(tmp_path, config, env, "--workers", "2")
    try:
        served.wait_ready(2)
        (tmp_path / "second").mkdir()
        path = tmp_path / "second" / "c.yaml"
        path.write_text(json.dumps(config))
        second = subprocess.run(
            [sys.executable, "-m", "gatekeeper", "serve", "--config", str(path), "--workers", "2"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        assert f"cannot listen on 127.0.0.1:{served.port}" in second.stderr
    finally:
        served.stop()


def test_workers_do_not_outlive_a_killed_supervisor(
    tmp_path: Path, env: dict[str, str], upstream: str, redis_prefix: str
) -> None:
    """kill -9 of the supervisor: its workers stop too, and the port is free again."""
    served = Served(tmp_path, _config(upstream, redis_prefix), env, "--workers", "2")
    served.wait_ready(2)
    workers = _children(served.process.pid)
    served.process.kill()
    served.process.wait()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        for pid in workers:  # (reap what init has not: they were our grandchildren)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert not alive or all("zombie" in Path(f"/proc/{p}/status").read_text() for p in alive)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", served.port))
