"""The container image, built by ``make image``'s script and run with podman (runc): it starts
as a non-root user with its baked configuration, answers /health and its HEALTHCHECK, limits
exactly against a private Redis, and drains in-flight requests on SIGTERM within the grace.

Builds are incremental: the base image and the dependency layers are cached, so a run after a
change under src/ rebuilds only the project's layers (~10 s here). Needs podman, runc and
debootstrap (the provisioning installs them): missing, the test fails naming them.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.deploy_support import REPO
from tests.servers import RedisServer, free_port, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SECRET = "image-test-secret-" + "x" * 32
SHUTDOWN_GRACE = 5
LIMIT = 5


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.fail(
            f"{name} is missing: the image test needs podman, runc and debootstrap "
            "(Debian: apt-get install podman runc debootstrap; `make test` provisions them)"
        )
    return found


def _run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def _limits() -> list[str]:
    """podman's default limits exceed what an unprivileged sandbox may set: stay under ours."""
    flags = []
    wanted = (("nofile", resource.RLIMIT_NOFILE, 16384), ("nproc", resource.RLIMIT_NPROC, 4096))
    for name, kind, want in wanted:
        hard = resource.getrlimit(kind)[1]
        value = want if hard == resource.RLIM_INFINITY else min(want, hard // 2)
        flags += ["--ulimit", f"{name}={value}:{value}"]
    return flags


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """A fresh build of the image from this checkout, under a tag of this run's own."""
    podman = _tool("podman")
    _tool("runc")
    _tool("debootstrap")
    tag = f"localhost/gatekeeper-test:{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    done = subprocess.run(
        [str(REPO / "deploy" / "image.sh")],
        env={**os.environ, "IMAGE": tag, "ENGINE": podman},
        capture_output=True, text=True, timeout=1100,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"deploy/image.sh failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    print(f"image built in {time.monotonic() - started:.1f} s")  # shown with -rP
    try:
        yield tag
    finally:
        # Untag only: removing the image would also drop the cached layers a next build reuses.
        _run(podman, "untag", tag, check=False)


def _podman(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return _run(_tool("podman"), *args, **kwargs)


def test_image_runs_as_a_non_root_user_with_a_baked_config_that_passes_check(
    image: str,
) -> None:
    """The image's user is uid 10001, it has a HEALTHCHECK and stops on SIGTERM; inside it the
    baked configuration passes ``serve --check`` with no environment, and the compose file's
    backend command (``python -m gatekeeper.gateway.mock_backend``) resolves."""
    (info,) = json.loads(_podman("image", "inspect", image).stdout)
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["gatekeeper", "serve"]
    assert config["StopSignal"] == "SIGTERM"
    assert "/health" in " ".join(info["Healthcheck"]["Test"])  # podman puts it here
    script = (
        "id -u && python -c 'import gatekeeper.gateway.mock_backend' && gatekeeper serve --check"
    )
    done = _podman(
        "--runtime", "runc", "run", "--rm", "--network", "host", *_limits(), image,
        "sh", "-c", script,
    )  # fmt: skip
    assert done.stdout.split() == ["10001", "/etc/gatekeeper/gatekeeper.yaml:", "OK"], done


@pytest.fixture
def backend() -> Iterator[int]:
    """A mock backend on the host's loopback (the container shares the host's network)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper.gateway.mock_backend", str(port), "backend-1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, 20)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_image_limits_exactly_and_drains_on_sigterm(
    image: str, backend: int, private_redis: RedisServer, tmp_path: Path
) -> None:
    """Run like a restricted pod (read-only root, tmpfs /tmp, no capabilities) against a
    private Redis: /health and the HEALTHCHECK answer; a route limited to 5 admits exactly 5
    then answers 429; ``podman stop`` (SIGTERM) lets an in-flight request finish with 200 and
    the container exits 0 within the grace period, not killed."""
    port = free_port()
    config = {
        "listener": {"host": "127.0.0.1", "port": port, "shutdown_grace": SHUTDOWN_GRACE},
        "policies": {"five": {"rate": f"{LIMIT}/minute", "algorithm": "fixed_window"}},
        "upstreams": {"api": {"endpoints": [f"http://127.0.0.1:{backend}"]}},
        "routes": [
            {"name": "limited", "path_prefix": "/api", "upstream": "api", "limits": ["five"]},
            {"name": "slow", "path_prefix": "/slow", "upstream": "slow"},
        ],
    }
    arrived = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            arrived.set()
            time.sleep(2.5)
            self.send_response(200)
            self.send_header("content-length", "4")
            self.end_headers()
            self.wfile.write(b"slow")

        def log_message(self, *args: Any) -> None:
            pass

    slow_backend = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=slow_backend.serve_forever, daemon=True).start()
    slow_url = f"http://127.0.0.1:{slow_backend.server_address[1]}"
    config["upstreams"]["slow"] = {"endpoints": [slow_url]}  # type: ignore[index]
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(json.dumps(config))
    path.chmod(0o644)
    name = f"gatekeeper-test-{uuid.uuid4().hex[:8]}"
    env = {
        "GATEKEEPER_REDIS_URL": private_redis.url,
        "GATEKEEPER_JWT_SECRET": SECRET,
        "GATEKEEPER_ADMIN_TOKEN": "image-test-admin",
        "GATEKEEPER_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/health",
    }
    _podman(
        "--runtime", "runc", "run", "--detach", "--name", name, "--network", "host",
        *_limits(), "--read-only", "--tmpfs", "/tmp",
        "--tmpfs", "/var/lib/gatekeeper:rw,U",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--health-interval", "disable",
        "-v", f"{path}:/etc/gatekeeper/gatekeeper.yaml:ro",
        *[f"--env={k}={v}" for k, v in env.items()], image,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, name)
        assert _podman("healthcheck", "run", name, check=False).returncode == 0

        with httpx.Client(base_url=url, timeout=10) as client:
            statuses = [client.get("/api/info").status_code for _ in range(LIMIT + 2)]
            assert statuses == [200] * LIMIT + [429, 429]

            slow: dict[str, Any] = {}
            request = threading.Thread(target=lambda: slow.update(answer=client.get("/slow/x")))
            request.start()
            # (Whichever worker took it: the image runs one worker per core by default.)
            assert arrived.wait(10), "the slow request never arrived"

            stopping = time.monotonic()
            stop = _podman("stop", "--time", str(SHUTDOWN_GRACE * 4), name, timeout=60)
            took = time.monotonic() - stopping
            request.join(15)
        state = json.loads(_podman("inspect", name).stdout)[0]["State"]
        logs = _podman("logs", name).stdout + _podman("logs", name).stderr
        assert stop.returncode == 0
        assert slow["answer"].status_code == 200, logs
        assert state["ExitCode"] == 0, logs  # exited by itself: a SIGKILL would be 137
        assert took < SHUTDOWN_GRACE + 5, (took, logs)
        print(f"stopped {took:.2f} s after SIGTERM with a 2.5 s request in flight")
    finally:
        _podman("rm", "--force", name, check=False)
        slow_backend.shutdown()
        slow_backend.server_close()


def _wait_healthy(url: str, name: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).json() == {"status": "healthy"}:
                return
        except httpx.HTTPError:
            pass
        running = _podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
        if running != "true":
            break
        time.sleep(0.1)
    logs = _podman("logs", name, check=False)
    pytest.fail(f"the container never answered /health:\n{logs.stdout}\n{logs.stderr}")
